"""The configuration reference (docs/configuration.md), generated from the pydantic models in `config.py`.

The models are the single source of truth for keys, types, defaults and their descriptions; the page is regenerated
with `python scripts/gen_config_docs.py`, and a test fails when it is out of date.
"""

from __future__ import annotations

import inspect
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from quadselect.config import RunConfig, SourceSpec

HEADER = """# Configuration reference

<!-- Generated from src/quadselect/config.py by `python scripts/gen_config_docs.py`; do not edit by hand. -->

One YAML file describes a run completely. Unknown keys are errors (a typo never passes silently), relative paths are
resolved against the config file's folder, and `quadselect validate CONFIG` prints the config with every default
filled in. A minimal config names the run directory and the data; everything else has a default:

```yaml
# minimal.yaml
run_dir: runs/minimal
data:
  pool: [{path: pool.jsonl}]
  reference: [{path: reference.jsonl}]
```
"""


def config_reference() -> str:
    """The Markdown page: one section per config section (nested sections, like `evaluate.cloze`, right after their
    parent), one row per key."""
    parts = [HEADER]
    top = [(name, f) for name, f in RunConfig.model_fields.items() if not _model_of(f.annotation)]
    parts.append(_section("Top level", RunConfig.__doc__, top, prefix=""))
    for name, field in RunConfig.model_fields.items():
        model = _model_of(field.annotation)
        if model is None:
            continue
        parts += _sections(model, f"{name}.")
        if name == "data":
            parts.append(
                _section(
                    "Inputs",
                    "Each entry of a list of inputs (`data.pool`, `data.reference`, ...). " + str(SourceSpec.__doc__),
                    list(SourceSpec.model_fields.items()),
                    prefix="",
                )
            )
    return "\n".join(parts)


def _sections(model: type[BaseModel], prefix: str) -> list[str]:
    """The section of `model` (keys under `prefix`), then one for each model-valued key in it, recursively."""
    parts = [_section(f"`{prefix.rstrip('.')}`", model.__doc__, list(model.model_fields.items()), prefix=prefix)]
    for name, field in model.model_fields.items():
        nested = _model_of(field.annotation)
        if nested is not None:
            parts += _sections(nested, f"{prefix}{name}.")
    return parts


def write_config_reference(path: str | Path) -> None:
    Path(path).write_text(config_reference(), encoding="utf-8")


def _section(title: str, doc: str | None, fields: list[tuple[str, FieldInfo]], prefix: str) -> str:
    lines = [f"## {title}", ""]
    if doc:
        lines += [" ".join(inspect.cleandoc(doc).split()), ""]
    lines += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, field in fields:
        if _model_of(field.annotation):
            continue
        description = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{prefix}{name}` | {_type(field.annotation)} | {_default(field)} | {description} |")
    return "\n".join(lines) + "\n"


def _model_of(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:  # a validated type (`ConfigPath`): shown as what it holds
        return _type(args[0])
    if origin is Literal:
        return " or ".join(f"`{a!r}`" if isinstance(a, str) else f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type(a) for a in args)
    if origin is list:
        return "list of [inputs](#inputs)" if args[0] is SourceSpec else f"list of {_type(args[0])}"
    if annotation is type(None):
        return "null"
    if annotation is Path:
        return "path"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "[input](#inputs)" if annotation is SourceSpec else annotation.__name__
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default is PydanticUndefined:
        if field.default_factory is not None:
            return f"`{field.default_factory()!r}`"
        return "required"
    value = field.default
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 10_000:
        return f"`{value:_}`"
    return f"`{value}`"
