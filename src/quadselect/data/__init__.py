"""Reading inputs, writing normalized shards, counting tokens, and the built-in demo pool."""
