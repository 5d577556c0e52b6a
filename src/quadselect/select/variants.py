"""Method variants by name, for comparisons (`compare.methods`): a registered method with modifiers, `name:mod:mod`,
each modifier switching one `select` option on. `topk_influence:gumbel` is top-k influence sampled by Gumbel-top-k,
`quad:classifier` Quad on the quality classifier's score, `classifier:temperature:dedup` the classifier sampled with a
temperature after semantic dedup (docs/selection-methods.md).
"""

from __future__ import annotations

from typing import Any

from quadselect.select.methods import get_method

SAMPLED = ("topk_influence", "classifier")
"""The methods that rank the pool by a score, and so can sample by it instead."""

MODIFIERS: dict[str, tuple[dict[str, Any], tuple[str, ...] | None]] = {
    "gumbel": ({"sampling": "gumbel"}, SAMPLED),
    "temperature": ({"sampling": "temperature"}, SAMPLED),
    "classifier": ({"scorer": "classifier"}, ("quad",)),
    "dedup": ({"dedup": "semantic"}, None),
}
"""Modifier → (the `select` options it sets, the methods it applies to; None: every method)."""


def variant_select_options(spec: str) -> tuple[str, dict[str, Any]]:
    """The method of `name:mod:…` and the `select` options its modifiers set; an unknown method or modifier, or one
    that does not apply to the method, is a ValueError saying what is allowed."""
    name, *modifiers = spec.split(":")
    method = get_method(name).name
    options: dict[str, Any] = {}
    for modifier in modifiers:
        if modifier not in MODIFIERS:
            raise ValueError(f"{spec!r}: unknown modifier {modifier!r}; the modifiers are {', '.join(MODIFIERS)}")
        settings, applies_to = MODIFIERS[modifier]
        if applies_to is not None and method not in applies_to:
            raise ValueError(f"{spec!r}: the modifier {modifier!r} applies to {', '.join(applies_to)} only")
        clash = set(settings) & set(options)
        if clash:
            raise ValueError(f"{spec!r}: two modifiers set select.{clash.pop()}")
        options.update(settings)
    return method, options
