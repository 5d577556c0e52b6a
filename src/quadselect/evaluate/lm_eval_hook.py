"""The optional lm-evaluation-harness hook: run its tasks on the model trained on the selection.

lm-eval ships task definitions, not data: its built-in tasks download their datasets from the Hugging Face hub, so
they need internet. A local task YAML (`dataset_path: json` with `data_files`) runs offline; point
`evaluate.lm_eval.include_path` at its folder and set `include_defaults: false` to skip indexing the built-in tasks.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from quadselect.config import LmEvalConfig
from quadselect.errors import ConfigError

log = logging.getLogger(__name__)


def run_lm_eval(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: LmEvalConfig) -> dict[str, float]:
    """lm-eval's results as flat metrics `lm_eval/<task>/<metric>` (stderr and non-numeric entries left out)."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as exc:
        raise ConfigError(
            "evaluate.lm_eval.tasks is set but lm-evaluation-harness is not installed: pip install lm-eval "
            "(check with --dry-run that it does not replace your torch), or clear evaluate.lm_eval.tasks."
        ) from exc

    device = next(model.parameters()).device
    lm = HFLM(
        pretrained=model,
        tokenizer=tokenizer,
        batch_size=cfg.batch_size,
        device=str(device),
        max_length=int(model.config.max_position_embeddings),
    )
    include = str(cfg.include_path) if cfg.include_path is not None else None
    manager = TaskManager(include_path=include, include_defaults=cfg.include_defaults)
    unknown = [t for t in cfg.tasks if t not in manager.all_tasks]
    if unknown:
        raise ConfigError(
            f"evaluate.lm_eval.tasks: unknown task(s) {unknown}. Check the names (`lm-eval ls tasks`), or set "
            "evaluate.lm_eval.include_path to the folder holding their YAML files."
        )
    was_training = model.training
    model.eval()
    try:
        out = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(cfg.tasks),
            num_fewshot=cfg.num_fewshot,
            limit=cfg.limit,
            task_manager=manager,
            bootstrap_iters=0,
            log_samples=False,
        )
    finally:
        model.train(was_training)
    return flatten_results(out["results"] if out else {})


def flatten_results(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """{"task": {"acc,none": 0.5, "acc_stderr,none": "N/A", "alias": ...}} -> {"lm_eval/task/acc": 0.5}."""
    flat: dict[str, float] = {}
    for task, values in sorted(results.items()):
        for key, value in values.items():
            metric, _, flt = key.partition(",")
            if metric.endswith("_stderr") or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if metric in ("sample_len",) or (isinstance(value, float) and math.isnan(value)):
                continue
            name = metric if flt in ("", "none") else f"{metric}/{flt}"
            flat[f"lm_eval/{task}/{name}"] = float(value)
    log.info("lm-eval: %s", ", ".join(f"{k}={v:.4g}" for k, v in flat.items()))
    return flat
