"""Sampling sequences from a trained model, with or without a KV cache.

Defaults matter here: sampling is from the model's full distribution (temperature 1, no
top-k, no top-p), because any truncation biases every frequency estimated from samples
(a silent top-k makes rare events impossible). Temperature, top-k and top-p are there
when asked for; temperature 0 is greedy decoding.

A prompt (its ids, starting with `[BOS]`) is encoded once and sampled `n_samples` times
as one batch, through the model's own forward with a KV cache (`seqlm.model.KVCache`);
`sample_trajectories` is the same loop for many trajectories of one prompt (zero-shot
prediction), stopping at any of a set of ids. A sample stops at `[EOS]` (kept), at the token budget, or, for clinical
corpora, when the time its time-gap tokens add up to would pass a horizon (that time
token is not kept, so every generated event lies inside the horizon).

Contexts longer than the model's block size C slide in jumps of `window_shift` tokens
(s, default C // 2): the model sees the tokens from position ceil((L - C) / s) * s on,
always between C - s + 1 and C of them. This depends only on the length L, so the
cached path (which re-encodes the window when it jumps) and the plain path compute the
same logits and agree token for token at temperature 0.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl
import torch
from torch import Tensor, nn

from seqlm.errors import ConfigError, InputError
from seqlm.evaluation.decoder import Decoder, model_device
from seqlm.evaluation.decoder import window_start as window_start  # re-exported
from seqlm.evaluation.sampling_constraints import Grammar, TrajectoryGrammar
from seqlm.export.meds import (
    DEFAULT_START,
    DEFAULT_STATIC_KINDS,
    TrajectoryExporter,
    rows_frame,
    time_token_microseconds,
)
from seqlm.progress import Progress, ensure_progress
from seqlm.vocabularies.scheme import BOS_ID, EOS_ID
from seqlm.vocabularies.vocabulary import Vocabulary

STOP_EOS = "eos"
STOP_BUDGET = "budget"
STOP_HORIZON = "horizon"


@dataclass(frozen=True)
class SamplingOptions:
    """How the next token is drawn. `temperature=0` is greedy (argmax); `top_k` keeps
    the k most probable ids (and any tied with the k-th); `top_p` keeps the fewest most
    probable ids whose probabilities sum to at least p. Both apply after temperature."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ConfigError(f"temperature must be a number >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class GenerationOptions:
    """`max_new_tokens` is the budget per sample; `time_horizon_s` (needs time tokens)
    stops a sample before a time token would take it past that many seconds."""

    max_new_tokens: int = 256
    n_samples: int = 1
    sampling: SamplingOptions = SamplingOptions()
    stop_at_eos: bool = True
    time_horizon_s: float | None = None
    use_cache: bool = True
    window_shift: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.n_samples < 1:
            raise ConfigError(f"n_samples must be at least 1, got {self.n_samples}")
        if self.time_horizon_s is not None and not self.time_horizon_s > 0:
            raise ConfigError(f"the time horizon must be positive, got {self.time_horizon_s}")
        if self.window_shift is not None and self.window_shift < 1:
            raise ConfigError(f"window_shift must be at least 1, got {self.window_shift}")


@dataclass
class Generation:
    """The samples of one prompt. `samples[i]` holds the generated ids only (the prompt
    is `prompt`); `elapsed_s[i]` is the time its time tokens add up to (0 when `generate`
    was given no `time_seconds`)."""

    prompt: np.ndarray
    samples: list[np.ndarray]
    stop_reasons: list[str]
    elapsed_s: np.ndarray
    cached: bool
    seconds: float

    def sequences(self) -> list[np.ndarray]:
        """Prompt + sample, one array per sample."""
        return [np.concatenate([self.prompt, sample]) for sample in self.samples]


# ----- one step's distribution -----------------------------------------------------------


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Logits with the ids outside the top-k / top-p set at -inf (rows independent)."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        probs = torch.softmax(logits.float(), dim=-1)
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        # Keep an id when the mass strictly before it is below p: the smallest prefix
        # reaching p, and never an empty set (the top id has nothing before it).
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        drop_sorted = before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_token_probs(logits: Tensor, sampling: SamplingOptions) -> Tensor:
    """The distribution a sample is drawn from (rows of `logits`); one-hot on the argmax
    at temperature 0."""
    if sampling.temperature == 0:
        return _argmax_one_hot(logits)
    scaled = logits.float() / sampling.temperature
    return torch.softmax(filter_logits(scaled, sampling.top_k, sampling.top_p), dim=-1)


