"""generate_from_run: the run's model and corpus, prompts, samples and files in one call,
checked against the step-by-step library calls on real finch song."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.eval_fixtures import small_finch_corpus, tiny_gpt, write_run

from seqlm.corpus.conditioning import condition_corpus
from seqlm.errors import ConfigError
from seqlm.evaluation.generate import generate, prompt_from_sequence
from seqlm.evaluation.generate_run import GenerateSettings, generate_from_run


@pytest.fixture(scope="module")
def finch_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("generate-run")
    corpus = small_finch_corpus(root / "corpus")
    model = tiny_gpt(vocab_size=corpus.vocab_size, block_size=32)
    write_run(root / "run", model, corpus)
    return corpus, root / "run", model


def test_samples_equal_the_library_calls_and_files_hold_them(finch_run, tmp_path) -> None:
    corpus, run, model = finch_run
    settings = GenerateSettings(sequences=(0,), prompt_length=3, n_samples=3, max_tokens=6)
    result = generate_from_run(run, settings, out=tmp_path / "gen")
    prompt = prompt_from_sequence(corpus.sequence(0), 3)
    expected = generate(
        model, prompt, settings.generation_options(), never_ids=corpus.vocabulary.condition_ids
    )
    (generation,) = result.generations
    assert np.array_equal(generation.prompt, prompt)
    assert [s.tolist() for s in generation.samples] == [s.tolist() for s in expected.samples]
    assert result.tokens == sum(len(s) for s in expected.samples)
    assert list(result.written) == ["tokens", "text"]  # no MEDS rows for a birdsong corpus
    records = [json.loads(line) for line in result.written["tokens"].open()]
    assert [r["ids"] for r in records] == [s.tolist() for s in expected.samples]
    assert result.written["text"].read_text().splitlines() == result.text_lines()


def test_unconditional_without_prompts_and_no_files_without_out(finch_run) -> None:
    corpus, run, _ = finch_run
    result = generate_from_run(run, GenerateSettings(n_samples=2, max_tokens=4), corpus=corpus.path)
    (generation,) = result.generations
    assert generation.prompt.tolist() == [corpus.vocabulary.token_to_id["[BOS]"]]
    assert len(generation.samples) == 2 and result.written == {}


def test_a_missing_corpus_is_named(finch_run, tmp_path) -> None:
    _, run, _ = finch_run
    with pytest.raises(ConfigError, match="pass --corpus"):
        generate_from_run(run, GenerateSettings(), corpus=tmp_path / "nowhere")


def test_a_conditioned_corpus_prompts_with_its_conditioning_tokens(tmp_path) -> None:
    """Issue 13 item 3: [COND] tokens are never generated; a sequence prompt keeps its
    own, and a prompt with none (which the model never read) is refused in words."""
    source = small_finch_corpus(tmp_path / "corpus", birds=(3, 4))
    corpus = condition_corpus(source, tmp_path / "conditioned", ["group"], min_sequences=1)
    model = tiny_gpt(vocab_size=corpus.vocab_size, block_size=32)
    write_run(tmp_path / "run", model, corpus)
    conditioning = corpus.vocabulary.condition_ids
    settings = GenerateSettings(sequences=(0,), prompt_length=1, n_samples=4, max_tokens=6)
    (generation,) = generate_from_run(tmp_path / "run", settings).generations
    assert generation.prompt.tolist() == corpus.sequence(0)[:2].tolist()
    assert np.isin(generation.prompt[1], conditioning)
    assert not any(np.isin(sample, conditioning).any() for sample in generation.samples)
    with pytest.raises(ConfigError, match="conditioned corpus"):
        generate_from_run(tmp_path / "run", GenerateSettings(n_samples=1, max_tokens=2))
    given = GenerateSettings(prompts=(corpus.vocabulary.tokens[conditioning[0]],), n_samples=1)
    (generation,) = generate_from_run(tmp_path / "run", given).generations
    assert generation.prompt.tolist() == [1, int(conditioning[0])]
