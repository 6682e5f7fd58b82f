"""load_corpus: zero-copy sequences and the checks that catch broken folders."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from helpers.corpus_helpers import clinic_frame, ingested

from seqlm.corpus import SplitConfig, build_corpus, load_corpus
from seqlm.errors import CorpusError
from seqlm.vocabularies import TokenScheme


@pytest.fixture(scope="module")
def corpus_path(tmp_path_factory):
    out = tmp_path_factory.mktemp("store") / "corpus"
    build_corpus(ingested(clinic_frame(12)), out, TokenScheme(), SplitConfig())
    return out


def test_sequences_are_views_into_the_mapped_file(corpus_path):
    corpus = load_corpus(corpus_path)
    assert isinstance(corpus.tokens, np.memmap)
    seq = corpus.sequence(3)
    assert np.shares_memory(seq, corpus.tokens)
    assert not seq.flags.owndata
    row = corpus.index.row(3, named=True)
    on_disk = np.fromfile(corpus_path / "tokens.bin", dtype=np.uint16)
    assert seq.tolist() == on_disk[row["offset"] : row["offset"] + row["length"]].tolist()
    assert np.shares_memory(corpus.sequence_times(3), corpus.times)


def test_split_and_lookup_errors(corpus_path):
    corpus = load_corpus(corpus_path)
    assert corpus.split("train").height + corpus.split("tuning").height + corpus.split(
        "held_out"
    ).height == len(corpus)
    assert set(corpus.split("train")["split"]) == {"train"}
    with pytest.raises(CorpusError, match="no split"):
        corpus.split("test")
    with pytest.raises(CorpusError, match="no sequence"):
        corpus.sequence(len(corpus))
    assert corpus.vocab_size == len(corpus.vocabulary)


def _copy(src, dst):
    dst.mkdir()
    for path in src.iterdir():
        (dst / path.name).write_bytes(path.read_bytes())
    return dst


def test_missing_and_inconsistent_files_are_reported(corpus_path, tmp_path):
    with pytest.raises(CorpusError, match="not a corpus folder"):
        load_corpus(tmp_path / "nothing")

    broken = _copy(corpus_path, tmp_path / "no_index")
    (broken / "index.parquet").unlink()
    with pytest.raises(CorpusError, match="index.parquet"):
        load_corpus(broken)

    short = _copy(corpus_path, tmp_path / "short")
    data = (short / "tokens.bin").read_bytes()
    (short / "tokens.bin").write_bytes(data[:-2])
    with pytest.raises(CorpusError, match="tokens.bin"):
        load_corpus(short)

    dtype = _copy(corpus_path, tmp_path / "dtype")
    manifest = json.loads((dtype / "manifest.json").read_text())
    manifest["token_dtype"] = "uint32"
    (dtype / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorpusError, match="token_dtype"):
        load_corpus(dtype)

    gaps = _copy(corpus_path, tmp_path / "gaps")
    index = pl.read_parquet(gaps / "index.parquet")
    index.with_columns(pl.col("offset") + 1).write_parquet(gaps / "index.parquet")
    with pytest.raises(CorpusError, match="index.parquet: does not match the checksum"):
        load_corpus(gaps)
    # Without checksums (a corpus written before they existed) the layout check holds.
    manifest = json.loads((gaps / "manifest.json").read_text())
    del manifest["files"]
    (gaps / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorpusError, match="offsets"):
        load_corpus(gaps)
