"""The GPT's one configuration dataclass, its JSON form, and the size presets.

A config is plain values only, so it round-trips through `config.json` in a run folder
(`to_dict` / `from_dict`) and is validated on construction: a bad value raises
`ConfigError` naming the field, never a torch error deep inside the model.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from seqlm.errors import ConfigError, did_you_mean

POSITION_TYPES = ("learned", "rotary")
NORM_TYPES = ("layernorm", "rmsnorm")
NORM_PLACEMENTS = ("pre", "post", "peri", "mix")


@dataclass
class GPTConfig:
    """Shape and variant of a GPT.

    `attention_span` (w) limits every layer to a window of w keys: query i sees keys j
    with i - w < j <= i. `layer_spans` sets one span per layer instead (None = full
    causal attention in that layer); the two are exclusive. `norm_placement="mix"`
    uses Post-LN for the first `int(mix_ln_fraction * n_layer)` layers and Pre-LN
    after them (Mix-LN). `loss_impl` names a loss in `seqlm.model.loss` ("dense" is
    built in; faster ones register themselves there). The default "auto" (from
    `seqlm.kernels`) is the dense loss below 8,192 vocabulary tokens and the chunked
    linear + cross-entropy above, so large clinical vocabularies never materialise
    the logits.
    """

    vocab_size: int = field(
        metadata={"help": "Tokens in the vocabulary; set from the corpus, never by hand."}
    )
    n_layer: int = field(
        metadata={"help": "Transformer blocks (alias model.layers); the preset sets it."}
    )
    n_head: int = field(
        metadata={"help": "Attention heads per block (alias model.heads); must divide n_embd."}
    )
    n_embd: int = field(
        metadata={"help": "Width of the residual stream (alias model.width / model.dim)."}
    )
    block_size: int = field(
        metadata={
            "help": "Context length in tokens (alias model.context); longer sequences are cut into windows."
        }
    )
    dropout: float = field(
        default=0.0,
        metadata={
            "help": "Dropout probability on attention, residual and embedding outputs, in [0, 1)."
        },
    )
    bias: bool = field(
        default=True, metadata={"help": "Whether linear layers and norms carry bias terms."}
    )
    tie_embeddings: bool = field(
        default=True,
        metadata={"help": "Share the token embedding and the output projection weights."},
    )
    positions: str = field(
        default="learned",
        metadata={"help": "Position encoding: learned (absolute, GPT-2) or rotary (RoPE)."},
    )
    norm: str = field(
        default="layernorm", metadata={"help": "Normalisation layer: layernorm or rmsnorm."}
    )
    norm_placement: str = field(
        default="pre",
        metadata={
            "help": "Where the norm sits: pre, post, peri (both) or mix (Post-LN first, Pre-LN after)."
        },
    )
    mix_ln_fraction: float = field(
        default=0.25,
        metadata={
            "help": "With norm_placement = mix: the fraction of layers (from the bottom) that use Post-LN."
        },
    )
    attention_span: int | None = field(
        default=None,
        metadata={
            "help": "Window of keys every layer sees (query i sees i-w < j <= i); null = full causal attention."
        },
    )
    layer_spans: list[int | None] | None = field(
        default=None,
        metadata={
            "help": "One span per layer (null = full attention in that layer); exclusive with attention_span."
        },
    )
    mlp_ratio: int = field(
        default=4, metadata={"help": "Hidden width of the MLP as a multiple of n_embd."}
    )
    norm_eps: float = field(
        default=1e-5, metadata={"help": "Epsilon added inside the norm for numerical stability."}
    )
    rope_base: float = field(
        default=10000.0, metadata={"help": "Base frequency of rotary positions."}
    )
    loss_impl: str = field(
        default="auto",
        metadata={
            "help": "Loss implementation: auto (dense below 8,192 tokens, chunked above), dense, or a registered one."
        },
    )
    init_std: float = field(
        default=0.02, metadata={"help": "Standard deviation of the normal weight initialisation."}
    )

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_layer", "n_head", "n_embd", "block_size", "mlp_ratio"):
            _require_int(name, getattr(self, name), minimum=1)
        for name in ("dropout", "mix_ln_fraction", "norm_eps", "rope_base", "init_std"):
            _require_float(name, getattr(self, name))
            setattr(self, name, float(getattr(self, name)))
        for name in ("bias", "tie_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"model option {name!r} must be true or false")
        _require_choice("positions", self.positions, POSITION_TYPES)
        _require_choice("norm", self.norm, NORM_TYPES)
        _require_choice("norm_placement", self.norm_placement, NORM_PLACEMENTS)
        if not isinstance(self.loss_impl, str) or not self.loss_impl:
            raise ConfigError("model option 'loss_impl' must be a non-empty name")
        if self.n_embd % self.n_head != 0:
            raise ConfigError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.positions == "rotary" and self.head_dim % 2 != 0:
            raise ConfigError(f"rotary positions need an even head size, got {self.head_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.mix_ln_fraction <= 1.0:
            raise ConfigError(f"mix_ln_fraction must be in [0, 1], got {self.mix_ln_fraction}")
        if self.norm_eps <= 0 or self.rope_base <= 0 or self.init_std <= 0:
            raise ConfigError("norm_eps, rope_base and init_std must be positive")
        if self.attention_span is not None:
            _require_int("attention_span", self.attention_span, minimum=1)
        if self.layer_spans is not None:
            if self.attention_span is not None:
                raise ConfigError("set either attention_span or layer_spans, not both")
            if not isinstance(self.layer_spans, list | tuple):
                raise ConfigError("layer_spans must be a list with one span (or null) per layer")
            self.layer_spans = list(self.layer_spans)
            if len(self.layer_spans) != self.n_layer:
                raise ConfigError(
                    f"layer_spans has {len(self.layer_spans)} entries for {self.n_layer} layers"
                )
            for i, span in enumerate(self.layer_spans):
                if span is not None:
                    _require_int(f"layer_spans[{i}]", span, minimum=1)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def spans_per_layer(self) -> list[int | None]:
        """The attention span of each layer (None = full causal attention)."""
        if self.layer_spans is not None:
            return list(self.layer_spans)
        return [self.attention_span] * self.n_layer

    def placement_per_layer(self) -> list[str]:
        """The norm placement of each layer: "pre", "post" or "peri" ("mix" resolved)."""
        if self.norm_placement != "mix":
            return [self.norm_placement] * self.n_layer
        n_post = int(self.mix_ln_fraction * self.n_layer)
        return ["post"] * n_post + ["pre"] * (self.n_layer - n_post)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (lists, not tuples)."""
        out = dataclasses.asdict(self)
        if out["layer_spans"] is not None:
            out["layer_spans"] = list(out["layer_spans"])
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> GPTConfig:
        """Build from `to_dict()` output (e.g. a run's config.json); unknown keys are errors."""
        if not isinstance(values, Mapping):
            raise ConfigError("a model config must be a table of options")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown model option(s): {', '.join(unknown)}"
                f"{did_you_mean(unknown, known)}; known: {', '.join(sorted(known))} "
                "(aliases and meanings: seqlm config show)"
            )
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
            and f.name not in values
        ]
        if missing:
            raise ConfigError(f"model config is missing: {', '.join(missing)}")
        return cls(**dict(values))


