"""How much context a trained GPT uses: span and truncation sweeps, effective context length.

Two ways to give a model only w tokens of context, which are not the same thing:

- **span w** (`attention_span=w` at evaluation): every layer's queries see their own
  position and the w - 1 keys before it, but the sequence is fed whole, so stacked
  layers can relay information from about n_layer x (w - 1) tokens back;
- **truncation to w**: each target is predicted from its last w tokens only (the window
  starts there, with positions restarting at 0 and no `[BOS]`), so nothing further back
  can reach it. Targets whose whole prefix fits in w tokens are unchanged.

*Full context* is the model as trained (its own config spans): each sequence is fed from
its `[BOS]`; a sequence longer than the model's block size C is read by windows of C
inputs whose ends advance by `stride` (each target predicted once, by the first window
reaching it, so it sees at least C - stride + 1 tokens).

**Statistically effective context length** (after Morita et al. 2021): for truncation
length w, the per-token loss increase d_t = loss_w(t) - loss_full(t) (nats) is averaged
over tokens; the sequences are resampled with replacement (`bootstrap` resamples, fixed
`seed`), each resample giving the perplexity gain exp(mean d_t) - 1. The effective context
length is the smallest w of the sweep whose 5th percentile of that gain is below 1%
(`threshold`): the shortest context for which a perplexity gain of at least 1% cannot be
claimed with 95% confidence. None when no w of the sweep qualifies. It is computed per
group (e.g. per bird) with resamples drawn within the group, and over all sequences.

The code is in three modules: `context_batches` (windows and log-probabilities, shared
with head analysis and probes), `span_sweep` (the sweep and the bootstrap) and
`span_plots` (the figures). This module is their public face.
"""

from __future__ import annotations

from seqlm.analysis.context_batches import (
    WindowBatch,
    batch_log_probs,
    context_batches,
    target_log_probs,
)
from seqlm.analysis.span_plots import FIGURE_DPI, plot_effective_context, plot_loss_vs_window
from seqlm.analysis.span_sweep import (
    ALL_GROUPS,
    MODES,
    SPAN,
    TRUNCATION,
    SpanSweep,
    SpanSweepConfig,
    bootstrap_perplexity_gain,
    effective_context_length,
    span_sweep,
)

__all__ = [
    "ALL_GROUPS",
    "FIGURE_DPI",
    "MODES",
    "SPAN",
    "TRUNCATION",
    "SpanSweep",
    "SpanSweepConfig",
    "WindowBatch",
    "batch_log_probs",
    "bootstrap_perplexity_gain",
    "context_batches",
    "effective_context_length",
    "plot_effective_context",
    "plot_loss_vs_window",
    "span_sweep",
    "target_log_probs",
]
