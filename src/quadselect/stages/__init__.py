"""Stage functions: one module per stage, each wiring a library core (embed, cluster, influence, select, ...) to the
run directory, plus `workers` (the executor workers that hold a model).

The cores take arrays and models and know nothing of runs; a stage reads its inputs from upstream stage directories
through `quadselect.layout`, calls the core, and writes its artifacts into `ctx.work_dir` (see `quadselect.run`).
The stages are registered, in order, in `quadselect.pipeline`.
"""