def _require_int(name: str, value: object, *, minimum: int) -> None:
    # bool is an int subclass in Python; `true` is never a layer count.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"model option {name!r} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"model option {name!r} must be at least {minimum}, got {value}")


def _require_float(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"model option {name!r} must be a number, got {value!r}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite:
        raise ConfigError(f"model option {name!r} must be finite, got {value!r}")


def _require_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(
            f"model option {name!r} must be one of {', '.join(choices)}; got {value!r}"
        )


@dataclass(frozen=True)
class SizePreset:
    n_layer: int
    n_head: int
    n_embd: int
    extra: dict[str, Any] = field(default_factory=dict)


# Head size 64 for the real presets, as in GPT-2; `tiny` exists for fast tests.
PRESETS: dict[str, SizePreset] = {
    "tiny": SizePreset(n_layer=2, n_head=2, n_embd=32),
    "micro": SizePreset(n_layer=4, n_head=4, n_embd=256),
    "small": SizePreset(n_layer=8, n_head=8, n_embd=512),
    "base": SizePreset(n_layer=12, n_head=12, n_embd=768),
}


def preset(name: str, vocab_size: int, block_size: int, **overrides: Any) -> GPTConfig:
    """A config of a named size; `overrides` set any other GPTConfig field."""
    if name not in PRESETS:
        raise ConfigError(f"no model preset named {name!r}; available: {', '.join(PRESETS)}")
    size = PRESETS[name]
    values: dict[str, Any] = {
        "vocab_size": vocab_size,
        "block_size": block_size,
        "n_layer": size.n_layer,
        "n_head": size.n_head,
        "n_embd": size.n_embd,
        **size.extra,
    }
    values.update(overrides)
    return GPTConfig.from_dict(values)
