"""Labels from an ACES task configuration, through the `es-aces` package (optional extra
`pip install 'seqlm[aces]'`; es-aces 0.7 needs polars < 2, so it may want its own
environment).

Each MEDS shard (`data/**/*.parquet`, MEDS keeps a subject's rows in one shard) goes
through ACES's own steps, `predicates.get_predicates_df` then `query.query`, exactly as
`aces-cli data=sharded data.standard=meds` runs them per shard; the result is renamed
to the MEDS label schema as `aces-cli` does (`index_timestamp` -> `prediction_time`,
`label` -> `boolean_value`) and the shards are concatenated.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from seqlm.errors import ConfigError, InputError

ACES_HINT = "ACES extraction needs the optional extra: pip install 'seqlm[aces]' (es-aces)"
LABEL_COLUMNS = {
    "subject_id": pl.Int64,
    "prediction_time": pl.Datetime("us"),
    "boolean_value": pl.Boolean,
    "integer_value": pl.Int64,
    "float_value": pl.Float64,
    "categorical_value": pl.String,
}


def _meds_shards(dataset: Path) -> list[Path]:
    data = dataset / "data" if (dataset / "data").is_dir() else dataset
    shards = sorted(p for p in data.rglob("*.parquet") if p.is_file())
    if not shards:
        raise InputError("no MEDS shards (data/**/*.parquet) here", file=dataset)
    return shards


def _as_label_schema(result: pl.DataFrame) -> pl.DataFrame:
    renamed = result.rename(
        {
            old: new
            for old, new in (("index_timestamp", "prediction_time"), ("label", "boolean_value"))
            if old in result.columns
        }
    )
    columns = [
        (pl.col(c) if c in renamed.columns else pl.lit(None)).cast(t).alias(c)
        for c, t in LABEL_COLUMNS.items()
    ]
    return renamed.select(columns)


def extract_aces_labels(task_config: str | Path, dataset: str | Path) -> pl.DataFrame:
    """MEDS labels of the ACES task `task_config` (YAML) on the MEDS dataset folder."""
    try:
        from aces import config, predicates, query
        from omegaconf import DictConfig
    except ImportError:
        raise ConfigError(ACES_HINT) from None
    task_config, dataset = Path(task_config), Path(dataset)
    if not task_config.is_file():
        raise InputError("no such ACES task configuration", file=task_config)
    try:
        task = config.TaskExtractorConfig.load(config_path=task_config)
    except (ValueError, KeyError, TypeError, OSError) as err:
        raise InputError(f"not a valid ACES task configuration ({err})", file=task_config) from None
    frames = []
    for shard in _meds_shards(dataset):
        data = DictConfig({"path": str(shard), "standard": "meds", "ts_format": "%m/%d/%Y %H:%M"})
        result = query.query(task, predicates.get_predicates_df(task, data))
        if len(result):
            frames.append(_as_label_schema(result))
    if not frames:
        return pl.DataFrame(schema=LABEL_COLUMNS)
    return pl.concat(frames).sort("subject_id", "prediction_time")
