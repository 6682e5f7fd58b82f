"""Event tokens of one sorted partition with the string work done once per distinct
(kind, code, text, bin) instead of once per row.

`event_token_frame` builds each row's data token with a dozen string expressions
(escaping, the fused `//Q{k}`, the reserved-name checks). Its result depends only on
the row's (kind, code, text, bin), and a partition of 500k MEDS rows holds a few
thousand of those, so here each row gets an integer `pair` (the number of its
(kind, code, text, bin)) and the strings are made on the small pair table by
`pair_tokens`, the same expressions as `event_token_frame`
(tests/corpus/test_token_rows.py checks the two against each other; the corpus
byte-identity tests check the whole build).

Per row only numbers remain: entity run id, seconds, gap, bin, pair.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from seqlm.corpora_adapters.base import time_in_seconds
from seqlm.vocabularies.categories import distinct_places
from seqlm.vocabularies.event_tokens import (
    EncodedSequences,
    assemble_sequences,
    with_token_strings,
)
from seqlm.vocabularies.fitting import HOLDERS_KEPT, known_sources
from seqlm.vocabularies.scheme import SPECIAL_TOKENS, UNK_ID, TokenScheme, value_token
from seqlm.vocabularies.text_values import (
    BESIDE_VALUE,
    EMPTY_TEXT,
    NO_TEXT,
    NO_VALUE,
    TEXT_NUMBER,
    TEXT_OFF,
    TEXT_TOKEN,
    VALUE_BINNED,
    VALUE_UNBINNED,
    fate_counts,
)
from seqlm.vocabularies.token_index import TokenIndex
from seqlm.vocabularies.value_bins import (
    BinLookup,
    CodeValueBins,
    parsed_number,
    shared_lookup,
    stored_value,
)
from seqlm.vocabularies.vocabulary import Vocabulary

# What the per-row tokens file holds (all numeric).
ROW_COLUMNS = ["entity", "time_s", "gap", "bin", "pair"]
# What the pair table keeps per pair (the fates let the encode stage count what became of
# every text and value: seqlm.vocabularies.text_values).
PAIR_STRINGS = ["pair", "kind", "code", "text", "bin", "text_fate", "value_fate"]
# What a pair's token strings depend on, and the strings (`pair_tokens`).
TOKEN_KEY = ["kind", "code", "text", "bin"]
TOKEN_STRINGS = ["data_token", "text_unknown", "unknown", "reserved_label"]
# The token strings of this many (kind, code, text, bin) at most are kept for the next
# partitions (beyond it the cache starts again from one partition's pairs: a vocabulary
# of a full hospital's codes passes it).
CACHED_TOKENS = 200_000
_TOKEN_CACHE: dict[tuple[Any, ...], pl.DataFrame] = {}
# Distinct (token, entity) keys of a partition's train rows are marked in a boolean
# array while their range is below this (or 16 per row), else hashed.
DENSE_HELD = 1 << 24


def _ids(column: pl.Expr) -> pl.Expr:
    # Categorical ids: one hash per row, and equal strings get equal ids in a process.
    return column.cast(pl.Categorical).to_physical().cast(pl.Int64)


def _first_seen(keys: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(each row's number, the first row of each number): rows of equal `keys` share a
    number, numbered in the order of their first rows."""
    key = keys.to_series(0)
    one_int_key = keys.width == 1 and key.dtype.is_integer() and key.len() and not key.has_nulls()
    if one_int_key and key.min() >= 0:  # type: ignore[operator]
        # One integer key (the count stage's per-row keys): numbered by an array indexed
        # by the key where its range is small, else a hash lookup, not a grouping and a
        # join back onto the rows (MEDS 20x: 30 -> 12 ms per partition of 400k rows and
        # key, 3 ms by the array).
        first, place = distinct_places(key, dense_below=4 * len(key) + 2**20)
        return place.cast(pl.Int64).to_numpy(), first.cast(pl.Int64).to_numpy()
    table = (
        keys.with_row_index("_row")
        .group_by(keys.columns, maintain_order=True)
        .agg(pl.col("_row").first())
    )
    numbered = table.with_row_index("_number")
    found = keys.join(
        numbered.drop("_row"), on=keys.columns, how="left", nulls_equal=True, maintain_order="left"
    )
    return found["_number"].cast(pl.Int64).to_numpy(), numbered["_row"].cast(pl.Int64).to_numpy()


