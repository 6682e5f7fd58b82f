"""Linear probes: what each layer of a trained GPT encodes about a label.

For every probed token (each non-special token of the chosen sequences; conditioning
tokens such as `[COND//group=bird3]` are context only, never probed, since they spell out
a sequence label) the residual
stream is read at its position in every layer (layer 0 = the embeddings entering block
0, layer i = the output of block i) by forward hooks, from the same full-context windows
the span analysis uses. A label is either token-level (`token_kind`: the token's event
family) or an index column broadcast to the tokens of its sequence (the bird `group`,
`condition`, a cohort or any user column).

A probe is a standardised multinomial logistic regression (scikit-learn). Accuracy is
measured by `GroupKFold` over entities, so no entity has tokens on both sides of a split
(no leakage from a bout or a patient into its own test set). The control task follows
Hewitt & Liang (2019): every token type (id) gets one random label, drawn from the
observed label distribution, and the same probe is trained on it; selectivity =
accuracy - control accuracy says how much of the accuracy the token identity alone, which
a probe can memorise, does not explain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import nn

from seqlm.analysis.context_batches import context_batches
from seqlm.analysis.figures import add_caution
from seqlm.errors import ConfigError
from seqlm.evaluation.metrics import token_kinds
from seqlm.evaluation.scores import prediction_targets
from seqlm.plotting import plain_text, subplots
from seqlm.progress import Progress, ensure_progress
from seqlm.vocabularies.scheme import SPECIAL_TOKENS

TOKEN_KIND = "token_kind"


@dataclass(frozen=True)
class ProbeConfig:
    """`C` is the inverse L2 strength of the logistic regression; `max_iter` its solver
    budget; `folds` the GroupKFold splits (fewer when there are fewer entities)."""

    folds: int = 5
    seed: int = 0
    C: float = 1.0
    max_iter: int = 300
    batch_tokens: int = 16384

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ConfigError(f"probes need at least 2 folds, got {self.folds}")
        if self.C <= 0 or self.max_iter < 1 or self.batch_tokens < 1:
            raise ConfigError("C, max_iter and batch_tokens must be positive")


@dataclass(frozen=True)
class LayerStates:
    """Per probed token: its id, sequence number and position, and one (N, C) array per
    layer (layer 0 = embeddings); `context_only`: conditioning positions left out."""

    token: np.ndarray
    sequence: np.ndarray
    position: np.ndarray
    layers: list[np.ndarray]
    context_only: int = 0


@torch.no_grad()
def layer_states(
    model: nn.Module,
    sequences: Sequence[np.ndarray],
    *,
    skip_ids: Sequence[int] = (),
    context_only_ids: Sequence[int] | np.ndarray = (),
    batch_tokens: int = 16384,
    progress: Progress | None = None,
) -> LayerStates:
    """The residual stream at every token (except `skip_ids`, `context_only_ids` and the
    closing token, which is never an input) in every layer, from full-context windows.
    Conditioning tokens (`context_only_ids`) name a sequence's label, so a probe on their
    positions would read the answer; they are skipped and counted."""
    targets = prediction_targets(sequences, int(model.config.vocab_size))
    blocks = model.blocks
    captured: list[torch.Tensor] = []

    def keep_input(_module, args):  # noqa: ANN001, ANN202 (torch hook signature)
        captured.append(args[0])

    def keep_output(_module, _args, output):  # noqa: ANN001, ANN202
        captured.append(output)

    handles = [blocks[0].register_forward_pre_hook(keep_input)]
    handles += [block.register_forward_hook(keep_output) for block in blocks]
    per_layer: list[list[np.ndarray]] = [[] for _ in range(len(blocks) + 1)]
    chosen_targets: list[np.ndarray] = []
    was_training = model.training
    model.eval()
    progress = ensure_progress(progress)
    progress.start("hidden states", total=len(targets))
    skipped = np.asarray([*skip_ids, *np.asarray(context_only_ids).tolist()], dtype=np.int64)
    try:
        for batch in context_batches(
            targets,
            context=int(model.config.block_size),
            batch_tokens=batch_tokens,
            device=next(model.parameters()).device,
        ):
            captured.clear()
            model.hidden_states(batch.inputs)
            # Target t's input is the token before it: the token being probed.
            keep = ~np.isin(targets.previous[batch.target], skipped)
            rows, cols = batch.rows[keep], batch.cols[keep]
            for layer, states in enumerate(captured):
                per_layer[layer].append(states[rows, cols].float().cpu().numpy())
            chosen_targets.append(batch.target[keep])
            progress.advance(batch.target.size)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
        progress.finish()
    chosen = np.concatenate(chosen_targets) if chosen_targets else np.zeros(0, dtype=np.int64)
    order = np.argsort(chosen, kind="stable")  # back to sequence order
    return LayerStates(
        token=targets.previous[chosen][order],
        sequence=targets.sequence[chosen][order],
        position=targets.position[chosen][order] - 1,
        layers=[np.concatenate(parts)[order] for parts in per_layer],
        context_only=int(np.isin(targets.previous, np.asarray(context_only_ids, np.int64)).sum()),
    )


def control_labels(token: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Hewitt & Liang's control task: one label per token type, drawn from the observed
    label distribution (so the class balance matches), given to every token of the type."""
    rng = np.random.default_rng(seed)
    types = np.unique(token)
    classes, counts = np.unique(labels, return_counts=True)
    drawn = rng.choice(classes, size=types.size, p=counts / counts.sum())
    return drawn[np.searchsorted(types, token)]