def _argmax_one_hot(logits: Tensor) -> Tensor:
    chosen = logits.argmax(dim=-1, keepdim=True)
    return torch.zeros_like(logits, dtype=torch.float32).scatter(-1, chosen, 1.0)


def choose_next(
    logits: Tensor, sampling: SamplingOptions, generator: torch.Generator | None = None
) -> Tensor:
    """One id per row of (B, V) logits."""
    if sampling.temperature == 0:
        return logits.argmax(dim=-1)
    probs = next_token_probs(logits, sampling)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# ----- the loop ------------------------------------------------------------------------------


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt: Sequence[int] | np.ndarray,
    options: GenerationOptions | None = None,
    *,
    time_seconds: np.ndarray | None = None,
    progress: Progress | None = None,
    never_ids: Sequence[int] | np.ndarray = (),
    grammar: Grammar | None = None,
) -> Generation:
    """Sample `options.n_samples` continuations of `prompt` (ids, `[BOS]` first).

    `time_seconds[id]` is the time each token adds (0 for all but time tokens; see
    `time_token_seconds`), needed for `time_horizon_s` and for `elapsed_s`. `never_ids` are never sampled
    (conditioning tokens; static ones of clinical corpora); `grammar` bans what its rules
    rule out given the sample so far (`seqlm.evaluation.sampling_constraints`). The
    model is put in eval mode for the call and restored after.
    """
    options = options or GenerationOptions()
    ids = _prompt_ids(model, prompt)
    if options.time_horizon_s is not None and time_seconds is None:
        raise ConfigError("a time horizon needs the seconds each time token adds")
    device = model_device(model)
    step_seconds = None
    if options.time_horizon_s is not None:
        step_seconds = torch.as_tensor(np.asarray(time_seconds, dtype=np.float64), device=device)
    generator = torch.Generator(device=device).manual_seed(options.seed)
    was_training = model.training
    model.eval()
    began = time.perf_counter()
    try:
        decoder = Decoder(model, options.use_cache, options.window_shift)
        prompt_ids = torch.as_tensor(ids, device=device)[None]
        never = torch.as_tensor(np.asarray(never_ids, dtype=np.int64), device=device)
        stop = torch.tensor([EOS_ID] if options.stop_at_eos else [], dtype=torch.long)
        samples, reasons, elapsed = _sample_loop(
            decoder,
            prompt_ids,
            options,
            step_seconds,
            generator,
            ensure_progress(progress),
            never,
            stop.to(device),
            grammar.start(ids, options.n_samples, device) if grammar is not None else None,
        )
    finally:
        model.train(was_training)
    if time_seconds is not None and step_seconds is None:  # no horizon: sum the time tokens
        seconds = np.asarray(time_seconds, dtype=np.float64)
        elapsed = np.array([seconds[sample].sum() for sample in samples], dtype=np.float64)
    return Generation(
        prompt=ids,
        samples=samples,
        stop_reasons=reasons,
        elapsed_s=elapsed,
        cached=decoder.cached,
        seconds=time.perf_counter() - began,
    )


