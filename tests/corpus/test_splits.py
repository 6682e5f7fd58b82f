"""Deterministic splits by entity or group, holdouts, and the source's split column."""

from __future__ import annotations

import polars as pl
import pytest

from seqlm.config import options_from_mapping
from seqlm.corpus import SplitConfig, assign_splits
from seqlm.corpus.splits import unit_rank_key
from seqlm.errors import ConfigError, InputError


def entities(n: int, groups: list[str | None] | None = None, source=None) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "entity": [f"e{i:04d}" for i in range(n)],
            "group": groups if groups is not None else [None] * n,
            "source_split": source if source is not None else [None] * n,
        },
        schema={"entity": pl.String, "group": pl.String, "source_split": pl.String},
    )


def counts(split: pl.DataFrame) -> dict[str, int]:
    return dict(split.group_by("split").len().iter_rows())


def test_entity_split_is_exact_and_deterministic():
    table = entities(100)
    first = assign_splits(table, SplitConfig(seed=1))
    assert counts(first) == {"train": 80, "tuning": 10, "held_out": 10}
    assert first["entity"].to_list() == table["entity"].to_list()
    assert first.equals(assign_splits(table, SplitConfig(seed=1)))
    other = assign_splits(table, SplitConfig(seed=2))
    assert not first.equals(other)
    assert counts(other) == counts(first)


def test_adding_an_entity_moves_few_others():
    before = assign_splits(entities(200), SplitConfig())
    after = assign_splits(entities(201), SplitConfig()).head(200)
    moved = (before["split"] != after["split"]).sum()
    assert moved <= 2


def test_group_split_keeps_each_group_in_one_split():
    groups = [f"g{i % 20}" for i in range(200)]
    split = assign_splits(entities(200, groups), SplitConfig(by="group"))
    per_group = (
        split.with_columns(group=pl.Series(groups))
        .group_by("group")
        .agg(pl.col("split").n_unique())
    )
    assert per_group["split"].max() == 1
    group_counts = (
        split.with_columns(group=pl.Series(groups)).unique("group").group_by("split").len()
    )
    assert dict(group_counts.iter_rows()) == {"train": 16, "tuning": 2, "held_out": 2}


def test_named_groups_are_held_out_whole():
    groups = [f"bird{i % 7}" for i in range(70)]
    config = SplitConfig(held_out_groups=("bird6",), tuning_groups=("bird5",), held_out=0.0)
    split = assign_splits(entities(70, groups), config).with_columns(group=pl.Series(groups))
    assert set(split.filter(pl.col("group") == "bird6")["split"]) == {"held_out"}
    assert set(split.filter(pl.col("group") == "bird5")["split"]) == {"tuning"}
    rest = split.filter(~pl.col("group").is_in(["bird5", "bird6"]))
    assert "held_out" not in set(rest["split"])  # held_out fraction 0 for the rest
    assert counts(rest)["tuning"] == 5  # 10% of the other 50 entities


def test_named_group_must_exist():
    with pytest.raises(ConfigError, match="bird9"):
        assign_splits(entities(3, ["a", "b", "c"]), SplitConfig(held_out_groups=("bird9",)))


def test_entities_without_group_are_their_own_units():
    groups = ["g"] * 50 + [None] * 50
    split = assign_splits(entities(100, groups), SplitConfig(by="group"))
    assert split.filter(pl.Series(groups).is_not_null())["split"].n_unique() == 1
    assert split.filter(pl.Series(groups).is_null())["split"].n_unique() > 1


def test_source_split_is_used_as_is():
    source = ["train", "held_out", "tuning", "train"]
    split = assign_splits(entities(4, source=source), SplitConfig())
    assert split["split"].to_list() == source
    ignored = SplitConfig(use_source_split=False)
    hashed = assign_splits(entities(20, source=["train"] * 20), ignored)
    assert counts(hashed) == {"train": 16, "tuning": 2, "held_out": 2}


def test_source_split_problems_are_reported():
    with pytest.raises(InputError, match="no split value") as err:
        assign_splits(entities(3, source=["train", None, "train"]), SplitConfig())
    assert err.value.column == "split"
    with pytest.raises(InputError, match="one of"):
        assign_splits(entities(2, source=["train", "test"]), SplitConfig())
    with pytest.raises(ConfigError, match="use_source_split"):
        assign_splits(
            entities(2, ["a", "b"], source=["train", "train"]),
            SplitConfig(held_out_groups=("a",)),
        )


def test_tiny_tables_keep_one_entity_in_train():
    assert assign_splits(entities(1), SplitConfig())["split"].to_list() == ["train"]
    two = assign_splits(entities(2), SplitConfig(tuning=0.4, held_out=0.4))
    assert counts(two) == {"train": 1, "held_out": 1}


@pytest.mark.parametrize(
    "options",
    [
        {"tuning": 0.6, "held_out": 0.5},
        {"held_out": -0.1},
        {"by": ""},
        {"held_out_groups": ["a"], "tuning_groups": ["a"]},
    ],
)
def test_bad_split_configs(options):
    with pytest.raises(ConfigError):
        options_from_mapping(SplitConfig, options)


def test_split_by_an_attribute_keeps_its_entities_together():
    table = entities(40).with_columns(
        recording=pl.Series([f"r{i // 4}" for i in range(40)]).set_sorted()
    )
    split = assign_splits(table, SplitConfig(by="recording", tuning=0.2, held_out=0.2))
    joined = table.join(split, on="entity")
    assert joined.group_by("recording").agg(pl.col("split").n_unique())["split"].max() == 1
    assert set(joined["split"]) == {"train", "tuning", "held_out"}
    with pytest.raises(ConfigError, match="no such attribute"):
        assign_splits(entities(4), SplitConfig(by="bird"))


@pytest.mark.parametrize("n", [0, 1, 2, 3, 9, 250])
@pytest.mark.parametrize("by", ["entity", "group"])
def test_splits_follow_the_documented_ranking(n, by):
    """Units ranked by unit_rank_key (sha256 hex of seed and name), the first
    round(n * held_out) held_out, then tuning, then train (one kept in train)."""
    names = [f"é{i}\x00{i * 7919 % 1000}" for i in range(n)]
    groups = [None if i % 3 == 0 else f"g{i % 5}" for i in range(n)]
    frame = pl.DataFrame(
        {"entity": names, "group": pl.Series(groups, dtype=pl.String), "source_split": None},
        schema_overrides={"source_split": pl.String},
    )
    config = SplitConfig(seed=5, tuning=0.3, held_out=0.2, by=by)
    unit_of = {
        name: (f"group\x00{g}" if g is not None else f"entity\x00{name}") if by == "group" else name
        for name, g in zip(names, groups, strict=True)
    }
    ranked = sorted(set(unit_of.values()), key=lambda u: unit_rank_key(5, u))
    held, tuning = round(len(ranked) * 0.2), round(len(ranked) * 0.3)
    over = held + tuning - (len(ranked) - 1)
    if ranked and over > 0:
        cut = min(over, tuning)
        tuning, held = tuning - cut, held - (over - cut)
    expected = {
        u: "held_out" if i < held else "tuning" if i < held + tuning else "train"
        for i, u in enumerate(ranked)
    }
    got = assign_splits(frame, config)
    assert got["entity"].to_list() == names
    assert got["split"].to_list() == [expected[unit_of[name]] for name in names]
