"""The GPT's one configuration dataclass, its JSON form, and the size presets.

A config is plain values only, so it round-trips through `config.json` in a run folder
(`to_dict` / `from_dict`) and is validated on construction: a bad value raises
`ConfigError` naming the field, never a torch error deep inside the model.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from seqlm.config import check_fields, options_from_mapping, setting_error
from seqlm.errors import ConfigError

PositionType = Literal["learned", "rotary", "alibi"]
NormType = Literal["layernorm", "rmsnorm"]
NormPlacement = Literal["pre", "post", "peri", "mix"]
POSITION_TYPES: tuple[str, ...] = typing.get_args(PositionType)
NORM_TYPES: tuple[str, ...] = typing.get_args(NormType)
NORM_PLACEMENTS: tuple[str, ...] = typing.get_args(NormPlacement)


@dataclass
class GPTConfig:
    """Shape and variant of a GPT.

    `attention_span` (w) limits every layer to a window of w keys: query i sees keys j
    with i - w < j <= i. `layer_spans` sets one span per layer instead (None = full
    causal attention in that layer); the two are exclusive. `norm_placement="mix"`
    uses Post-LN for the first `int(mix_ln_fraction * n_layer)` layers and Pre-LN
    after them (Mix-LN). `loss_impl` names a loss in `seqlm.model.loss` ("dense" is
    built in; faster ones register themselves there). The default "auto" (from
    `seqlm.kernels`) is the dense loss for a vocabulary below 8,192 tokens whose logits stay below 2^25
    elements a step, and the chunked linear + cross-entropy otherwise, so large clinical
    vocabularies and long contexts never materialise the logits.
    """

    vocab_size: int = field(
        metadata={
            "help": "Tokens in the vocabulary; set from the corpus, never by hand.",
            "min": 1,
        }
    )
    n_layer: int = field(
        metadata={
            "help": "Transformer blocks (alias model.layers); the preset sets it.",
            "min": 1,
        }
    )
    n_head: int = field(
        metadata={
            "help": "Attention heads per block (alias model.heads); must divide n_embd.",
            "min": 1,
        }
    )
    n_embd: int = field(
        metadata={
            "help": "Width of the residual stream (alias model.width / model.dim).",
            "min": 1,
        }
    )
    block_size: int = field(
        metadata={
            "help": "Context length in tokens (alias model.context); longer sequences are cut into windows.",
            "min": 1,
        }
    )
    dropout: float = field(
        default=0.0,
        metadata={
            "help": "Dropout probability on attention, residual and embedding outputs, in [0, 1).",
            "min": 0,
            "below": 1,
        },
    )
    bias: bool = field(
        default=True, metadata={"help": "Whether linear layers and norms carry bias terms."}
    )
    tie_embeddings: bool = field(
        default=True,
        metadata={"help": "Share the token embedding and the output projection weights."},
    )
    positions: PositionType = field(
        default="learned",
        metadata={
            "help": "Position encoding: learned (absolute, GPT-2), rotary (RoPE) or alibi (a fixed per-head linear recency bias on attention scores, no parameters)."
        },
    )
    norm: NormType = field(
        default="layernorm", metadata={"help": "Normalisation layer: layernorm or rmsnorm."}
    )
    norm_placement: NormPlacement = field(
        default="pre",
        metadata={
            "help": "Where the norm sits: pre, post, peri (both) or mix (Post-LN first, Pre-LN after)."
        },
    )
    mix_ln_fraction: float = field(
        default=0.25,
        metadata={
            "help": "With norm_placement = mix: the fraction of layers (from the bottom) that use Post-LN.",
            "min": 0,
            "max": 1,
        },
    )
    attention_span: int | None = field(
        default=None,
        metadata={
            "help": "Window of keys every layer sees (query i sees i-w < j <= i); null = full causal attention.",
            "min": 1,
        },
    )
    layer_spans: list[int | None] | None = field(
        default=None,
        metadata={
            "help": "One span per layer (null = full attention in that layer); exclusive with attention_span."
        },
    )
    mlp_ratio: int = field(
        default=4, metadata={"help": "Hidden width of the MLP as a multiple of n_embd.", "min": 1}
    )
    norm_eps: float = field(
        default=1e-5,
        metadata={"help": "Epsilon added inside the norm for numerical stability.", "above": 0},
    )
    rope_base: float = field(
        default=10000.0, metadata={"help": "Base frequency of rotary positions.", "above": 0}
    )
    loss_impl: str = field(
        default="auto",
        metadata={
            "help": "Loss implementation: auto (dense for a vocabulary < 8,192 and logits < 2^25 elements, else chunked), dense, or a registered one."
        },
    )
    init_std: float = field(
        default=0.02,
        metadata={"help": "Standard deviation of the normal weight initialisation.", "above": 0},
    )

    token_parts: bool = field(
        default=False,
        metadata={
            "help": "Part-shared token embeddings: a fused code+value token's row (input, and output when tied) adds a row for its code and one for its value bin or text, shared across tokens; set code_parts/value_parts from the corpus."
        },
    )
    code_parts: int = field(
        default=0,
        metadata={
            "help": "With token_parts: rows of the code-part table (row 0 = none); set from the corpus's vocabulary, never by hand.",
            "min": 0,
        },
    )
    value_parts: int = field(
        default=0,
        metadata={
            "help": "With token_parts: rows of the value-part table (row 0 = none); set from the corpus's vocabulary, never by hand.",
            "min": 0,
        },
    )

    def __post_init__(self) -> None:
        # Types, choices and bounds come from the fields (seqlm.config); what is left
        # here are the rules that tie fields together.
        check_fields(self, prefix="model.")
        if not self.loss_impl:
            raise setting_error("model.loss_impl", "a non-empty name", self.loss_impl)
        if self.n_embd % self.n_head != 0:
            raise ConfigError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.positions == "rotary" and self.head_dim % 2 != 0:
            raise ConfigError(f"rotary positions need an even head size, got {self.head_dim}")
        if self.layer_spans is not None:
            self._check_layer_spans(self.layer_spans)

    def _check_layer_spans(self, spans: list[int | None]) -> None:
        if self.attention_span is not None:
            raise ConfigError("set either attention_span or layer_spans, not both")
        if len(spans) != self.n_layer:
            raise ConfigError(f"layer_spans has {len(spans)} entries for {self.n_layer} layers")
        for i, span in enumerate(spans):
            if span is not None and span < 1:
                raise setting_error(f"model.layer_spans[{i}]", "at least 1 or null", span)

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
        """Build from `to_dict()` output (e.g. a run's config.json) or a `[model]` table;
        unknown keys are errors."""
        return options_from_mapping(
            cls, values, prefix="model.", hint=" (aliases and meanings: seqlm config show)"
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