def _sample_loop(
    decoder: Decoder,
    prompt: Tensor,
    options: GenerationOptions,
    step_seconds: Tensor | None,
    generator: torch.Generator | None,
    progress: Progress,
    never: Tensor | None = None,
    stop_ids: Tensor | None = None,
    grammar: TrajectoryGrammar | None = None,
) -> tuple[list[np.ndarray], list[str], np.ndarray]:
    """Sample every row until it stops (a stop id, kept; the budget; the horizon), with
    finished rows dropped from the batch (and the cache, and the grammar's state)."""
    n = options.n_samples
    device = prompt.device
    rows = prompt.expand(n, -1)
    active = torch.arange(n, device=device)  # sample number of each row still running
    produced = torch.zeros(n, options.max_new_tokens, dtype=torch.long, device=device)
    counts = torch.zeros(n, dtype=torch.long, device=device)
    clock = torch.zeros(n, dtype=torch.float64, device=device)
    reasons = [STOP_BUDGET] * n
    progress.start("generating (tokens)", total=options.max_new_tokens)
    logits = decoder.first(prompt, n)
    for step in range(options.max_new_tokens):
        if never is not None and never.numel():
            logits = logits.index_fill(-1, never, float("-inf"))
        logits = grammar.mask(logits) if grammar is not None else logits
        chosen = choose_next(logits, options.sampling, generator)
        if grammar is not None:
            grammar.update(chosen)
        stopped = torch.zeros_like(chosen, dtype=torch.bool)
        kept = torch.ones_like(stopped)
        if step_seconds is not None:
            later = clock[active] + step_seconds[chosen]
            past = later > options.time_horizon_s
            kept = ~past
            stopped |= past
            clock[active] = torch.where(past, clock[active], later)
        produced[active[kept], step] = chosen[kept]
        counts[active[kept]] += 1
        if stop_ids is not None and stop_ids.numel():
            stopped |= kept & torch.isin(chosen, stop_ids)
        for row in torch.nonzero(stopped).flatten().tolist():
            reasons[int(active[row])] = STOP_EOS if bool(kept[row]) else STOP_HORIZON
        progress.advance(1)
        still = torch.nonzero(~stopped).flatten()
        if still.numel() == 0 or step == options.max_new_tokens - 1:
            break
        rows = torch.cat([rows, chosen[:, None]], dim=1)
        if still.numel() < active.numel():
            rows, active = rows[still], active[still]
            decoder.keep_rows(still)
            if grammar is not None:
                grammar.keep_rows(still)
        logits = decoder.next(rows)
    progress.finish()
    counts_np = counts.cpu().numpy()
    produced_np = produced.cpu().numpy()
    samples = [produced_np[i, : counts_np[i]].copy() for i in range(n)]
    return samples, reasons, clock.cpu().numpy()


def _prompt_ids(model: nn.Module, prompt: Sequence[int] | np.ndarray) -> np.ndarray:
    """The prompt as int64 ids, checked against the model's vocabulary."""
    ids = np.asarray(prompt, dtype=np.int64).reshape(-1)
    if ids.size == 0:
        raise ConfigError("the prompt is empty; it needs at least [BOS]")
    vocab_size = int(model.config.vocab_size)
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise ConfigError(f"prompt ids must lie in 0..{vocab_size - 1}")
    return ids