def probe_accuracy(
    features: np.ndarray,
    labels: np.ndarray,
    entities: np.ndarray,
    config: ProbeConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out accuracy of the probe and of the majority class, one value per fold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n_entities = np.unique(entities).size
    if n_entities < 2:
        raise ConfigError("probes need tokens from at least 2 entities (grouped folds)")
    folds = GroupKFold(n_splits=min(config.folds, n_entities))
    accuracy, majority = [], []
    for train, test in folds.split(features, labels, groups=entities):
        classes, counts = np.unique(labels[train], return_counts=True)
        majority.append(float(np.mean(labels[test] == classes[np.argmax(counts)])))
        if classes.size == 1:  # nothing to fit: the probe can only say that class
            accuracy.append(majority[-1])
            continue
        probe = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=config.C, max_iter=config.max_iter),
        )
        probe.fit(features[train], labels[train])
        accuracy.append(float(probe.score(features[test], labels[test])))
    return np.asarray(accuracy), np.asarray(majority)


@dataclass
class ProbeResult:
    """`table`: one row per layer with accuracy, accuracy_sd, control_accuracy,
    control_sd, selectivity (accuracy - control accuracy) and majority (the majority
    class's accuracy); means and standard deviations over the folds. `context_only`:
    conditioning positions that were not probed."""

    label: str
    classes: list[str]
    table: pl.DataFrame
    tokens: int
    entities: int
    folds: int
    context_only: int = 0


def run_probes(
    states: LayerStates,
    labels: np.ndarray,
    entities: np.ndarray,
    *,
    label: str,
    config: ProbeConfig | None = None,
    progress: Progress | None = None,
) -> ProbeResult:
    """Probe every layer for `labels` (one per probed token, None = leave the token out)
    and for the control task, with folds grouped by `entities` (one per token)."""
    config = config or ProbeConfig()
    labels = np.asarray(labels, dtype=object)
    entities = np.asarray(entities, dtype=object)
    if labels.shape[0] != states.token.shape[0] or entities.shape[0] != labels.shape[0]:
        raise ConfigError("need one label and one entity per probed token")
    present = np.asarray([value is not None for value in labels])
    labels = labels[present].astype(str)
    entities, token = entities[present].astype(str), states.token[present]
    classes = sorted(set(labels.tolist()))
    if len(classes) < 2:
        raise ConfigError(
            f"label {label!r} has {len(classes)} value(s) on the probed tokens "
            f"({', '.join(classes) or 'none'}); a probe needs at least 2"
        )
    control = control_labels(token, labels, seed=config.seed)
    progress = ensure_progress(progress)
    progress.start(f"probing {label}", total=len(states.layers))
    rows = []
    try:
        for layer, features in enumerate(states.layers):
            x = features[present]
            accuracy, majority = probe_accuracy(x, labels, entities, config)
            control_accuracy, _ = probe_accuracy(x, control, entities, config)
            rows.append(
                {
                    "layer": layer,
                    "accuracy": float(accuracy.mean()),
                    "accuracy_sd": float(accuracy.std()),
                    "control_accuracy": float(control_accuracy.mean()),
                    "control_sd": float(control_accuracy.std()),
                    "selectivity": float(accuracy.mean() - control_accuracy.mean()),
                    "majority": float(majority.mean()),
                }
            )
            progress.advance()
    finally:
        progress.finish()
    n_entities = np.unique(entities).size
    return ProbeResult(
        label=label,
        classes=classes,
        table=pl.DataFrame(rows),
        tokens=int(labels.shape[0]),
        entities=int(n_entities),
        folds=min(config.folds, int(n_entities)),
        context_only=states.context_only,
    )


