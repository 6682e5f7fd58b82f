"""Adapters: raw source files -> canonical EventTable + RejectLog.

Each adapter module registers itself with `register_adapter`; `get_adapter` and
`registered_adapters` import them all first, so the registry is complete however the
package was imported.
"""

from __future__ import annotations

import importlib

from seqlm.corpora_adapters.base import (
    AdapterSpec,
    Ingested,
    RejectLog,
    register_adapter,
)
from seqlm.corpora_adapters.base import registered_adapters as _registered
from seqlm.errors import ConfigError
from seqlm.events import EventTable

# Modules that define adapters; imported on first use of the registry.
ADAPTER_MODULES: tuple[str, ...] = (
    "seqlm.corpora_adapters.meds",
    "seqlm.corpora_adapters.tabular",
    "seqlm.corpora_adapters.birdsong",
)


def _import_all() -> None:
    for module in ADAPTER_MODULES:
        importlib.import_module(module)


def registered_adapters() -> dict[str, AdapterSpec]:
    _import_all()
    return _registered()


def get_adapter(name: str) -> AdapterSpec:
    """The adapter registered as `name` or under the alias `name` (`generic-seq`)."""
    adapters = registered_adapters()
    if name in adapters:
        return adapters[name]
    for spec in adapters.values():
        if name in spec.aliases:
            return spec
    aliases = sorted(alias for spec in adapters.values() for alias in spec.aliases)
    raise ConfigError(
        f"no adapter named {name!r}; available: {', '.join(adapters)} "
        f"(also accepted: {', '.join(aliases)})"
    )


__all__ = [
    "AdapterSpec",
    "EventTable",
    "Ingested",
    "RejectLog",
    "get_adapter",
    "register_adapter",
    "registered_adapters",
]
