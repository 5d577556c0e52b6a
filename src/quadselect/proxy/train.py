"""Short causal-LM training: pretraining the proxy, and training fresh models on a selection.

AdamW with decoupled weight decay on matrices only, a linear-warmup cosine schedule, gradient
clipping. The data order is a pure function of (seed, step), so a run resumed from a checkpoint sees
exactly the batches an uninterrupted run would, and — with the optimizer, scheduler and RNG state
restored bit for bit — produces the identical loss curve. Checkpoints contain no pickle: tensors go
to safetensors, everything else to JSON.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, load_model, save_file, save_model
from transformers import PreTrainedModel, get_cosine_schedule_with_warmup

from quadselect.atomic import TMP_PREFIX, atomic_directory, atomic_path, read_json, write_json
from quadselect.device import native_bf16
from quadselect.errors import RunDirError
from quadselect.proxy.tokens import IGNORE_INDEX, DocBatch, blocks_as_batches

log = logging.getLogger(__name__)

Progress = Callable[[int, int, float], None]
"""Called after every optimizer step with (steps done, total steps, that step's loss)."""

_CHECKPOINT_PREFIX = "step-"


@dataclass
class TrainResult:
    """What a training run did; `loss_curve[i]` is the training loss of step i + 1."""

    loss_curve: list[float]
    lr_curve: list[float]
    tokens_seen: int
    wall_s: float
    resumed_from_step: int | None = None
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_seen / self.wall_s if self.wall_s > 0 else float("nan")

    @property
    def final_loss(self) -> float:
        """Mean training loss over the last 5% of steps (at least one): the last step alone is one noisy batch."""
        tail = self.loss_curve[-max(1, len(self.loss_curve) // 20) :]
        return round(float(np.mean(tail)), 4)

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write `train_result.json` and `loss_curve.png` (the PNG needs matplotlib)."""
        directory = Path(directory)
        write_json(directory / "train_result.json", {**asdict(self), "tokens_per_s": self.tokens_per_s})
        plot_loss_curve(self.loss_curve, directory / "loss_curve.png")


def train_causal_lm(
    model: PreTrainedModel,
    blocks: np.ndarray | Iterable[np.ndarray],
    *,
    steps: int | None = None,
    total_tokens: int | None = None,
    batch_size: int = 16,
    lr: float = 3e-3,
    warmup_frac: float = 0.05,
    weight_decay: float = 0.1,
    grad_clip: float = 1.0,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 100,
    keep_checkpoints: int = 2,
    bf16_autocast: bool = False,
    progress: Progress | None = None,
) -> TrainResult:
    """Train `model` in place on packed `blocks` for `steps` steps (or enough for `total_tokens`).

    `blocks` is an int array [n, seq_len] — shuffled per epoch from `seed`, repeated as often as
    needed — or an iterable of 1-D blocks taken in order (a re-iterable is restarted when exhausted;
    a one-shot iterator ends training early with a warning). With `checkpoint_dir`, state is saved
    every `checkpoint_every` steps and at the end, and a later call with the same arguments resumes
    from the latest checkpoint.

    The default `lr` was the best of 3e-3 / 5e-3 / 1e-2 for the default proxy on the demo pool
    (held-out loss after 200 steps: 6.47 / 6.55 / 6.88).
    """
    source = _BlockSource.create(blocks, batch_size=batch_size, seed=seed)
    steps = _resolve_steps(steps, total_tokens, batch_size * source.seq_len)
    device = next(model.parameters()).device
    bf16_autocast = bf16_autocast and bf16_is_fast(device.type)  # recorded as used, so a resume checks the same
    args = {
        "steps": steps,
        "batch_size": batch_size,
        "seq_len": source.seq_len,
        "n_blocks": source.n_blocks,
        "lr": lr,
        "warmup_frac": warmup_frac,
        "weight_decay": weight_decay,
        "grad_clip": grad_clip,
        "seed": seed,
        "bf16_autocast": bf16_autocast,
    }
    optimizer = _adamw(model, lr=lr, weight_decay=weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, round(warmup_frac * steps), steps)
    result = TrainResult(loss_curve=[], lr_curve=[], tokens_seen=0, wall_s=0.0, args=args)

    ckpt_root = Path(checkpoint_dir) if checkpoint_dir is not None else None
    latest = _latest_checkpoint(ckpt_root) if ckpt_root is not None else None
    if latest is not None:
        result = _load_checkpoint(latest, model, optimizer, scheduler, args)
        log.info("resumed training from %s (step %d of %d)", latest, len(result.loss_curve), steps)

    was_training = model.training
    model.train()
    start_step = len(result.loss_curve)
    try:
        started = time.perf_counter() - result.wall_s
        for step, batch in zip(range(start_step, steps), source.batches(start_step), strict=False):
            ids = torch.as_tensor(batch, dtype=torch.long, device=device)
            with _autocast(device, bf16_autocast):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            result.lr_curve.append(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            result.loss_curve.append(loss.item())
            result.tokens_seen += ids.numel()
            result.wall_s = time.perf_counter() - started
            done = step + 1
            if progress is not None:
                progress(done, steps, result.loss_curve[-1])
            if ckpt_root is not None and (done % checkpoint_every == 0 or done == steps):
                _save_checkpoint(ckpt_root, done, model, optimizer, scheduler, result, keep_checkpoints)
    finally:
        model.train(was_training)

    if len(result.loss_curve) < steps:
        log.warning(
            "the block iterator ran out after %d of %d steps; pass an array or a re-iterable to repeat data",
            len(result.loss_curve),
            steps,
        )
    log.info(
        "trained %d steps, %d tokens in %.1f s (%.0f tokens/s), final loss %.4f",
        len(result.loss_curve),
        result.tokens_seen,
        result.wall_s,
        result.tokens_per_s,
        result.loss_curve[-1] if result.loss_curve else float("nan"),
    )
    return result


@torch.no_grad()
def row_nll(
    model: PreTrainedModel, batch: DocBatch, *, bf16_autocast: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: summed next-token negative log-likelihood (float32) and predicted tokens (int64)."""
    device = next(model.parameters()).device
    ids = batch.input_ids.to(device)
    mask = batch.attention_mask.to(device)
    with _autocast(device, bf16_autocast):
        logits = model(input_ids=ids, attention_mask=mask).logits
    targets = batch.labels().to(device)[:, 1:]
    # Classes on the last, contiguous dimension: twice as fast on CPU as cross_entropy over a transposed [B, V, T].
    flat = logits[:, :-1].float().reshape(-1, logits.shape[-1])
    nll = F.cross_entropy(flat, targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none").view(targets.shape)
    return nll.sum(dim=1).cpu(), (targets != IGNORE_INDEX).sum(dim=1).cpu()


def evaluate_loss(
    model: PreTrainedModel,
    data: np.ndarray | Iterable[DocBatch],
    *,
    batch_size: int = 16,
    bf16_autocast: bool = False,
) -> float:
    """Mean next-token loss per predicted token, over packed blocks [n, seq_len] or DocBatches."""
    batches = blocks_as_batches(data, batch_size) if isinstance(data, np.ndarray) else data
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        nll, n = row_nll(model, batch, bf16_autocast=bf16_autocast)
        total += float(nll.double().sum())
        count += int(n.sum())
    model.train(was_training)
    if count == 0:
        raise ValueError("no tokens to evaluate: every row has fewer than 2 tokens")
    return total / count


def plot_loss_curve(loss_curve: list[float], path: str | os.PathLike[str]) -> None:
    """Training loss per step with a moving average, as a PNG written atomically."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("plotting the loss curve needs matplotlib: pip install matplotlib") from exc

    fig = Figure(figsize=(6, 3.5), dpi=120)
    ax = fig.add_subplot()
    x = np.arange(1, len(loss_curve) + 1)
    ax.plot(x, loss_curve, lw=0.8, alpha=0.45, label="loss per step")
    window = max(1, len(loss_curve) // 20)
    if len(loss_curve) >= window > 1:
        smooth = np.convolve(loss_curve, np.ones(window) / window, mode="valid")
        ax.plot(x[window - 1 :], smooth, lw=1.6, label=f"moving average ({window} steps)")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def _resolve_steps(steps: int | None, total_tokens: int | None, tokens_per_step: int) -> int:
    if (steps is None) == (total_tokens is None):
        raise ValueError("give exactly one of steps or total_tokens")
    resolved = steps if steps is not None else math.ceil(total_tokens / tokens_per_step)
    if resolved < 1:
        raise ValueError(f"training needs at least one step, got {resolved}")
    return resolved


def _adamw(model: torch.nn.Module, *, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """Decay matrices (embeddings included) but not norms or biases, as in GPT pretraining."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    if not (enabled and bf16_is_fast(device.type)):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@functools.cache
def bf16_is_fast(device_type: str) -> bool:
    """Whether bf16 autocast speeds training up on this device, rather than slowing it down.

    On a CPU, oneDNN's bfloat16 kernels need AVX-512 (or AMX): there, autocast was ≈ 1.5× faster than float32;
    on an AVX2-only CPU (an AMD EPYC) bf16 is emulated and a training step of the demo proxy took 24 s instead of
    1.7 s in float32. Such devices train in float32, with a warning, as GPUs without bf16 do. The choice changes the
    trained weights: a selection made on one kind of CPU is repeated on another only with bf16 off (README,
    "Reproducible on any CPU")."""
    fast = native_bf16(device_type)
    if not fast:
        what = "CPU has no fast bfloat16 support (it needs AVX-512)" if device_type == "cpu" else "GPU has no bfloat16"
        log.warning("this %s; training in float32", what)
    return fast


@dataclass
class _BlockSource:
    """Batches as a function of the step, so a resumed run continues the same data order."""

    array: np.ndarray | None
    stream: Iterable[np.ndarray] | None
    seq_len: int
    batch_size: int
    seed: int

    @classmethod
    def create(cls, blocks: np.ndarray | Iterable[np.ndarray], *, batch_size: int, seed: int) -> _BlockSource:
        if isinstance(blocks, np.ndarray):
            if blocks.ndim != 2 or len(blocks) == 0:
                raise ValueError(f"blocks must be a non-empty [n, seq_len] array, got shape {blocks.shape}")
            return cls(blocks, None, blocks.shape[1], batch_size, seed)
        first = next(iter(blocks), None)
        if first is None:
            raise ValueError("the block iterable is empty")
        if iter(blocks) is blocks:  # a one-shot iterator: keep the block we peeked at
            blocks = itertools.chain([first], blocks)
        return cls(None, blocks, len(first), batch_size, seed)

    @property
    def n_blocks(self) -> int | None:
        return None if self.array is None else len(self.array)

    def batches(self, start_step: int) -> Iterator[np.ndarray]:
        if self.array is not None:
            return self._array_batches(start_step)
        return self._stream_batches(start_step)

    def _array_batches(self, start_step: int) -> Iterator[np.ndarray]:
        """Stream position p is block perm_e[p mod n], e = p // n, perm_e drawn from (seed, e)."""
        n = len(self.array)
        epoch, order = -1, np.empty(0, dtype=np.int64)
        for step in itertools.count(start_step):
            positions = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
            rows = np.empty(self.batch_size, dtype=np.int64)
            for e in np.unique(positions // n):
                if e != epoch:
                    epoch, order = e, np.random.default_rng([self.seed, int(e)]).permutation(n)
                in_epoch = positions // n == e
                rows[in_epoch] = order[positions[in_epoch] % n]
            yield self.array[rows]

    def _stream_batches(self, start_step: int) -> Iterator[np.ndarray]:
        repeatable = iter(self.stream) is not self.stream
        flat = itertools.chain.from_iterable(itertools.repeat(self.stream)) if repeatable else self.stream
        flat = itertools.islice(iter(flat), start_step * self.batch_size, None)
        while len(batch := list(itertools.islice(flat, self.batch_size))) == self.batch_size:
            yield np.stack(batch)


def _latest_checkpoint(root: Path) -> Path | None:
    if not root.is_dir():
        return None
    found = sorted(p for p in root.glob(f"{_CHECKPOINT_PREFIX}*") if p.is_dir())
    return found[-1] if found else None


def _save_checkpoint(
    root: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    result: TrainResult,
    keep: int,
) -> None:
    """Tensors (model, optimizer, RNG) in safetensors; groups, schedule, curves, args in JSON."""
    opt_state = optimizer.state_dict()
    tensors = {
        f"state.{idx}.{name}": value.detach().contiguous()
        for idx, per_param in opt_state["state"].items()
        for name, value in per_param.items()
    }
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    with atomic_directory(root / f"{_CHECKPOINT_PREFIX}{step:08d}") as tmp:
        save_model(model, str(tmp / "model.safetensors"))
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        write_json(
            tmp / "state.json",
            {
                "step": step,
                "param_groups": opt_state["param_groups"],
                "scheduler": scheduler.state_dict(),
                "result": asdict(result),
            },
        )
    for old in sorted(root.glob(f"{_CHECKPOINT_PREFIX}*"))[:-keep]:
        # Renamed first: a kill mid-deletion never leaves a partial checkpoint under a valid name.
        doomed = root / f"{TMP_PREFIX}{old.name}.deleting"
        os.replace(old, doomed)
        shutil.rmtree(doomed)


def _load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    args: dict[str, Any],
) -> TrainResult:
    state = read_json(path / "state.json")
    saved_args = state["result"]["args"]
    if saved_args != args:
        diff = {k: (saved_args.get(k), v) for k, v in args.items() if saved_args.get(k) != v}
        raise RunDirError(
            f"checkpoint {path} was written with other training arguments (saved, now): {diff}. "
            "Use the same arguments to resume, or delete the checkpoint directory to start over."
        )
    load_model(model, str(path / "model.safetensors"))
    tensors = load_file(str(path / "optimizer.safetensors"))
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        kind, *rest = key.split(".")
        if kind == "state":
            per_param.setdefault(int(rest[0]), {})[rest[1]] = value
    groups = [{**g, "betas": tuple(g["betas"])} for g in state["param_groups"]]
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(tensors["rng.cpu"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    result = TrainResult(**state["result"])
    result.resumed_from_step = state["step"]
    return result