def _bases(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """`_first_seen` of the rows' (kind_id, code_id, text_id). Codes and texts packed
    into one integer where the ids fit, and the kind checked to follow from them (as
    it does where the adapter derives it from the code), which groups one column
    instead of three. The text ids take the range the partition's texts need (none
    where no row has a text, as in most MEDS shards), so the key's range is small enough
    for `_first_seen`'s array."""
    code, text = frame["code_id"], frame["text_id"]
    width = int(text.max() or 0) + 2  # type: ignore[arg-type]  # 0 for a null text
    if frame.height and code.max() < 2**62 // width:  # type: ignore[operator]
        packed = frame.select(
            (pl.col("code_id") * width + pl.col("text_id").fill_null(-1) + 1).alias("key")
        )
        base, first = _first_seen(packed)
        kind = frame["kind_id"]
        if kind.eq_missing(kind.gather(first[base])).all():
            return base, first
    return _first_seen(frame.select("kind_id", "code_id", "text_id"))


def keyed_rows(
    rows: pl.DataFrame, scheme: TokenScheme, bins: Mapping[str, CodeValueBins]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows sorted by (entity, time, order) -> (per-row frame of `ROW_COLUMNS`, the
    pair table: pair, kind, code, text, bin, text_fate, value_fate, one row per distinct
    pair, numbered in the order of their first rows).

    `entity` becomes the run id of the entity (0, 1, ... in sorted order), so the
    time and gap windows work on integers. The bins and fates are those of
    `text_values.with_values_and_fates`, worked out without a string expression per
    row: what depends on the strings (the code's bins, the number a text spells, an
    empty text) once per distinct (kind, code, text), the rest in numpy per row."""
    time_type = rows.schema["time"]
    frame = rows.select(
        pl.col("entity").rle_id().cast(pl.Int64).alias("entity"),
        pl.col("time"),
        _ids(pl.col("kind")).alias("kind_id"),
        _ids(pl.col("code").fill_null("")).alias("code_id"),
        _ids(pl.col("text")).alias("text_id"),
        stored_value(pl.col("value")).fill_nan(None).fill_null(np.nan).alias("value"),
    )
    # Over the run ids (one run an entity), five times cheaper than over the names.
    time_s = time_in_seconds(pl.col("time"), time_type).alias("time_s")
    frame = frame.with_columns(time_s).drop("time")
    base, first = _bases(frame)
    # (The sorted work file keeps these columns as categoricals.)
    strings = rows[first].select(
        pl.col("kind").cast(pl.String),
        pl.col("code").cast(pl.String).fill_null(""),
        pl.col("text").cast(pl.String),
    )
    facts = _base_facts(strings, scheme, bins)
    value = frame["value"].to_numpy()
    given = ~np.isnan(value)
    number = facts["number"][base]
    value = np.where(given, value, number)
    bin_number = facts["lookup"].numbers(facts["which"][base], value)
    # One fine key per (kind, code, text, value given, bin): everything else follows.
    width = int(bin_number.max()) + 1 if len(bin_number) else 1
    fine = pl.DataFrame({"key": (base * 2 + given) * width + bin_number})
    fine_of_row, fine_first = _first_seen(fine)
    fine_base, fine_given, fine_bin = base[fine_first], given[fine_first], bin_number[fine_first]
    text_fate, value_fate = _fates(
        facts["text_state"][fine_base],
        ~fine_given & ~np.isnan(facts["number"][fine_base]),
        fine_given,
        fine_bin > 0,
        scheme,
    )
    ids = frame.select("kind_id", "code_id", "text_id")[fine_first]
    pair_keys = ids.with_columns(
        pl.when(pl.Series(text_fate == TEXT_TOKEN)).then(pl.col("text_id")).alias("text_id"),
        pl.Series("bin", fine_bin),
        pl.Series("text_fate", text_fate),
        pl.Series("value_fate", value_fate),
    )
    pair_of_fine, pair_first = _first_seen(pair_keys)
    chosen = fine_first[pair_first]
    pairs = strings[base[chosen]].select(
        pl.Series("pair", np.arange(len(chosen), dtype=np.int64)),
        "kind",
        "code",
        pl.when(pl.Series(text_fate[pair_first] == TEXT_TOKEN)).then(pl.col("text")),
        _nullable_bins(bin_number[chosen]),
        pl.Series("text_fate", text_fate[pair_first]),
        pl.Series("value_fate", value_fate[pair_first]),
    )
    # Narrow integers per row: the tokens file is written and read in a third less time.
    keyed = frame.select(
        pl.col("entity").cast(pl.Int32),
        "time_s",
        # The rows are in entity runs: a gap within the run, null at its start (as
        # `diff().over("entity")`, without hashing the entities).
        pl.when(pl.col("entity") == pl.col("entity").shift(1))
        .then(pl.col("time_s").diff())
        .alias("gap"),
        _nullable_bins(bin_number, pl.Int16 if width <= 2**15 else pl.Int64),
        pl.Series("pair", pair_of_fine[fine_of_row], dtype=pl.Int32),
    )
    return keyed.select(ROW_COLUMNS), pairs.select(PAIR_STRINGS)


def _nullable_bins(numbers: np.ndarray, dtype: type[pl.DataType] = pl.Int64) -> pl.Series:
    """Bin numbers as the `bin` column, null for no bin (0)."""
    series = pl.Series("bin", numbers, dtype=dtype)
    return series.set(pl.Series(numbers == 0), None)  # type: ignore[arg-type]


def _base_facts(
    strings: pl.DataFrame, scheme: TokenScheme, bins: Mapping[str, CodeValueBins]
) -> dict[str, Any]:
    """Per distinct (kind, code, text): its code's row in the bin lookup (`which`), the
    number its text gives where `with_values_and_fates` reads one (`number`, NaN else)
    and whether the text is null (0), empty (1) or not (2)."""
    lookup = shared_lookup(bins) if scheme.uses_values else BinLookup({})
    code, text = strings["code"], strings["text"]
    number_codes = lookup.number_codes
    number = np.full(strings.height, np.nan)
    if scheme.uses_values and scheme.use_text and number_codes:
        parsed = strings.select(
            parsed_number(pl.when(pl.col("code").is_in(number_codes)).then(pl.col("text")))
        ).to_series()
        number = parsed.cast(pl.Float64).fill_null(np.nan).to_numpy()
    empty = (text.str.len_chars() == 0).fill_null(False).to_numpy()
    text_state = np.where(text.is_null().to_numpy(), 0, np.where(empty, 1, 2))
    return {
        "lookup": lookup,
        "which": lookup.which(code),
        "number": number,
        "text_state": text_state,
    }


def _fates(
    text_state: np.ndarray,
    parsed: np.ndarray,
    given: np.ndarray,
    binned: np.ndarray,
    scheme: TokenScheme,
) -> tuple[np.ndarray, np.ndarray]:
    """`text_fate` and `value_fate` (int8) as `with_values_and_fates` gives them."""
    text_fate = np.select(
        [
            text_state == 0,
            text_state == 1,
            np.full(len(text_state), not scheme.use_text),
            parsed,
            binned,
        ],
        [NO_TEXT, EMPTY_TEXT, TEXT_OFF, TEXT_NUMBER, BESIDE_VALUE],
        TEXT_TOKEN,
    ).astype(np.int8)
    value_fate = np.select([~given, binned], [NO_VALUE, VALUE_BINNED], VALUE_UNBINNED).astype(
        np.int8
    )
    return text_fate, value_fate


def pair_tokens(pairs: pl.DataFrame, scheme: TokenScheme) -> pl.DataFrame:
    """The pair table with `data_token`, `text_unknown`, `unknown` and `reserved_label`:
    the same expressions as `event_token_frame`, applied to each distinct pair once.

    The strings of a (kind, code, text, bin) are kept in this process (`TOKEN_CACHE`)
    and found by a join for the next partitions of the same scheme: partitions share
    most of their codes, and the escapes cost far more than the join (x20: 0.13 ->
    0.03 CPU us per row)."""
    key = (scheme.use_text, scheme.value_bins, scheme.value_mode)
    cached = _TOKEN_CACHE.get(key)
    if cached is None:
        cached = with_token_strings(pairs.select(TOKEN_KEY).head(0), scheme)
    found = pairs.join(
        cached.with_columns(pl.lit(True).alias("_cached")),
        on=TOKEN_KEY,
        how="left",
        nulls_equal=True,
        maintain_order="left",
    )
    missing = (
        found.filter(pl.col("_cached").is_null()).select(TOKEN_KEY).unique(maintain_order=True)
    )
    if missing.height:
        made = with_token_strings(missing, scheme)
        if cached.height + made.height > CACHED_TOKENS:
            # Start again from this partition's own pairs: the ones found in the old
            # cache too, or the join below would leave them without strings.
            cached = cached.join(pairs, on=TOKEN_KEY, how="semi", nulls_equal=True)
        cached = pl.concat([cached, made])
        found = pairs.join(
            cached, on=TOKEN_KEY, how="left", nulls_equal=True, maintain_order="left"
        )
    _TOKEN_CACHE.clear()  # one scheme's strings at a time
    _TOKEN_CACHE[key] = cached
    return found.select(*pairs.columns, *TOKEN_STRINGS)


def train_counts(
    keyed: pl.DataFrame, tokens: pl.DataFrame, train: np.ndarray
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Train counts of one partition as `TokenCounter.add` would make them from its
    rows: (per data token: code, text, bin of its first row, its kind's unknown, count,
    distinct entities, the first HOLDERS_KEPT + 1 entities, distinct sources; the
    (data_token, code, text) pairs seen in train, for the one-source check)."""
    token_of = tokens.sort("pair")["data_token"].rank("dense").cast(pl.Int64).to_numpy()
    pair = keyed["pair"].to_numpy()[train]
    per_token = _token_support(keyed["entity"].to_numpy()[train], pair, token_of)
    named = tokens.select("pair", "data_token", "code", "text", "bin", "text_unknown", "unknown")
    per_token = per_token.join(named, on="pair", how="left")
    in_train = np.bincount(pair, minlength=tokens.height)[tokens["pair"].to_numpy()] > 0
    seen = tokens.filter(pl.Series(in_train))
    sources = seen.group_by("data_token").agg(pl.struct("code", "text").n_unique().alias("sources"))
    per_token = per_token.join(sources, on="data_token", how="left").select(
        "data_token",
        "code",
        "text",
        "bin",
        "text_unknown",
        "unknown",
        "count",
        "entities",
        "holders",
        "sources",
    )
    return per_token, seen.select("data_token", "code", "text")


def distinct_sorted(keys: np.ndarray, size: int, dense_below: int = DENSE_HELD) -> np.ndarray:
    """The distinct values of `keys` (int64, each in [0, size)), ascending: marked in a
    boolean array where the range is small (a partition's tokens times its entities;
    x20: 20 -> 3 ms per partition), else hashed and sorted."""
    if size <= max(dense_below, 16 * len(keys)):
        marked = np.zeros(size, dtype=bool)
        marked[keys] = True
        return np.flatnonzero(marked)
    return np.sort(pl.Series(keys, dtype=pl.Int64).unique().to_numpy())


def _token_support(entity: np.ndarray, pair: np.ndarray, token_of: np.ndarray) -> pl.DataFrame:
    """Per token of the train rows (`entity` run ids, in runs; `pair` numbers; each
    pair's token number `token_of`): the pair of its first row, its count, its
    distinct entities and the first HOLDERS_KEPT + 1 of them (`holders_of`), in numpy
    on integer keys rather than a grouping with a distinct count and a list per token."""
    token = token_of[pair]
    first = pl.Series(token).arg_unique().to_numpy()
    found = token[first]
    count = np.bincount(token, minlength=int(token_of.max(initial=0)) + 1)
    width = int(entity.max(initial=0)) + 1
    # Distinct (token, entity), sorted by token then entity.
    held = distinct_sorted(token * width + entity, len(count) * width)
    held_token, held_entity = held // width, held % width
    entities = np.bincount(held_token, minlength=len(count))
    starts = np.concatenate(([0], np.cumsum(entities)[:-1]))
    kept = np.arange(len(held)) - starts[held_token] <= HOLDERS_KEPT
    holders = (
        pl.DataFrame({"token_id": held_token[kept], "holders": held_entity[kept]})
        .group_by("token_id", maintain_order=True)
        .agg("holders")
    )
    per_token = pl.DataFrame(
        {
            "token_id": found,
            "pair": pair[first],
            "count": count[found],
            "entities": entities[found],
        },
        schema={"token_id": pl.Int64, "pair": pl.Int64, "count": pl.Int64, "entities": pl.Int64},
    )
    return per_token.join(holders, on="token_id", how="left")


@dataclass(frozen=True)
class VocabularyFrames:
    """A vocabulary's strings as polars columns, made once per vocabulary in a process
    for the encode stage's lookups (from Python lists they cost more than the lookups:
    x20, 0.12 CPU us per row)."""

    tokens: pl.Series  # every token, in id order
    ids: pl.Series
    known: pl.DataFrame  # fitting.known_sources
    # Lookups by hash (None if two tokens share one) and, per id, whether it is a data token.
    index: TokenIndex | None
    is_data_token: np.ndarray


_FRAMES: dict[int, tuple[Vocabulary, VocabularyFrames]] = {}


def vocabulary_frames(vocab: Vocabulary) -> VocabularyFrames:
    """`VocabularyFrames` of `vocab`, kept for the last vocabulary seen."""
    kept = _FRAMES.get(id(vocab))
    if kept is not None and kept[0] is vocab:
        return kept[1]
    tokens = pl.Series(list(vocab.token_to_id), dtype=pl.String)
    ids = pl.Series(list(vocab.token_to_id.values()), dtype=pl.Int64)
    is_data_token = np.zeros(len(vocab.token_to_id), dtype=bool)
    is_data_token[[vocab.token_to_id[t] for t in vocab.data_tokens]] = True
    frames = VocabularyFrames(
        tokens=tokens,
        ids=ids,
        known=known_sources(vocab.data_tokens),
        index=TokenIndex.build(tokens, ids),
        is_data_token=is_data_token,
    )
    _FRAMES.clear()
    _FRAMES[id(vocab)] = (vocab, frames)
    return frames


def pair_ids(vocab: Vocabulary, pairs: pl.DataFrame) -> np.ndarray:
    """Each pair's id: its data token's, else its code's text unknown's, else its kind's
    unknown's, else [UNK]'s (the lookup of `Vocabulary.encode_token_frame`)."""
    found = pairs.select(
        pl.coalesce(
            *(
                _ids_of(vocab, pairs[column])
                for column in ("data_token", "text_unknown", "unknown")
            ),
            pl.lit(UNK_ID, pl.Int64),
        )
    )
    return found.to_series().to_numpy()


def _ids_of(vocab: Vocabulary, strings: pl.Series) -> pl.Series:
    """Each string's token id in `vocab` (Int64), null where it is no token."""
    frames = vocabulary_frames(vocab)
    if frames.index is not None:
        return frames.index.ids_of(strings)
    return strings.replace_strict(frames.tokens, frames.ids, default=None, return_dtype=pl.Int64)


def pair_fate_counts(vocab: Vocabulary, pairs: pl.DataFrame) -> dict[str, int]:
    """What became of the texts and numeric values of one partition's rows (`pairs`
    with the rows of each pair, `rows`): `text_values.fate_counts`."""
    frames = vocabulary_frames(vocab)
    data_ids = _ids_of(vocab, pairs["data_token"])
    in_token = pl.Series(frames.is_data_token[data_ids.fill_null(0).to_numpy()]) & (
        data_ids.is_not_null()
    )
    in_text_unknown = _ids_of(vocab, pairs["text_unknown"]).is_not_null()
    return fate_counts(
        pairs["text_fate"],
        pairs["value_fate"],
        in_token,
        in_text_unknown,
        pairs["rows"].cast(pl.Int64),
    )


def _layout_codes(scheme: TokenScheme) -> tuple[np.ndarray, np.ndarray | None, int]:
    """The provisional ids of `token_layout`: the specials keep their ids, then come the
    time-gap tokens, the value tokens by bin (separate mode; bin 0 never used), then
    the pairs (`pair_base` + pair number)."""
    gaps = scheme.time_gap_tokens()
    first = len(SPECIAL_TOKENS)
    time_codes = np.arange(first, first + (len(gaps.tokens) if gaps is not None else 0))
    value_codes = None
    if scheme.value_mode == "separate":
        value_codes = np.arange(len(time_codes), len(time_codes) + scheme.value_bins + 1) + first
    pair_base = first + len(time_codes) + (len(value_codes) if value_codes is not None else 0)
    return time_codes, value_codes, pair_base


def token_layout(keyed: pl.DataFrame, scheme: TokenScheme) -> EncodedSequences:
    """A partition's sequences (`keyed_rows`' rows) laid out before the vocabulary
    exists: `ids` are provisional (`_layout_codes`), turned into token ids by one
    gather through `layout_table` once the vocabulary is fitted, so the encode stage
    does not read the rows again."""
    time_codes, value_codes, pair_base = _layout_codes(scheme)
    pair = keyed["pair"].to_numpy().astype(np.int64) + pair_base
    return assemble_sequences(keyed, pair, scheme.time_gap_tokens(), time_codes, value_codes)


def layout_table(vocab: Vocabulary, pairs: pl.DataFrame) -> np.ndarray:
    """Each provisional id's token id in `vocab` (`pairs` sorted by pair; the time-gap
    and value ids as `Vocabulary.encode_token_frame` makes them), in its dtype."""
    gaps = vocab.scheme.time_gap_tokens()
    # A corpus written before the long-gap token existed has no id for it.
    tokens = gaps.tokens if gaps is not None else []
    parts = [
        np.arange(len(SPECIAL_TOKENS)),
        np.array([vocab.token_to_id.get(t, UNK_ID) for t in tokens], dtype=np.int64),
    ]
    if vocab.scheme.value_mode == "separate":
        bins = range(1, vocab.scheme.value_bins + 1)
        parts.append(np.array([UNK_ID] + [vocab.token_to_id[value_token(k)] for k in bins]))
    parts.append(pair_ids(vocab, pairs))
    return np.concatenate(parts).astype(vocab.token_dtype)


def summed_fates(parts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """The partitions' `pair_fate_counts` added up (the manifest's `values`)."""
    total: dict[str, int] = {}
    for part in parts:
        for name, count in part.items():
            total[name] = total.get(name, 0) + count
    return total