def token_labels(
    states: LayerStates,
    index: pl.DataFrame,
    label: str,
    tokens: Sequence[str] | None = None,
) -> np.ndarray:
    """The label of each probed token: `token_kind` from the token strings (`tokens`, by
    id), else the index column `label`, whose row i describes sequence i."""
    if label == TOKEN_KIND:
        if tokens is None:
            raise ConfigError("the token_kind label needs the vocabulary's token strings")
        kinds = np.asarray(token_kinds(list(tokens)), dtype=object)
        return kinds[states.token]
    if label not in index.columns:
        raise ConfigError(
            f"no label {label!r}: use {TOKEN_KIND} or an index column ({', '.join(index.columns)})"
        )
    values = index[label].cast(pl.String, strict=False).to_list()
    return np.asarray(values, dtype=object)[states.sequence]


def special_ids(tokens: Sequence[str]) -> list[int]:
    """Ids of the special tokens ([PAD] [BOS] [EOS] [UNK] [SEP]); they are not probed.
    Conditioning tokens are not among them: pass them to `layer_states` as
    `context_only_ids` (`Vocabulary.condition_ids`), which skips and counts them."""
    return [i for i, token in enumerate(tokens) if token in SPECIAL_TOKENS]


@plain_text
def plot_probes(result: ProbeResult, out: str | Path, *, caution: str = "") -> Path:
    """Probe and control accuracy per layer (fold standard deviation as error bars), the
    majority-class line, and the selectivity of each layer; `caution` (a trust warning)
    is written in red above it."""
    out = Path(out)
    table = result.table
    layers = table["layer"].to_numpy()
    figure, axes = subplots(figsize=(7.5, 4.5), dpi=130)
    axes.errorbar(
        layers,
        table["accuracy"],
        yerr=table["accuracy_sd"],
        fmt="o-",
        capsize=3,
        label=f"probe: {result.label}",
    )
    axes.errorbar(
        layers,
        table["control_accuracy"],
        yerr=table["control_sd"],
        fmt="s--",
        capsize=3,
        label="control task (random label per token type)",
    )
    axes.plot(layers, table["majority"], ":", color="grey", label="majority class")
    for layer, accuracy, selectivity in zip(
        layers, table["accuracy"], table["selectivity"], strict=True
    ):
        axes.annotate(
            f"sel {selectivity:+.2f}",
            (layer, accuracy),
            textcoords="offset points",
            xytext=(0, 8),
            ha="center",
            fontsize=8,
        )
    axes.set_xticks(layers)
    axes.set_xticklabels(["emb" if layer == 0 else str(layer) for layer in layers])
    axes.set_xlabel("layer (emb = token + position embeddings)")
    axes.set_ylabel("held-out accuracy (grouped by entity)")
    axes.set_ylim(0, 1.05)
    excluded = f"; {result.context_only:,} [COND] not probed" if result.context_only else ""
    axes.set_title(
        f"Linear probes for {result.label!r} ({len(result.classes)} classes, "
        f"{result.tokens:,} tokens, {result.entities:,} entities, {result.folds} folds"
        f"{excluded})",
        fontsize=10,
    )
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    add_caution(figure, caution)
    figure.savefig(out, bbox_inches="tight" if caution else None)
    return out
