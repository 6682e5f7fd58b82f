"""The privacy rule holds for every token written, measured from the corpus itself
(issue 20: `ICU_ADMISSION//[UNK]` was held by 4 train subjects, under the threshold 5)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from helpers.meds_data import meds_frame, t, write_meds
from helpers.shared_data import shared_path

from seqlm.corpus import load_corpus

# Roles that name no source data: specials, time-gap and separate-mode value tokens.
STRUCTURAL = {"special", "time", "value"}
# `[UNK]` is the coarsest unknown (a special token naming no kind, no code): nothing is
# above it to merge into, and it says only "an event" of whoever holds it.
COARSEST = "[UNK]"


def train_support(corpus) -> np.ndarray:
    """Distinct train entities holding each token id, counted from tokens.bin."""
    support = np.zeros(corpus.vocab_size, dtype=np.int64)
    per_entity: dict[str, set[int]] = {}
    for entity, offset, length in (
        corpus.split("train").select("entity", "offset", "length").iter_rows()
    ):
        per_entity.setdefault(entity, set()).update(
            np.unique(corpus.tokens[offset : offset + length]).tolist()
        )
    for ids in per_entity.values():
        support[list(ids)] += 1
    return support


def check_support(corpus) -> None:
    threshold = corpus.vocabulary.scheme.min_entities
    support = train_support(corpus)
    roles = corpus.vocabulary.roles
    low = [
        (token, int(support[i]))
        for i, token in enumerate(corpus.vocabulary.tokens)
        if roles[i] not in STRUCTURAL and token != COARSEST and 0 < support[i] < threshold
    ]
    assert low == []  # 0: a kind's unknown no train event became (names nobody)
    recorded = json.loads((corpus.path / "scheme.json").read_text())["support"]
    ids = corpus.vocabulary.token_to_id
    assert {token: int(support[ids[token]]) for token in recorded} == recorded


def ingest(source, out, *extra: str):
    subprocess.run(
        [sys.executable, "-m", "seqlm", "ingest", "meds", str(source), "--out", str(out), *extra],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return load_corpus(out)


def test_a_kind_unknown_needs_its_own_support(tmp_path):
    """30 subjects with ICU admissions, each of a code of its own except 4 sharing one
    rare code: the kind is common, its unknown is held by 30 subjects (fine); a second
    kind whose only merged codes belong to 3 subjects loses its unknown to [UNK]."""
    rows = []
    for s in range(30):
        rows += [
            (s, t(1), "LAB//common", 1.0, None),
            (s, t(2), f"ICU_ADMISSION//unit{s}", None, None),
        ]
        if s < 3:
            rows.append((s, t(3), f"TRANSFER//ward{s}", None, None))
        if s < 10:
            rows.append((s, t(4), "TRANSFER//shared", None, None))
    root = write_meds(tmp_path / "meds", {"0.parquet": meds_frame(rows)},
                      splits={s: "train" for s in range(30)})  # fmt: skip
    corpus = ingest(root, tmp_path / "corpus")
    tokens = set(corpus.vocabulary.tokens)
    assert "ICU_ADMISSION//[UNK]" in tokens  # 30 subjects hold it
    assert "TRANSFER//shared" in tokens
    assert "TRANSFER//[UNK]" not in tokens  # only 3 subjects' events become it
    check_support(corpus)


def test_mimic_demo_every_token_meets_the_threshold(tmp_path):
    corpus = ingest(
        shared_path("clinical", "mimic-iv-demo-meds"), tmp_path / "mimic", "--workers", "2"
    )
    check_support(corpus)
    assert "ICU_ADMISSION//[UNK]" not in corpus.vocabulary.tokens
