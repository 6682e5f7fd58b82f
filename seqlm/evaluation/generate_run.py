"""Sampling from a trained run as one call: the run's model and corpus, the prompts, the
samples, and the files (`seqlm generate`).

`generate_from_run` opens the run and its corpus (checked to match), builds the prompts
(token strings, corpus sequence prefixes, or just `[BOS]`), samples `n_samples` per
prompt, and, when given a folder, writes `generations.jsonl`, `generations.txt` and, for a
MEDS corpus, `meds/`: the samples as a MEDS dataset (`seqlm.export.meds_generated`: each
sample a subject holding its prompt's history and continuation, mapped back to the prompt's
subject and prediction time), which ACES and MEDS tools read as any MEDS dataset. The
folder is locked against other seqlm writers from before the first sample until the last
file is written; `meds/` is built beside it and moved into place, replacing only a `meds/`
that seqlm wrote.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from seqlm.corpus import load_corpus
from seqlm.corpus.store import Corpus
from seqlm.errors import ConfigError
from seqlm.evaluation.generate import (
    Generation,
    GenerationOptions,
    SamplingOptions,
    conditioning_prefix,
    generate,
    generation_records,
    generation_text,
    prompt_from_sequence,
    prompt_from_tokens,
    time_token_seconds,
)
from seqlm.evaluation.model_scorer import check_run_matches_corpus, load_run_model
from seqlm.evaluation.plausibility_report import (
    PlausibilityReport,
    check_generations,
    split_cuts,
    write_report,
)
from seqlm.evaluation.plausibility_rules import static_token_ids
from seqlm.evaluation.sampling_constraints import Grammar, SamplerConstraints
from seqlm.export.meds import corpus_static_kinds
from seqlm.export.meds_generated import PromptOrigin, write_generated_meds
from seqlm.outputs import (
    check_replaceable,
    move_into_place,
    new_staging,
    output_folder,
    output_lock,
    write_marker,
)
from seqlm.progress import Progress
from seqlm.vocabularies.time_gaps import parse_duration
from seqlm.vocabularies.vocabulary import Vocabulary

MEDS_FOLDER = "meds"  # the generated MEDS dataset, inside the output folder
MEDS_NAMES = ("data", "metadata")


@dataclass(frozen=True)
class GenerateSettings:
    """What to sample from a run: the prompts, how many samples, how they are drawn."""

    prompts: tuple[str, ...] = field(
        default=(), metadata={"help": "Prompts as space-separated token strings."}
    )
    sequences: tuple[int, ...] = field(
        default=(), metadata={"help": "Corpus seq_ids whose prefixes are prompts."}
    )
    prompt_length: int = field(
        default=1, metadata={"help": "Tokens of a sequence prompt, [BOS] included."}
    )
    n_samples: int = field(default=20, metadata={"help": "Samples per prompt."})
    max_tokens: int = field(default=256, metadata={"help": "Token budget per sample."})
    temperature: float = field(default=1.0, metadata={"help": "1 = the model's distribution."})
    top_k: int | None = field(default=None, metadata={"help": "Keep only the k most likely."})
    top_p: float | None = field(default=None, metadata={"help": "Nucleus sampling mass."})
    horizon: str | None = field(
        default=None, metadata={"help": "Stop at this much generated time, e.g. 30d, 12h."}
    )
    seed: int = field(default=0, metadata={"help": "Random seed."})
    use_cache: bool = field(default=True, metadata={"help": "Decode with the KV cache."})
    checkpoint: str = field(default="best", metadata={"help": "best, latest or step_N."})
    repeats: str = field(
        default="no-repeat",
        metadata={"help": "Same code twice at one time: allow, no-conflict or no-repeat."},
    )
    paired: bool = field(
        default=True, metadata={"help": "A discharge only while its admission is open."}
    )
    check_split: str | None = field(
        default=None,
        metadata={"help": "Compare the samples' plausibility with this split's (e.g. held_out)."},
    )

    def constraints(self) -> SamplerConstraints:
        return SamplerConstraints(repeats=self.repeats, paired=self.paired)

    def generation_options(self) -> GenerationOptions:
        return GenerationOptions(
            max_new_tokens=self.max_tokens,
            n_samples=self.n_samples,
            sampling=SamplingOptions(
                temperature=self.temperature, top_k=self.top_k, top_p=self.top_p
            ),
            time_horizon_s=parse_duration(self.horizon) if self.horizon else None,
            use_cache=self.use_cache,
            seed=self.seed,
        )


@dataclass
class GeneratedRun:
    """The samples of `generate_from_run`, their vocabulary, and the files written."""

    generations: list[Generation]
    vocab: Vocabulary
    written: dict[str, Path]
    plausibility: PlausibilityReport | None = None

    def text_lines(self) -> list[str]:
        """One line per sample: the prompt's tokens, ` | `, the sample's."""
        return generation_text(self.generations, self.vocab).splitlines()

    @property
    def tokens(self) -> int:
        return sum(len(s) for g in self.generations for s in g.samples)

    @property
    def seconds(self) -> float:
        return sum(g.seconds for g in self.generations)


def generate_from_run(
    run: Path,
    settings: GenerateSettings,
    *,
    corpus: Path | None = None,
    out: Path | None = None,
    progress: Progress | None = None,
) -> GeneratedRun:
    """Sample from `run`'s model (its corpus at the recorded path unless `corpus` is
    given) and write the samples into `out` when given."""
    loaded = load_run_model(run, settings.checkpoint)
    corpus_path = corpus or Path(loaded.config.get("corpus", {}).get("path", ""))
    if not corpus_path or not Path(corpus_path).is_dir():
        raise ConfigError("pass --corpus: the run's training corpus is not at its recorded path")
    opened = load_corpus(corpus_path)
    check_run_matches_corpus(loaded.config, opened)
    vocab = opened.vocabulary
    prompts = [prompt_from_tokens(vocab, text) for text in settings.prompts]
    conditioning = vocab.condition_ids
    prompts += [
        prompt_from_sequence(opened.sequence(i), settings.prompt_length, conditioning)
        for i in settings.sequences
    ]
    origins = [PromptOrigin() for _ in settings.prompts]
    origins += [PromptOrigin(int(i)) for i in settings.sequences]
    if not prompts and len(conditioning):
        raise ConfigError(
            "a conditioned corpus: every sequence opens with its conditioning tokens, which "
            f"are never generated; give them as --prompt (e.g. {vocab.tokens[conditioning[0]]!r}) "
            "or prompt with --sequence"
        )
    if not prompts:
        prompts, origins = [prompt_from_tokens(vocab, [])], [PromptOrigin()]  # unconditional
    options = settings.generation_options()
    seconds = time_token_seconds(vocab)  # for the horizon and each sample's generated time
    _check_can_run(opened, settings)
    sampler = _Sampler(loaded.model, vocab, options, seconds, progress)
    sampler.clinical(opened, settings.constraints())
    if out is None:
        generations = sampler.sample(prompts)
        return GeneratedRun(generations, vocab, {}, _check(generations, opened, settings))
    with output_lock(output_folder(out), "seqlm generate"):
        if is_meds_corpus(opened) and (out / MEDS_FOLDER).exists():
            check_replaceable(out / MEDS_FOLDER, MEDS_NAMES)  # before any sampling
        generations = sampler.sample(prompts)
        written = write_generations(generations, opened, out)
        if is_meds_corpus(opened):
            version = f"{settings.checkpoint} checkpoint, seed {settings.seed}"
            written["MEDS dataset"] = write_generated_meds_folder(
                generations, opened, origins, out / MEDS_FOLDER, Path(run).name, version
            )
        report = _check(generations, opened, settings)
        if report is not None:
            written.update(write_report(report, out))
        return GeneratedRun(generations, vocab, written, report)


def _check_can_run(corpus: Corpus, settings: GenerateSettings) -> None:
    """Refuse a check that cannot run before sampling, not after."""
    settings.constraints()  # refuses an unknown repeat rule
    if settings.check_split is None:
        return
    if not is_meds_corpus(corpus):
        raise ConfigError("--check reads clinical codes: it needs a corpus built from MEDS")
    if settings.check_split not in set(corpus.index["split"].unique().to_list()):
        raise ConfigError(f"--check: the corpus has no split {settings.check_split!r}")


def _check(
    generations: list[Generation], corpus: Corpus, settings: GenerateSettings
) -> PlausibilityReport | None:
    """The plausibility report when asked for (`seqlm generate --check`); only a
    clinical (MEDS) corpus has the codes it reads."""
    if settings.check_split is None:
        return None
    prompt_length = settings.prompt_length if settings.sequences else 1
    # The real continuations start after the conditioning tokens too (never generated).
    conditioning = corpus.vocabulary.condition_ids
    cuts = split_cuts(corpus, settings.check_split, prompt_length)
    if len(conditioning):
        cuts = [(i, max(n, conditioning_prefix(corpus.sequence(i), conditioning))) for i, n in cuts]
    return check_generations(
        generations,
        corpus,
        corpus_static_kinds(corpus.manifest),
        real_cuts=cuts,
        max_tokens=settings.max_tokens,
    )


class _Sampler:
    """`n_samples` samples per prompt; conditioning tokens are never drawn, nor, for a
    clinical corpus, static tokens (they belong in the prefix), and the clinical grammar
    constraints apply (`seqlm.evaluation.sampling_constraints`)."""

    def __init__(
        self,
        model: nn.Module,
        vocab: Vocabulary,
        options: GenerationOptions,
        seconds: np.ndarray | None,
        progress: Progress | None,
    ) -> None:
        self.model, self.options, self.seconds, self.progress = model, options, seconds, progress
        self.never = vocab.condition_ids
        self.vocab = vocab
        self.grammar: Grammar | None = None

    def clinical(self, corpus: Corpus, constraints: SamplerConstraints) -> None:
        """Static tokens banned and the grammar on, for a corpus built from MEDS."""
        if not is_meds_corpus(corpus):
            return
        static = static_token_ids(self.vocab, corpus_static_kinds(corpus.manifest))
        self.never = np.union1d(self.never, static)
        if constraints.active:
            self.grammar = Grammar.for_vocab(self.vocab, constraints)

    def sample(self, prompts: Sequence[np.ndarray]) -> list[Generation]:
        return [
            generate(
                self.model,
                p,
                self.options,
                time_seconds=self.seconds,
                progress=self.progress,
                never_ids=self.never,
                grammar=self.grammar,
            )
            for p in prompts
        ]


def write_generations(
    generations: Sequence[Generation], corpus: Corpus, out: Path
) -> dict[str, Path]:
    """generations.jsonl (ids and tokens) and generations.txt; returns {what: path}."""
    vocab = corpus.vocabulary
    records = generation_records(generations, vocab)
    tokens, text = out / "generations.jsonl", out / "generations.txt"
    with tokens.open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in records)
    text.write_text(generation_text(generations, vocab), encoding="utf-8")
    return {"tokens": tokens, "text": text}


def is_meds_corpus(corpus: Corpus) -> bool:
    return corpus.manifest.get("source", {}).get("adapter") == "meds"


def write_generated_meds_folder(
    generations: Sequence[Generation],
    corpus: Corpus,
    origins: Sequence[PromptOrigin],
    target: Path,
    run_name: str,
    version: str,
) -> Path:
    """The samples as a MEDS dataset at `target`, built in a staging folder beside it and
    moved into place (a `meds/` seqlm wrote before is replaced, nothing else is)."""
    staging = new_staging(target)
    try:
        name = f"seqlm generations of run {run_name}"
        write_generated_meds(generations, corpus, origins, staging, name=name, version=version)
        write_marker(staging, "generated MEDS dataset")
        move_into_place(staging, target, overwrite=True, own_names=MEDS_NAMES)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
