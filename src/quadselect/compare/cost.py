"""What a selection cost, beside what it bought: documents scored, proxy tokens through forward+backward passes
(influence) and forward passes only (perplexity), and the proxy FLOPs those take, so a user can translate a CPU
comparison into their GPU hours.

Counted from what the method needs (`select.method.Need`) and the run's files, the same way for every method: a
method that needs the whole pool's influence pays for every eligible document's tokens (capped at
`factors.max_length` × `factors.max_windows`, the scorer's windows), one that scores on demand (Quad) for the
documents in `select/scored.parquet`, perplexity filtering for one forward pass of every document (capped at
`factors.max_length`). A run that reused another's cached scores is charged what it would have paid alone.

FLOPs ≈ 2·P per token forward and 6·P forward+backward (P = the proxy's parameters; the usual dense-transformer
rule, which leaves out attention's context-length term and the influence projections, so it is a lower bound).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow.parquet as pq

from quadselect.atomic import read_json
from quadselect.config import RunConfig
from quadselect.layout import RunLayout
from quadselect.select.method import Need
from quadselect.select.methods import get_method


def selection_cost(config: RunConfig) -> dict[str, Any]:
    """`docs_scored`, `proxy_tokens_fwd_bwd`, `proxy_tokens_fwd`, `proxy_flops` and `select_wall_s` of a run whose
    select stage is done."""
    layout = RunLayout(config.run_dir)
    selection = read_json(layout.select.selection)
    n_tokens = pq.read_table(layout.cluster.assignments, columns=["n_tokens"])["n_tokens"].to_numpy()
    contaminated = (
        set(read_json(layout.select.decontaminated)["doc_ids"]) if config.select.decontaminate == "drop" else set()
    )
    eligible = np.ones(n_tokens.size, dtype=bool)
    if contaminated:
        ids = pq.read_table(layout.cluster.assignments, columns=["doc_id"])["doc_id"].to_pylist()
        eligible = np.array([doc_id not in contaminated for doc_id in ids])
    window_cap = config.factors.max_length * config.factors.max_windows
    needs = get_method(config.select.method).needs_for(config.select.model_dump())
    fwd_bwd = 0
    if Need.POOL_SCORES in needs:
        fwd_bwd += int(np.minimum(n_tokens[eligible], window_cap).sum())
    if Need.SCORER in needs and config.select.scorer != "classifier":  # the classifier scorer runs no proxy
        rows = pq.read_table(layout.select.scored, columns=["row"])["row"].to_numpy()
        if Need.POOL_SCORES not in needs:
            fwd_bwd += int(np.minimum(n_tokens[rows], window_cap).sum())
    fwd = int(np.minimum(n_tokens[eligible], config.factors.max_length).sum()) if Need.POOL_LOSSES in needs else 0
    params = proxy_parameters(config)
    return {
        "docs_scored": int(selection.get("docs_scored", 0)),
        # Documents the quality classifier scored: the whole pool for `classifier`, Quad's on-demand picks for
        # `select.scorer: classifier` (counted in docs_scored as well, since the bandit scored them).
        "docs_classified": int(
            selection.get(
                "docs_classified", selection.get("docs_scored", 0) if config.select.scorer == "classifier" else 0
            )
        ),
        "proxy_tokens_fwd_bwd": fwd_bwd,
        "proxy_tokens_fwd": fwd,
        "proxy_flops": float(6 * params * fwd_bwd + 2 * params * fwd),
        "select_wall_s": selection.get("select_wall_s"),
    }


def proxy_parameters(config: RunConfig) -> int:
    """The proxy's parameter count, as its stage counted it (a built Llama or any loaded checkpoint)."""
    return int(read_json(RunLayout(config.run_dir).proxy.marker)["summary"]["params"])
