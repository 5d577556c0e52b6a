"""Influence engine throughput on a ~8M-parameter Llama: scoring vs a training step, fitting cost.

Run by hand:  .venv/bin/python benchmarks/bench_influence.py [--batch-size 16 --seq-len 256]

Measures, on one batch of full-length random documents (fp32, CPU unless CUDA is present):
a plain training step (forward + backward with weight gradients, no optimizer), the hook scorer
(auto / ghost / explicit per-layer paths) and the projected scorer, as docs/s, tokens/s and the
ratio to the training step (target: ≤ 1.5×, docs/method.md "Scoring cost"); then EK-FAC factor fitting time and
peak memory (process RSS growth on CPU, allocator peak on CUDA) against
``estimate_factor_memory``. Prints a Markdown table. Timings are medians of ``--repeats`` runs.

When kronfluence is installed (it is not a dependency), the same documents are also scored by
kronfluence 1.0's EK-FAC, fitted on the same fitting documents (true Fisher, its default dtypes,
damping 0.1 × mean(Λ*) like ours). Its timed call is ``Analyzer.compute_pairwise_scores`` of the
batch against the 8 reference documents, factor fitting excluded; that call also loads the
factors from disk, computes and preconditions the 8 query gradients, and writes the scores. Our
scorer instead dots every document with one averaged direction ĝ_R built beforehand, so the
reference-direction row times that step separately, and kronfluence is timed a second time
with ``aggregate_query_gradients`` (one summed query direction: the same cost shape as ours).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import platform
import resource
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable

import torch
import transformers
from scipy.stats import spearmanr
from transformers import LlamaConfig, LlamaForCausalLM

from quadselect.influence import (
    InfluenceScorer,
    ProjectedScorer,
    estimate_factor_memory,
    find_tracked_layers,
    fit_factors,
    reference_direction,
)
from quadselect.influence.loss import document_losses, next_token_labels, sample_labels

transformers.logging.set_verbosity_error()


def build_model(seq_len: int, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=8192,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=seq_len,
    )
    return LlamaForCausalLM(config).to(device).eval()


def random_batch(n: int, seq_len: int, seed: int, device: torch.device) -> dict:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 8192, (n, seq_len), generator=generator)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_memory(device: torch.device) -> int:
    """High-water mark so far: allocator peak on CUDA, process RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_fitting(model, layers, batches, device, train_step, per_head) -> tuple[float, int, object]:
    """Fitting time, and its memory high-water mark above that of a plain training step."""
    train_step()
    model.zero_grad(set_to_none=True)
    before = peak_memory(device)
    start = time.perf_counter()
    factors = fit_factors(model, batches, layers, seed=0, per_head=per_head)
    seconds = time.perf_counter() - start
    return seconds, peak_memory(device) - before, factors


class _Documents(torch.utils.data.Dataset):
    """A batch as a dataset of documents, the form kronfluence's data loaders take."""

    def __init__(self, batches: list[dict]):
        self.batch = {key: torch.cat([b[key] for b in batches]) for key in batches[0]}

    def __len__(self) -> int:
        return len(self.batch["input_ids"])

    def __getitem__(self, i: int) -> dict:
        return {key: value[i] for key, value in self.batch.items()}


