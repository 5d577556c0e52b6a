"""Stage functions: each wires a library core (embed, cluster, influence, select, ...) to the run directory.

The cores take arrays and models and know nothing of runs; a stage reads its inputs from upstream stage directories,
calls the core, and writes its artifacts into `ctx.work_dir` (see `quadselect.run`).
"""
