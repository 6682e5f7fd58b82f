"""Deterministic train / tuning / held-out splits, by entity or by group.

Every entity lands in exactly one split. The rule, in order:

1. If the source has a `split` column (MEDS ships one) and `use_source_split` is on,
   it is used as is: every entity must have exactly one split value.
2. Otherwise entities of a group named in `held_out_groups` / `tuning_groups` go to
   that split (hold out whole birds, sites or cohorts).
3. The remaining units (entities, or groups when `by = "group"`; an entity without a
   group is its own unit) are ranked by sha256 of `seed` and the unit's name, and the
   first `round(n * held_out)` go to held_out, the next `round(n * tuning)` to tuning,
   the rest to train (at least one unit stays in train). The ranking of a unit does not
   depend on the others, so adding entities moves few existing ones, and the same seed
   gives the same split on every machine and polars version.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from seqlm.errors import ConfigError, InputError
from seqlm.events import SPLITS


@dataclass
class SplitConfig:
    """How entities are split (the `[splits]` table of an ingest config)."""

    seed: int = field(
        default=0,
        metadata={
            "help": "Seed of the hash that ranks units into splits; same seed, same split on every machine."
        },
    )
    tuning: float = field(
        default=0.1, metadata={"help": "Fraction of units in the tuning split, in [0, 1)."}
    )
    held_out: float = field(
        default=0.1, metadata={"help": "Fraction of units in the held-out split, in [0, 1)."}
    )
    by: str = field(
        default="entity",
        metadata={
            "help": "Unit of splitting: entity, group (whole birds, sites, cohorts), or an entity attribute column such as recording (chunks of one recording stay together)."
        },
    )
    held_out_groups: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "Groups whose entities all go to held_out (e.g. a bird kept for testing)."
        },
    )
    tuning_groups: tuple[str, ...] = field(
        default=(), metadata={"help": "Groups whose entities all go to tuning."}
    )
    use_source_split: bool = field(
        default=True,
        metadata={"help": "Use the source's own split column (MEDS ships one) when it has one."},
    )

    def __post_init__(self) -> None:
        self.held_out_groups = tuple(self.held_out_groups)
        self.tuning_groups = tuple(self.tuning_groups)
        if not isinstance(self.by, str) or not self.by:
            raise ConfigError(f"splits.by must name entity, group or a column, got {self.by!r}")
        if not (0 <= self.tuning < 1 and 0 <= self.held_out < 1):
            raise ConfigError("splits.tuning and splits.held_out must be in [0, 1)")
        if self.tuning + self.held_out >= 1:
            raise ConfigError("splits.tuning + splits.held_out must leave room for train")
        both = sorted(set(self.held_out_groups) & set(self.tuning_groups))
        if both:
            raise ConfigError(f"groups named for both held_out and tuning: {both}")

    def to_dict(self) -> dict[str, object]:
        """Plain values for JSON (tuples become lists there)."""
        return dataclasses.asdict(self)


def unit_rank_key(seed: int, unit: str) -> str:
    """The hash that orders units for the split; stable across machines and versions."""
    return hashlib.sha256(f"{seed}\x00{unit}".encode()).hexdigest()


def assign_splits(entities: pl.DataFrame, config: SplitConfig) -> pl.DataFrame:
    """Split per entity.

    `entities` has one row per entity: `entity`, `group` (or null) and `source_split`
    (the source's split value, null when it has none). Returns `entity`, `split`, in
    the input's order.
    """
    source = entities["source_split"]
    if config.use_source_split and source.null_count() < entities.height:
        return _source_splits(entities, config)

    group = entities["group"]
    forced = pl.Series("forced", [None] * entities.height, dtype=pl.String)
    for split, names in (("held_out", config.held_out_groups), ("tuning", config.tuning_groups)):
        missing = sorted(set(names) - set(group.drop_nulls().to_list()))
        if missing:
            raise ConfigError(f"splits.{split}_groups names groups not in the data: {missing}")
        forced = (
            pl.select(
                pl.when(group.is_in(pl.Series(list(names), dtype=pl.String).implode()))
                .then(pl.lit(split))
                .otherwise(forced)
            )
            .to_series()
            .alias("forced")
        )

    if config.by == "group":
        unit = pl.select(
            pl.when(group.is_not_null())
            .then(pl.lit("group\x00") + group)
            .otherwise(pl.lit("entity\x00") + entities["entity"])
        ).to_series()
    elif config.by == "entity":
        unit = entities["entity"]
    else:
        unit = _attribute_units(entities, config.by)
    table = _split_table(unit.filter(forced.is_null()).unique(), config)
    named = pl.DataFrame({"unit": unit}).join(table, on="unit", how="left", maintain_order="left")
    hashed = named["split"]
    split = pl.select(pl.coalesce(forced, hashed)).to_series()
    return pl.DataFrame({"entity": entities["entity"], "split": split})


def _attribute_units(entities: pl.DataFrame, column: str) -> pl.Series:
    """Units named by an entity attribute (`recording`); an entity without a value is its
    own unit."""
    reserved = {"entity", "group", "source_split", "n_events", "first_time", "last_time"}
    if column not in entities.columns or column in reserved:
        known = [c for c in entities.columns if c not in reserved]
        raise ConfigError(
            f"splits.by = {column!r}: no such attribute in this source; use entity, group"
            + (f" or one of {', '.join(known)}" if known else "")
        )
    value = entities[column].cast(pl.String)
    return pl.select(
        pl.when(value.is_not_null())
        .then(pl.lit(f"{column}\x00") + value)
        .otherwise(pl.lit("entity\x00") + entities["entity"])
    ).to_series()


def _split_table(units: pl.Series, config: SplitConfig) -> pl.DataFrame:
    """`unit`, `split` for distinct `units`: ranked by `unit_rank_key`, the first
    `round(n * held_out)` held_out, the next `round(n * tuning)` tuning, the rest train.

    Ranked in numpy: a Python sort and dict of a million entities took 4 CPU s while
    the worker processes waited, and polars sorts the hex keys no faster. The order of
    the hex keys is that of the sha256 digests as big-endian numbers, so the digests
    are sorted as four 64-bit words, the first most significant (exact, ties included)."""
    names = units.to_list()
    n = len(names)
    prefix = f"{config.seed}\x00".encode()
    sha256 = hashlib.sha256
    # = unit_rank_key(config.seed, name) in bytes: UTF-8 of a concatenation is the
    # concatenation.
    digests = b"".join(sha256(prefix + name.encode()).digest() for name in names)
    words = np.frombuffer(digests, dtype=">u8").reshape(n, 4)
    rank = np.empty(n, dtype=np.int64)
    rank[np.lexsort(words.T[::-1])] = np.arange(n)
    n_held = round(n * config.held_out)
    n_tuning = round(n * config.tuning)
    overflow = n_held + n_tuning - (n - 1)
    if n > 0 and overflow > 0:
        # Too few units for the fractions: keep one in train, trim tuning first.
        cut = min(overflow, n_tuning)
        n_tuning -= cut
        n_held -= overflow - cut
    split = np.where(rank < n_held, 0, np.where(rank < n_held + n_tuning, 1, 2))
    names_of = pl.Series(["held_out", "tuning", "train"], dtype=pl.String)
    return pl.DataFrame({"unit": units, "split": names_of.gather(split)})


def _source_splits(entities: pl.DataFrame, config: SplitConfig) -> pl.DataFrame:
    if config.held_out_groups or config.tuning_groups:
        raise ConfigError(
            "the source has a split column; set splits.use_source_split = false to "
            "choose held-out or tuning groups instead"
        )
    source = entities["source_split"]
    if source.null_count():
        raise InputError(
            f"{source.null_count()} of {entities.height} entities have no split value while "
            "others do; give every entity one, or set splits.use_source_split = false",
            column="split",
        )
    unknown = sorted(set(source.unique().to_list()) - set(SPLITS))
    if unknown:
        raise InputError(
            f"split values must be one of {list(SPLITS)}, got {unknown}", column="split"
        )
    return pl.DataFrame({"entity": entities["entity"], "split": source})
