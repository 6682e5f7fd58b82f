"""Conditioning tokens: written as a prefix, known to the vocabulary, never a target."""

from __future__ import annotations

import numpy as np
import pytest

from seqlm.constants import IGNORE_INDEX
from seqlm.corpus import load_corpus
from seqlm.corpus.conditioning import condition_corpus, condition_token
from seqlm.corpus.loader import BatchLoader, LoaderConfig
from seqlm.errors import ConfigError
from seqlm.evaluation.baselines import evaluate_baselines
from seqlm.vocabularies.scheme import BOS_ID


def _two_birds(folder):
    from seqlm.ingest import ingest

    rng = np.random.default_rng(0)
    raw = folder / "raw"
    raw.mkdir(parents=True)
    paths = []
    for bird, motif in (("bird1", "abcd"), ("bird2", "dcba")):
        bouts = ["Y" + "i" + motif * int(rng.integers(2, 6)) for _ in range(60)]
        path = raw / f"{bird}_prelesion"
        path.write_text("".join(bouts), encoding="utf-8")
        paths.append(path)
    return ingest("birdsong-strings", paths, folder / "corpus")


@pytest.fixture(scope="module")
def conditioned(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cond")
    source = _two_birds(folder)
    return source, condition_corpus(source, folder / "conditioned", ["group"])


def test_each_sequence_gets_its_group_token_after_bos(conditioned):
    source, corpus = conditioned
    vocab = corpus.vocabulary
    assert vocab.tokens[: source.vocab_size] == source.vocabulary.tokens  # ids kept
    ids = vocab.condition_ids
    assert [vocab.tokens[i] for i in ids] == [
        condition_token("group", "bird1"),
        condition_token("group", "bird2"),
        condition_token("group", "other"),
    ]
    assert {vocab.roles[i] for i in ids} == {"condition"}
    for seq_id in (0, 70, len(corpus) - 1):
        old, new = source.sequence(seq_id), corpus.sequence(seq_id)
        group = corpus.index["group"][seq_id]
        assert new[0] == BOS_ID and vocab.tokens[new[1]] == f"[COND//group={group}]"
        np.testing.assert_array_equal(new[2:], old[1:])
    assert corpus.manifest["conditioning"]["attributes"] == ["group"]
    assert load_corpus(corpus.path).vocabulary.condition_ids.tolist() == ids.tolist()


def test_rare_values_share_the_other_token(tmp_path, conditioned):
    source, _ = conditioned
    corpus = condition_corpus(source, tmp_path / "c", ["group"], min_sequences=10_000)
    tokens = [corpus.vocabulary.tokens[i] for i in corpus.vocabulary.condition_ids]
    assert tokens == ["[COND//group=other]"]


def test_bad_columns_and_reconditioning_are_refused(tmp_path, conditioned):
    source, corpus = conditioned
    with pytest.raises(ConfigError, match="cannot condition on 'nope'"):
        condition_corpus(source, tmp_path / "a", ["nope"])
    with pytest.raises(ConfigError, match="cannot condition on 'entity'"):
        condition_corpus(source, tmp_path / "b", ["entity"])
    with pytest.raises(ConfigError, match="already a conditioned corpus"):
        condition_corpus(corpus, tmp_path / "c", ["group"])
    with pytest.raises(ConfigError, match="not empty"):
        condition_corpus(source, corpus.path, ["group"])


def test_the_loader_never_makes_a_conditioning_token_a_target(conditioned):
    _, corpus = conditioned
    loader = BatchLoader.from_corpus(corpus, "train", LoaderConfig(context=32, batch_size=8))
    seen = 0
    for _ in range(5):
        step = loader.next_step()
        for batch in step.micro:
            targets = batch.targets.numpy()
            assert not np.isin(targets, corpus.vocabulary.condition_ids).any()
            assert batch.n_targets == int((targets != IGNORE_INDEX).sum())
            seen += int(np.isin(batch.idx.numpy(), corpus.vocabulary.condition_ids).sum())
        assert step.global_targets == sum(b.n_targets for b in step.micro)
    assert seen > 0  # they are read as context


def test_baselines_are_not_scored_on_conditioning_tokens(conditioned):
    source, corpus = conditioned
    plain = evaluate_baselines(source)
    with_prefix = evaluate_baselines(corpus)
    for name, scores in with_prefix.scores.items():
        assert not np.isin(scores.token, corpus.vocabulary.condition_ids).any()
        assert len(scores) == len(plain.scores[name])  # the same targets as before


def test_times_follow_the_tokens_and_the_prefix_takes_the_first_time(tmp_path):
    from helpers.corpus_helpers import clinic_frame, ingested

    from seqlm.corpus import SplitConfig, build_corpus
    from seqlm.vocabularies import TokenScheme

    scheme = TokenScheme(time_tokens=True, time_gap_edges=("1h", "1d"), min_entities=1)
    source = build_corpus(ingested(clinic_frame()), tmp_path / "clinic", scheme, SplitConfig())
    corpus = condition_corpus(source, tmp_path / "cond", ["group"], min_sequences=2)
    assert corpus.times is not None
    for seq_id in range(len(corpus)):
        old, new = source.sequence_times(seq_id), corpus.sequence_times(seq_id)
        np.testing.assert_array_equal(new[2:], old[1:])
        assert new[1] == old[0]
    sites = {corpus.vocabulary.tokens[corpus.sequence(i)[1]] for i in range(len(corpus))}
    assert sites <= {f"[COND//group=site{k}]" for k in range(3)} | {"[COND//group=other]"}
