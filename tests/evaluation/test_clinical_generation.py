"""The clinical sampler: static tokens never generated, and the grammar constraints
(one value per code at one time, a discharge only after its admission), on the real
MIMIC-IV demo vocabulary with tiny models whose logits favour the forbidden tokens; and
`seqlm generate --check` through a subprocess."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.cli_helpers import run_seqlm
from helpers.clinical_run import favouring_gpt, mimic_demo_corpus
from helpers.eval_fixtures import write_run

from seqlm.errors import ConfigError
from seqlm.evaluation.generate import GenerationOptions, generate
from seqlm.evaluation.generate_run import GenerateSettings, generate_from_run
from seqlm.evaluation.plausibility_rules import static_token_ids, token_code
from seqlm.evaluation.sampling_constraints import Grammar, SamplerConstraints
from seqlm.export.meds import corpus_static_kinds
from seqlm.vocabularies.scheme import BOS_ID


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return mimic_demo_corpus(tmp_path_factory.mktemp("demo") / "corpus")


def ids_of(vocab, prefix: str) -> list[int]:
    return [i for i, t in enumerate(vocab.tokens) if t.startswith(prefix)]


def binned_code_tokens(vocab) -> tuple[int, int]:
    """Two tokens of one binned lab code (two of its value bins)."""
    by_code: dict[str, list[int]] = {}
    for token_id in range(len(vocab)):
        info = vocab.token_info(token_id)
        if info.role == "event" and info.bin is not None and info.code.startswith("LAB//"):
            by_code.setdefault(info.code, []).append(token_id)
    first, second, *_ = next(ids for ids in by_code.values() if len(ids) >= 2)
    return first, second


def test_static_tokens_are_never_generated_even_when_favoured(demo, tmp_path) -> None:
    vocab = demo.vocabulary
    static = static_token_ids(vocab, corpus_static_kinds(demo.manifest))
    assert {vocab.tokens[i].split("//")[0] for i in static} == {"GENDER", "AGE"}
    favoured = {int(i): 20.0 for i in static}
    model = favouring_gpt(len(vocab), favoured)
    options = GenerationOptions(max_new_tokens=12, n_samples=4, seed=1)
    unbanned = generate(model, [BOS_ID], options)
    assert all(set(s.tolist()) <= set(favoured) for s in unbanned.samples)  # the control
    write_run(tmp_path / "run", model, demo)
    settings = GenerateSettings(n_samples=4, max_tokens=12, seed=1)
    result = generate_from_run(tmp_path / "run", settings, corpus=demo.path)
    generated = np.concatenate(result.generations[0].samples)
    assert generated.size > 0
    assert not np.isin(generated, static).any()


def test_one_value_per_code_and_time_step(demo) -> None:
    vocab = demo.vocabulary
    first, second = binned_code_tokens(vocab)
    time_token = ids_of(vocab, "[TIME//")[0]
    model = favouring_gpt(len(vocab), {first: 14.0, second: 14.0, time_token: 13.0})
    options = GenerationOptions(max_new_tokens=60, n_samples=6, seed=0)
    rules = {
        "allow": SamplerConstraints(repeats="allow", paired=False),
        "no-conflict": SamplerConstraints(repeats="no-conflict", paired=False),
        "no-repeat": SamplerConstraints(repeats="no-repeat", paired=False),
    }
    steps: dict[str, list[list[int]]] = {}
    for name, constraints in rules.items():
        grammar = Grammar.for_vocab(vocab, constraints)
        generation = generate(model, [BOS_ID], options, grammar=grammar)
        steps[name] = []
        for sample in generation.samples:
            step: list[int] = []
            for token_id in sample.tolist():
                if token_id == time_token:
                    steps[name].append(step)
                    step = []
                else:
                    step.append(token_id)
            steps[name].append(step)
    assert any({first, second} <= set(step) for step in steps["allow"])  # conflicts happen
    assert not any({first, second} <= set(step) for step in steps["no-conflict"])
    assert any(len(step) > len(set(step)) for step in steps["no-conflict"])  # exact repeats
    assert all(sum(t in (first, second) for t in step) <= 1 for step in steps["no-repeat"])


def test_a_discharge_only_while_its_admission_is_open(demo) -> None:
    vocab = demo.vocabulary
    admissions = ids_of(vocab, "ICU_ADMISSION//")
    discharges = ids_of(vocab, "ICU_DISCHARGE//")
    assert all(token_code(vocab, d).startswith("ICU_DISCHARGE//") for d in discharges)
    time_token = ids_of(vocab, "[TIME//")[0]
    model = favouring_gpt(len(vocab), {**{d: 14.0 for d in discharges}, time_token: 12.0})
    options = GenerationOptions(max_new_tokens=20, n_samples=5, seed=0)
    paired = Grammar.for_vocab(vocab, SamplerConstraints(repeats="allow", paired=True))
    closed = generate(model, [BOS_ID], options, grammar=paired, never_ids=admissions)
    assert not np.isin(np.concatenate(closed.samples), discharges).any()
    alone = generate(model, [BOS_ID], options, never_ids=admissions)
    assert np.isin(np.concatenate(alone.samples), discharges).mean() > 0.9
    prompt = [BOS_ID, admissions[0], time_token]
    opened = generate(model, prompt, options, grammar=paired, never_ids=admissions)
    for sample in opened.samples:  # one discharge closes the one stay, then no more
        assert np.isin(sample, discharges).sum() == 1


def test_an_unknown_repeat_rule_is_refused() -> None:
    with pytest.raises(ConfigError, match="repeats must be one of"):
        SamplerConstraints(repeats="never")


@pytest.mark.slow
def test_generate_check_prints_the_table_and_writes_the_report(demo, tmp_path) -> None:
    vocab = demo.vocabulary
    time_token = ids_of(vocab, "[TIME//")[0]
    first, second = binned_code_tokens(vocab)
    model = favouring_gpt(len(vocab), {first: 5.0, second: 5.0, time_token: 4.0})
    run = write_run(tmp_path / "run", model, demo)
    held_out = demo.index.filter(demo.index["split"] == "held_out")["seq_id"][0]
    out = tmp_path / "gen"
    args = ["generate", str(run), "--corpus", str(demo.path), "--sequence", str(held_out)]
    args += ["--prompt-length", "20", "--n", "3", "--max-tokens", "30", "--check", "--out"]
    done = run_seqlm(*args, str(out))
    assert done.returncode == 0, done.stderr
    assert "plausibility: generated beside the real held_out continuations" in done.stdout
    for header in ("measure", "generated", "real", "gen/real", "within 2x"):
        assert header in done.stdout
    assert "same-time repeats / row" in done.stdout
    report = json.loads((out / "plausibility.json").read_text())
    assert report["generated"]["scored_rows"] > 0 and report["real"]["scored_rows"] > 0
    assert [row["measure"] for row in report["table"]][:2] == [
        "same-time repeats / row",
        "conflicting values / row",
    ]
    assert (out / "plausibility.png").stat().st_size > 0


@pytest.mark.slow
def test_generate_check_needs_a_clinical_corpus_and_a_known_split(demo, tmp_path) -> None:
    model = favouring_gpt(len(demo.vocabulary), {})
    run = write_run(tmp_path / "run", model, demo)
    args = ["generate", str(run), "--corpus", str(demo.path), "--n", "1", "--max-tokens", "2"]
    done = run_seqlm(*args, "--check", "--check-split", "nowhere")
    assert done.returncode == 2
    assert "no split 'nowhere'" in done.stderr + done.stdout
    done = run_seqlm(*args, "--repeats", "sometimes")
    assert done.returncode == 2
    assert "repeats must be one of" in done.stderr + done.stdout


def test_the_prompt_state_equals_reading_the_prompt_token_by_token(demo) -> None:
    vocab = demo.vocabulary
    grammar = Grammar.for_vocab(vocab, SamplerConstraints())
    prompt = demo.sequence(0)[:400]
    assert (grammar.tables.pair_of_id[prompt] >= 0).any()  # admissions, discharges
    read = grammar.start(prompt[:1], 1, torch.device("cpu"))
    for token_id in prompt[1:].tolist():
        read.update(torch.tensor([token_id]))
    at_once = grammar.start(prompt, 2, torch.device("cpu"))
    for name in ("seen_group", "seen_token", "open"):
        assert torch.equal(getattr(at_once, name)[1:], getattr(read, name)), name
