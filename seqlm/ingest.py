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

import polars as pl
from pyarrow.lib import ArrowException

from seqlm.config import load_toml, options_from_mapping, parse_option_strings
from seqlm.corpora_adapters import AdapterSpec, get_adapter
from seqlm.corpus import Corpus, SplitConfig, build_corpus
from seqlm.corpus.store import CORPUS_FILES
from seqlm.corpus.within_time_order import DEFAULT_WITHIN_TIME_ORDER, check_within_time_order
from seqlm.corpus.workers import started_pool
from seqlm.corpus.writer import planned_workers
from seqlm.errors import ConfigError, InputError, SeqlmError
from seqlm.outputs import OutputError, check_output, output_lock
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
    within_time_order: str = DEFAULT_WITHIN_TIME_ORDER,
) -> Corpus:
    """Read `inputs` with the named adapter and write a corpus folder at `out`
    (`workers`: processes for the corpus build, None = the cores; `within_time_order`:
    `file` or `code`, the order of an entity's events that share a timestamp)."""
    check_within_time_order(within_time_order)
    spec = get_adapter(adapter)
    sections = merge_configs(config or {})
    paths = [Path(p) for p in inputs]
    if not paths:
        raise ConfigError("no input files given")
    for path in paths:
        if not path.exists():
            raise InputError("input not found", file=path)
    out = Path(out)
    try:
        options = options_from_mapping(spec.options, sections["adapter"], prefix="")
    except ConfigError as err:
        raise ConfigError(f"{err} (`seqlm adapters {spec.name}` lists its options)") from None
    scheme = options_from_mapping(
        TokenScheme, {**spec.scheme_defaults, **sections["scheme"]}, prefix="scheme."
    )
    splits = options_from_mapping(
        SplitConfig, {**spec.split_defaults, **sections["splits"]}, prefix="splits."
    )
    # The lock is held from the first check to the rename, so a second ingest into the
    # same folder fails at once instead of racing this one.
    with output_lock(out, "seqlm ingest"):
        check_output(out, paths, overwrite=overwrite, own_names=CORPUS_FILES)
        try:
            with started_pool(_planned_workers(spec, paths, options, workers)) as started:
                ingested = spec.read(paths, options)
                return build_corpus(
                    ingested,
                    out,
                    scheme,
                    splits,
                    overwrite=overwrite,
                    workers=workers,
                    progress=progress,
                    within_time_order=within_time_order,
                    started=started,
                )
        except (pl.exceptions.PolarsError, ArrowException) as err:
            # Scans are lazy: a damaged page surfaces while the corpus is built, where
            # the file is unknown. Find it by reading the inputs one by one.
            raise unreadable_input_error(paths, err, out) from None


def _planned_workers(
    spec: AdapterSpec, paths: list[Path], options: Any, workers: int | None
) -> int:
    """The corpus build's processes, from the adapter's cheap row count (one without it:
    the build starts its workers itself)."""
    if spec.count_rows is None or workers == 1:
        return 1
    try:
        rows = spec.count_rows(paths, options)
    except SeqlmError:  # `read` reports it, as it would without the count
        return 1
    return planned_workers(rows, workers)


def unreadable_input_error(paths: Sequence[Path], err: Exception, out: Path) -> SeqlmError:
    """An `InputError` naming the first input file polars cannot read; an `OutputError`
    when every input reads and the failure was the system's (a full disk, say)."""
    reason = " ".join(str(err).split())[:200]
    for file in _data_files(paths):
        try:
            if file.suffix in (".parquet", ".pq"):
                pl.read_parquet(file, glob=False)
        except (pl.exceptions.PolarsError, ArrowException, OSError) as bad:
            detail = " ".join(str(bad).split())[:200]
            return InputError(f"not readable as parquet ({detail})", file=file)
    if "os error" in reason.lower() or "io error" in reason.lower():
        return OutputError(f"{out}: writing the corpus failed ({reason})")
    shown = ", ".join(str(p) for p in paths[:3]) + (" ..." if len(paths) > 3 else "")
    return InputError(f"cannot read the input ({reason})", file=shown)


def _data_files(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.rglob("*.parquet")) if path.is_dir() else [path])
    return files