def run_kronfluence(model, layers, fit_data, reference, batch, device, repeats) -> dict:
    """kronfluence's fitting time, its two scoring timings, and its aggregated-query scores."""
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import ScoreArguments
    from kronfluence.task import Task

    class MeanLossTask(Task):
        """Our loss (each document's mean next-token loss, summed) on our tracked layers."""

        def compute_train_loss(self, batch, model, sample=False):
            logits = model(**batch).logits
            labels = next_token_labels(**batch)
            if sample:
                labels = sample_labels(logits, labels, None)
            return document_losses(logits, labels).sum()

        def compute_measurement(self, batch, model):
            return self.compute_train_loss(batch, model)

        def get_influence_tracked_modules(self):
            return list(layers)

        def get_attention_mask(self, batch):
            # Tokens with a next-token target, the token set of our A.
            mask = batch["attention_mask"]
            return torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)

    warnings.filterwarnings("ignore", category=FutureWarning, module="kronfluence")
    task = MeanLossTask()
    wrapped = prepare_model(copy.deepcopy(model), task)
    n_docs = len(batch["input_ids"])
    with tempfile.TemporaryDirectory() as output_dir:
        analyzer = Analyzer("bench", wrapped, task, cpu=device.type == "cpu", disable_tqdm=True, output_dir=output_dir)
        start = time.perf_counter()
        analyzer.fit_all_factors("ekfac", _Documents(fit_data), per_device_batch_size=n_docs, overwrite_output_dir=True)
        fit_seconds = time.perf_counter() - start

        def pairwise(aggregate: bool) -> None:
            analyzer.compute_pairwise_scores(
                "pairs",
                "ekfac",
                _Documents([reference]),
                _Documents([batch]),
                per_device_query_batch_size=len(reference["input_ids"]),
                per_device_train_batch_size=n_docs,
                score_args=ScoreArguments(damping_factor=None, aggregate_query_gradients=aggregate),
                overwrite_output_dir=True,
            )

        pairs_s = median_seconds(lambda: pairwise(False), repeats, device)
        aggregated_s = median_seconds(lambda: pairwise(True), repeats, device)
        scores = analyzer.load_pairwise_scores("pairs")["all_modules"][0].cpu()
    return {"fit": fit_seconds, "pairs": pairs_s, "aggregated": aggregated_s, "scores": scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fit-batches", type=int, default=8)
    parser.add_argument("--projection-k", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(args.seq_len, device)
    layers = find_tracked_layers(model)
    n_params = sum(p.numel() for p in model.parameters())
    tracked = sum(s.n_params for s in layers.values())
    batch = random_batch(args.batch_size, args.seq_len, 1, device)
    tokens = args.batch_size * args.seq_len

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        model(**batch, labels=batch["input_ids"]).loss.backward()

    # Fitting first, so the memory high-water mark reflects it rather than the scoring runs.
    fit_data = [random_batch(args.batch_size, args.seq_len, 100 + i, device) for i in range(2)]
    fit_data = fit_data * (args.fit_batches // 2)
    fit_seconds, fit_peak, factors = measure_fitting(model, layers, fit_data, device, train_step, False)
    estimate = estimate_factor_memory(layers, batch_size=args.batch_size)
    head_seconds, _, _ = measure_fitting(model, layers, fit_data, device, train_step, True)
    head_estimate = estimate_factor_memory(layers, batch_size=args.batch_size, per_head=True)
    # Reference: copies of the first 4 scored documents plus 4 others, so scores have a signal.
    reference = random_batch(8, args.seq_len, 2, device)
    reference["input_ids"][:4] = batch["input_ids"][:4]
    g_hat = reference_direction(model, [reference], layers, factors)

    scorers = {
        f"hook scorer ({method})": InfluenceScorer(model, layers, g_hat, method=method).score
        for method in ("auto", "ghost", "explicit")
    }
    projected = ProjectedScorer(model, layers, g_hat, k=args.projection_k, seed=0)
    scorers[f"projected scorer (k={args.projection_k}, dim {projected.dim})"] = projected.score

    train_s = median_seconds(train_step, args.repeats, device)
    model.zero_grad(set_to_none=True)
    # (what, seconds, documents it processed): all rows score the batch but the reference direction.
    rows = [("training step (fwd+bwd)", train_s, args.batch_size)]
    rows += [
        (name, median_seconds(lambda f=fn: f(**batch), args.repeats, device), args.batch_size)
        for name, fn in scorers.items()
    ]
    n_ref = len(reference["input_ids"])
    ref_s = median_seconds(lambda: reference_direction(model, [reference], layers, factors), args.repeats, device)
    rows.append((f"reference direction ĝ_R (once; the {n_ref} reference docs, preconditioned)", ref_s, n_ref))
    hook = scorers["hook scorer (auto)"](**batch).scores
    rho = spearmanr(hook, projected.score(**batch).scores)[0]
    kron = None
    if importlib.util.find_spec("kronfluence") is not None:
        kron = run_kronfluence(model, layers, fit_data, reference, batch, device, args.repeats)
        rows.append((f"kronfluence pairwise (× {n_ref} queries, with query side)", kron["pairs"], args.batch_size))
        rows.append(
            (f"kronfluence, aggregated query ({n_ref} summed, with query side)", kron["aggregated"], args.batch_size)
        )

    print(f"\n## Influence benchmark ({platform.processor() or platform.machine()}, {device})\n")
    print(
        f"Llama {n_params / 1e6:.1f}M params ({tracked / 1e6:.2f}M tracked in {len(layers)} "
        f"layers), batch {args.batch_size} × {args.seq_len} tokens, fp32, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}.\n"
    )
    print("| what | s/call | docs/s | tokens/s | × training step |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, seconds, docs in rows:
        print(
            f"| {name} | {seconds:.3f} | {docs / seconds:.1f} | "
            f"{docs * args.seq_len / seconds:,.0f} | {seconds / train_s:.2f} |"
        )
    print(f"\nSpearman(hook, projected) over the batch (4 of 16 in the reference): {rho:.3f}")
    if kron is None:
        print("kronfluence not installed: its rows are skipped.")
    else:
        print(f"Spearman(hook, kronfluence aggregated query): {spearmanr(hook, kron['scores'])[0]:.3f}")
        print(f"kronfluence factor fitting (same {args.fit_batches * args.batch_size} documents): {kron['fit']:.1f} s")
    print()
    fit_tokens = args.fit_batches * tokens
    print("| factor fitting | full S | per-head S |")
    print("| --- | ---: | ---: |")
    print(f"| tokens (2 passes over each) | {fit_tokens:,} | {fit_tokens:,} |")
    print(f"| time | {fit_seconds:.1f} s | {head_seconds:.1f} s |")
    print(f"| peak memory above a training step | {fit_peak / 2**20:.0f} MiB | – |")
    print(f"| estimate: stored factors | {estimate.total / 2**20:.1f} MiB | {head_estimate.total / 2**20:.1f} MiB |")
    print(
        f"| estimate: fitting peak | {estimate.fit_peak / 2**20:.1f} MiB | {head_estimate.fit_peak / 2**20:.1f} MiB |"
    )


if __name__ == "__main__":
    main()