@torch.no_grad()
def sample_trajectories(
    model: nn.Module,
    prompt: Sequence[int],
    n: int,
    max_new_tokens: int,
    *,
    stop_token_ids: Sequence[int] = (),
    banned_token_ids: Sequence[int] = (),
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """`n` continuations of one prompt, sampled as one batch with the KV cache.

    Each is drawn from the model's full distribution (at `temperature`; no top-k or
    top-p), so frequencies over trajectories estimate the model's probabilities. A row
    stops after a token of `stop_token_ids` (kept as its last token) or at
    `max_new_tokens`, and leaves the batch; ids in `banned_token_ids` (e.g. condition or
    static tokens) are never sampled. Returns the generated ids only (not the prompt), in
    sample order. `generator` (on the model's device) makes the draw reproducible; None
    uses torch's global generator. Contexts longer than the block size slide as in
    `generate`. The model runs in eval mode and its mode is restored after.
    """
    if n < 1:
        raise ConfigError(f"n must be at least 1, got {n}")
    options = GenerationOptions(
        max_new_tokens=max_new_tokens,
        n_samples=n,
        sampling=SamplingOptions(temperature=temperature),
        stop_at_eos=False,
    )
    ids = _prompt_ids(model, prompt)
    device = model_device(model)
    stop = torch.as_tensor(np.asarray(stop_token_ids, dtype=np.int64), device=device)
    banned = torch.as_tensor(np.asarray(banned_token_ids, dtype=np.int64), device=device)
    was_training = model.training
    model.eval()
    try:
        decoder = Decoder(model, use_cache=True, shift=None)
        prompt_ids = torch.as_tensor(ids, device=device)[None]
        samples, _, _ = _sample_loop(
            decoder, prompt_ids, options, None, generator, ensure_progress(None), banned, stop
        )
    finally:
        model.train(was_training)
    return [sample.tolist() for sample in samples]


# ----- prompts and what a sample means -----------------------------------------------------


def conditioning_prefix(sequence: np.ndarray, condition_ids: Sequence[int] | np.ndarray) -> int:
    """How many tokens open `sequence` before its first event: `[BOS]` and the
    conditioning tokens right after it (`[COND//group=bird3]`, context only)."""
    ids = np.asarray(sequence, dtype=np.int64)
    opening = np.isin(ids[1:], np.asarray(condition_ids, dtype=np.int64))
    return 1 + (int(np.argmin(opening)) if not opening.all() else int(opening.size))


def prompt_from_sequence(
    sequence: np.ndarray,
    length: int | None = None,
    condition_ids: Sequence[int] | np.ndarray = (),
) -> np.ndarray:
    """The first `length` tokens of a corpus sequence (at least `[BOS]`), never its
    `[EOS]`: a prompt to be continued. `None` gives just `[BOS]`. The sequence's
    conditioning tokens (`condition_ids` after `[BOS]`) are always kept: a model never
    generates them, so a prompt without them would be one it never read."""
    ids = np.asarray(sequence, dtype=np.int64)
    if ids.size == 0 or ids[0] != BOS_ID:
        raise ConfigError("a corpus sequence starts with [BOS]; this one does not")
    if length is not None and length < 1:
        raise ConfigError(f"a prompt length must be at least 1, got {length}")
    cut = max(1 if length is None else length, conditioning_prefix(ids, condition_ids))
    cut = min(cut, ids.size)
    if ids[cut - 1] == EOS_ID:
        cut -= 1
    return ids[: max(cut, 1)].copy()


def prompt_from_tokens(vocab: Vocabulary, tokens: str | Sequence[str]) -> np.ndarray:
    """Ids of whitespace-separated token strings, with `[BOS]` put first when missing."""
    words = tokens.split() if isinstance(tokens, str) else list(tokens)
    ids = []
    for number, word in enumerate(words, start=1):
        if word not in vocab.token_to_id:
            raise InputError(f"token {word!r} is not in the vocabulary", column=f"token {number}")
        ids.append(vocab.token_to_id[word])
    if not ids or ids[0] != BOS_ID:
        ids.insert(0, BOS_ID)
    return np.asarray(ids, dtype=np.int64)


def time_token_seconds(vocab: Vocabulary) -> np.ndarray:
    """Seconds each id adds to the clock: a time-gap token its interval's centre (the
    last, open-ended one exactly its edge), as the MEDS export rebuilds times; others 0."""

    seconds = np.zeros(len(vocab), dtype=np.float64)
    for token, microseconds in time_token_microseconds(vocab).items():
        seconds[vocab.token_to_id[token]] = microseconds / 1e6
    return seconds


# ----- export --------------------------------------------------------------------------------


def generation_records(
    generations: Sequence[Generation], vocab: Vocabulary
) -> list[dict[str, object]]:
    """One JSON-ready record per sample: prompt number, sample number, stop reason,
    generated time, and the prompt and sample as ids and as token strings."""
    records: list[dict[str, object]] = []
    for number, generation in enumerate(generations):
        prompt_tokens = vocab.decode(generation.prompt)
        for sample_number, sample in enumerate(generation.samples):
            records.append(
                {
                    "prompt": number,
                    "sample": sample_number,
                    "stop_reason": generation.stop_reasons[sample_number],
                    "generated_seconds": float(generation.elapsed_s[sample_number]),
                    "prompt_ids": generation.prompt.tolist(),
                    "ids": sample.tolist(),
                    "prompt_tokens": prompt_tokens,
                    "tokens": vocab.decode(sample),
                }
            )
    return records


def generation_text(generations: Sequence[Generation], vocab: Vocabulary) -> str:
    """Plain text, one sample per line: the prompt's tokens, ` | `, the sample's."""
    lines = []
    for record in generation_records(generations, vocab):
        prompt = " ".join(record["prompt_tokens"])  # type: ignore[arg-type]
        lines.append(f"{prompt} | {' '.join(record['tokens'])}")  # type: ignore[arg-type]
    return "\n".join(lines) + ("\n" if lines else "")


def generations_to_meds(
    generations: Sequence[Generation],
    vocab: Vocabulary,
    *,
    static_kinds: Sequence[str] | None = None,
    start: datetime | None = None,
) -> pl.DataFrame:
    """MEDS rows of every sample (prompt + generation) through the corpus's MEDS exporter
    (`seqlm.export.meds`); subject ids number the samples 0, 1, ... in
    prompt order, and each starts at `start` (default the exporter's)."""

    exporter = TrajectoryExporter(vocab, static_kinds or DEFAULT_STATIC_KINDS)
    rows: list[tuple] = []
    subject = 0
    for generation in generations:
        for sequence in generation.sequences():
            rows.extend(exporter.rows(sequence, subject, start or DEFAULT_START))
            subject += 1
    return rows_frame(rows)
