"""Raw files to a corpus folder in one call: the library function behind `seqlm ingest`.

A config (TOML file and/or `--option key=value` strings) has three parts:

- `[adapter]` — the adapter's options (for the tabular adapter: the column mapping);
- `[scheme]` — overrides of the token scheme (value bins, time-gap tokens, thresholds);
- `[splits]` — how entities are split (seed, fractions, by group, held-out groups).

A TOML file with none of those tables is read as adapter options alone, so a plain
column-mapping file works as is. Option keys `scheme.X` and `splits.X` go to those
parts; bare keys go to the adapter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from seqlm.corpora_adapters import get_adapter
from seqlm.corpora_adapters.base import load_toml, options_from_mapping, parse_option_strings
from seqlm.corpus import Corpus, SplitConfig, build_corpus
from seqlm.errors import ConfigError, InputError
from seqlm.progress import Progress
from seqlm.vocabularies import TokenScheme

CONFIG_SECTIONS = ("adapter", "scheme", "splits")


def split_config_sections(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Sort a parsed config into its adapter / scheme / splits parts."""
    sections: dict[str, dict[str, Any]] = {name: {} for name in CONFIG_SECTIONS}
    if any(name in config for name in CONFIG_SECTIONS):
        for key, value in config.items():
            if key not in CONFIG_SECTIONS:
                raise ConfigError(
                    f"unknown config table {key!r}; expected {', '.join(CONFIG_SECTIONS)}"
                )
            if not isinstance(value, Mapping):
                raise ConfigError(f"config {key!r} must be a table")
            sections[key].update(value)
    else:
        sections["adapter"].update(config)
    return sections


def merge_configs(*configs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Later configs override earlier ones, key by key within each section."""
    merged: dict[str, dict[str, Any]] = {name: {} for name in CONFIG_SECTIONS}
    for config in configs:
        for name, values in split_config_sections(config).items():
            merged[name].update(values)
    return merged


def resolve_ingest_config(
    config_file: str | Path | None = None, options: Sequence[str] = ()
) -> dict[str, dict[str, Any]]:
    """Read the config file and `key=value` options into the three sections."""
    from_file = load_toml(config_file) if config_file is not None else {}
    parsed = parse_option_strings(options)
    from_options: dict[str, dict[str, Any]] = {name: {} for name in CONFIG_SECTIONS}
    for key, value in parsed.items():
        if key in ("scheme", "splits") and isinstance(value, dict):
            from_options[key].update(value)
        else:
            from_options["adapter"][key] = value
    return merge_configs(from_file, from_options)


def ingest(
    adapter: str,
    inputs: Sequence[str | Path],
    out: str | Path,
    config: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    overwrite: bool = False,
    workers: int | None = None,
    progress: Progress | None = None,
) -> Corpus:
    """Read `inputs` with the named adapter and write a corpus folder at `out`
    (`workers`: processes for the corpus build, None = the cores)."""
    spec = get_adapter(adapter)
    sections = merge_configs(config or {})
    paths = [Path(p) for p in inputs]
    if not paths:
        raise ConfigError("no input files given")
    for path in paths:
        if not path.exists():
            raise InputError("input not found", file=path)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out}: output folder exists and is not empty (use --overwrite)")
    options = options_from_mapping(spec.options, sections["adapter"], prefix="")
    scheme = options_from_mapping(
        TokenScheme, {**spec.scheme_defaults, **sections["scheme"]}, prefix="scheme."
    )
    splits = options_from_mapping(SplitConfig, sections["splits"], prefix="splits.")
    ingested = spec.read(paths, options)
    return build_corpus(
        ingested, out, scheme, splits, overwrite=overwrite, workers=workers, progress=progress
    )
