"""The run directory's layout: the stage order, the completion marker and every artifact's path, in one place.

A run directory holds one folder per finished stage (`<run_dir>/<stage>/`), each with a completion marker written
last. Every module that reads or writes an artifact takes its path from here, so a file is renamed in one place and a
reader never needs another stage's module to find what that stage wrote. A stage writes into its work folder
(`<stage>.partial/`, see `quadselect.run`), so each stage's files are described relative to a folder: the same
class names the files of a finished stage and of one being written::

    layout = RunLayout(run_dir)
    layout.select.manifest             # <run_dir>/select/manifest.parquet
    SelectFiles(ctx.work_dir).manifest  # the same file while the select stage writes it

Paths only: nothing here reads or writes a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SELECTION_STAGES = ("prepare", "embed", "cluster", "proxy", "factors", "reference", "select", "export", "report")
"""The stages of `quadselect run`, in order (a topological order of their dependencies)."""

EVALUATION_STAGES = ("train", "evaluate")
"""Run after `export` only when asked for (`quadselect train`, `quadselect evaluate`)."""

UPSTREAM_OF_SELECT = SELECTION_STAGES[: SELECTION_STAGES.index("select")]
"""The stages a selection is computed from: what `selection.json`'s audit fingerprints and what method runs share."""

THROUGH_EXPORT = SELECTION_STAGES[: SELECTION_STAGES.index("export") + 1]
"""The stages that make and export a selection: what a report shows, and what the runs of one method share."""

MARKER = "_COMPLETE.json"
"""Written last into a finished stage folder: the stage's fingerprint, arguments, summary, timings and the machine it
ran on (`quadselect.device.describe_device`)."""
ARGS_FILE = "_ARGS.json"
"""Written first into a stage's work folder: the fingerprint its partial pieces were computed under."""
PARTIAL_SUFFIX = ".partial"
OLD_SUFFIX = ".old"
LOCK_FILE = ".lock"
ACQUIRE_LOCK_FILE = ".lock-acquire"
CONFIG_FILE = "config.resolved.yaml"
SHARD_INDEX = "index.json"
"""The index of a folder of shards (prepared documents, embeddings)."""
CACHE_DIR = "cache"
COMPARE_DIR = "compare"
MODEL_DIR = "model"
"""A causal LM with its tokenizer (`proxy.save_proxy`), in the proxy and train stages."""


@dataclass(frozen=True)
class StageFiles:
    """The folder of one stage; subclasses name its files."""

    root: Path

    @property
    def marker(self) -> Path:
        return self.root / MARKER


class PrepareFiles(StageFiles):
    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    def role(self, role: str) -> Path:
        """The shards of one input role: `pool`, `reference` or `eval`."""
        return self.root / role

    @property
    def pool(self) -> Path:
        return self.role("pool")

    @property
    def reference(self) -> Path:
        return self.role("reference")

    @property
    def eval(self) -> Path:
        return self.role("eval")


class EmbedFiles(StageFiles):
    @property
    def index(self) -> Path:
        return self.root / SHARD_INDEX


class ClusterFiles(StageFiles):
    @property
    def centroids(self) -> Path:
        return self.root / "centroids.npy"

    @property
    def assignments(self) -> Path:
        """One Parquet file per pool shard: `doc_id, cluster, distance, n_tokens, source`."""
        return self.root / "assignments"

    @property
    def neighbours(self) -> Path:
        return self.root / "neighbours.npz"

    @property
    def clusters(self) -> Path:
        """One row per cluster: size, tokens, dominant sources, distinctive terms, examples."""
        return self.root / "clusters.parquet"


class ModelFiles(StageFiles):
    """A stage that ends with a causal LM: the model, and the training checkpoints a killed run resumes from."""

    @property
    def model(self) -> Path:
        return self.root / MODEL_DIR

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def train_result(self) -> Path:
        """The training run's curves and arguments (`TrainResult.save`), the precision it trained in among them;
        absent when the model was loaded rather than trained."""
        return self.root / "train_result.json"


class ProxyFiles(ModelFiles):
    """The proxy influence is computed on."""


class FactorsFiles(StageFiles):
    @property
    def ekfac(self) -> Path:
        return self.root / "ekfac"


class ReferenceFiles(StageFiles):
    @property
    def g_hat(self) -> Path:
        return self.root / "g_hat.safetensors"


class SelectionFiles(StageFiles):
    """What select writes and export passes on: the manifest (one row per selected document) and `selection.json`."""

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.parquet"

    @property
    def selection(self) -> Path:
        return self.root / "selection.json"


