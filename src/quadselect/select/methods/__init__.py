"""The registry of selection methods (docs/selection-methods.md): every name `select.method` accepts, mapped to its
`Method`. One module per method; adding one is a module in this package and a `register` line below.

The config checks `select.method` against this registry, and the select stage looks the method up here, builds the
inputs it declares and calls it.
"""

from __future__ import annotations

from quadselect.select.method import Method
from quadselect.select.methods import (
    classifier,
    cluster_balanced,
    dsir,
    mix,
    perplexity,
    quad,
    random,
    topk_influence,
)

METHODS: dict[str, Method] = {}
"""Registered methods by name, in registration order (the order the configuration reference lists them in)."""


def register(method: Method) -> Method:
    """Make `method` selectable as `select.method: <name>`."""
    if method.name in METHODS:
        raise ValueError(f"a selection method named {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method called `name`; an unknown name is an error that lists the registered ones."""
    if name not in METHODS:
        raise ValueError(f"unknown selection method {name!r}: the registered methods are {', '.join(METHODS)}")
    return METHODS[name]


register(quad.METHOD)
register(random.METHOD)
register(topk_influence.METHOD)
register(cluster_balanced.METHOD)
register(perplexity.METHOD)
register(dsir.METHOD)
register(classifier.METHOD)
register(mix.METHOD)
