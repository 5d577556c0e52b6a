"""quadselect test suite (a regular package, so `tests.support` never resolves to a stray site-packages `tests`)."""