class SelectFiles(SelectionFiles):
    def checkpoint(self, method: str) -> Path:
        """A method's whole state after its last finished step (`quad_state.json` for Quad's rounds): what a killed
        select stage resumes from."""
        return self.root / f"{method}_state.json"

    @property
    def trajectory(self) -> Path:
        return self.root / "trajectory.json"

    @property
    def pool_arrays(self) -> Path:
        """The eligible documents' pool rows, clusters and token counts as memory maps while the stage runs
        (`quadselect.select.pool_arrays`); removed when it ends."""
        return self.root / "pool_arrays"

    @property
    def cluster_members(self) -> Path:
        """The eligible documents grouped by cluster (`ClusterMembers.on_disk`), beside the arrays it indexes."""
        return self.pool_arrays / "cluster_members.npy"

    @property
    def scored(self) -> Path:
        """Every scored document (row, score), selected or not."""
        return self.root / "scored.parquet"

    @property
    def decontaminated(self) -> Path:
        return self.root / "decontaminated.json"

    @property
    def classifier(self) -> Path:
        """The quality classifier trained for this selection (fastText's own .bin), when one was trained."""
        return self.root / "classifier.bin"


class ExportFiles(SelectionFiles):
    @property
    def documents(self) -> Path:
        return self.root / "documents"


class ReportFiles(StageFiles):
    @property
    def html(self) -> Path:
        return self.root / "report.html"

    @property
    def clusters_csv(self) -> Path:
        return self.root / "clusters.csv"


class TrainFiles(ModelFiles):
    """The fresh model trained on the exported selection."""


class EvaluateFiles(StageFiles):
    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def lm_eval_tasks(self) -> Path:
        """The multiple-choice tasks as lm-eval tasks, a YAML and a JSONL each (`lm_eval --include_path` this)."""
        return self.root / "lm_eval_tasks"


@dataclass(frozen=True)
class CompareFiles:
    """`quadselect compare`'s folder in the base run: a run directory per (variant, seed), sharing the base run's
    stages by hard links, and the comparison's results."""

    root: Path

    def run_dir(self, label: str, seed: int) -> Path:
        """The run directory of one variant (`quad`, `quad:alpha0`, `mix:random+dsir@0.5`) with one seed."""
        return self.root / label.replace(":", "-").replace("@", "-") / f"seed-{seed}"

    @property
    def comparison(self) -> Path:
        """Every method's metrics over seeds, the paired comparisons and the checks: what the report shows."""
        return self.root / "comparison.json"

    @property
    def summary(self) -> Path:
        """The same in Markdown."""
        return self.root / "summary.md"

    def plot(self, name: str) -> Path:
        return self.root / f"{name}.png"


@dataclass(frozen=True)
class RunLayout:
    """Every path of one run directory."""

    run_dir: Path

    def stage_dir(self, stage: str) -> Path:
        return self.run_dir / stage

    def partial_dir(self, stage: str) -> Path:
        return self.run_dir / f"{stage}{PARTIAL_SUFFIX}"

    def old_dir(self, stage: str) -> Path:
        return self.run_dir / f"{stage}{OLD_SUFFIX}"

    def marker(self, stage: str) -> Path:
        return self.stage_dir(stage) / MARKER

    @property
    def config(self) -> Path:
        return self.run_dir / CONFIG_FILE

    @property
    def lock(self) -> Path:
        return self.run_dir / LOCK_FILE

    @property
    def acquire_lock(self) -> Path:
        return self.run_dir / ACQUIRE_LOCK_FILE

    def cache(self, name: str, key: str) -> Path:
        """A folder of values that depend only on finished stages and a few settings, named by a key of those, so
        any stage or method of this run (or of a run sharing it) reuses them: one `.npy` per pool shard of the
        whole-pool influence scores, proxy losses and contamination flags. Safe to delete (they are recomputed)."""
        return self.run_dir / CACHE_DIR / f"{name}-{key}"

    @property
    def compare(self) -> CompareFiles:
        return CompareFiles(self.run_dir / COMPARE_DIR)

    @property
    def prepare(self) -> PrepareFiles:
        return PrepareFiles(self.stage_dir("prepare"))

    @property
    def embed(self) -> EmbedFiles:
        return EmbedFiles(self.stage_dir("embed"))

    @property
    def cluster(self) -> ClusterFiles:
        return ClusterFiles(self.stage_dir("cluster"))

    @property
    def proxy(self) -> ProxyFiles:
        return ProxyFiles(self.stage_dir("proxy"))

    @property
    def factors(self) -> FactorsFiles:
        return FactorsFiles(self.stage_dir("factors"))

    @property
    def reference(self) -> ReferenceFiles:
        return ReferenceFiles(self.stage_dir("reference"))

    @property
    def select(self) -> SelectFiles:
        return SelectFiles(self.stage_dir("select"))

    @property
    def export(self) -> ExportFiles:
        return ExportFiles(self.stage_dir("export"))

    @property
    def report(self) -> ReportFiles:
        return ReportFiles(self.stage_dir("report"))

    @property
    def train(self) -> TrainFiles:
        return TrainFiles(self.stage_dir("train"))

    @property
    def evaluate(self) -> EvaluateFiles:
        return EvaluateFiles(self.stage_dir("evaluate"))
