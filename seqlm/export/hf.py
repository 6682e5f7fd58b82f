"""Export a seqlm run as a Hugging Face folder: GPT-2 config and weights, fast tokenizer.

The folder loads with `transformers.AutoModelForCausalLM.from_pretrained(folder)` and
`PreTrainedTokenizerFast.from_pretrained(folder)`; `transformers` itself is not needed
to write it. The seqlm GPT maps onto GPT-2 exactly when it uses learned positions,
LayerNorm, Pre-LN and full causal attention:

- the fused `qkv`, `proj`, `up` and `down` linears become GPT-2's `c_attn`, `c_proj`,
  `c_fc` and `mlp.c_proj`; GPT-2 stores these as `Conv1D` (weight shape (in, out)), so
  each weight is transposed;
- the MLP's exact GELU is `activation_function="gelu"` (not GPT-2's default tanh
  approximation), `mlp_ratio` becomes `n_inner`;
- a model without biases gets zero biases, which compute the same function;
- untied output weights are written as `lm_head.weight` with `tie_word_embeddings=false`;
- part-shared token embeddings (`token_parts`) are folded into the one token table.

Everything else (rotary positions, RMSNorm, Post-/Peri-/Mix-LN, attention spans) has no
GPT-2 counterpart; `check_exportable` lists every such option in one `ConfigError`
rather than writing a model that computes something else. Training-only choices
(dropout, document masks of packed batches, the loss implementation) do not change
the function of one sequence and are not exported.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from seqlm.artefacts import sha256_of
from seqlm.constants import TOKENIZER_FILE
from seqlm.errors import ConfigError, CorpusError
from seqlm.outputs import apply_umask, check_output, output_lock
from seqlm.training.runs import load_trained_model

FORMATS = ("hf",)
SPECIAL_TOKENS = {
    "bos_token": "[BOS]",
    "eos_token": "[EOS]",
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "sep_token": "[SEP]",
}


def check_exportable(model_config: dict[str, Any]) -> None:
    """Raise `ConfigError` naming every option GPT-2 cannot represent."""
    problems = []
    if model_config.get("positions", "learned") != "learned":
        problems.append(f"positions={model_config['positions']!r} (GPT-2 has learned positions)")
    if model_config.get("norm", "layernorm") != "layernorm":
        problems.append(f"norm={model_config['norm']!r} (GPT-2 uses LayerNorm)")
    if model_config.get("norm_placement", "pre") != "pre":
        problems.append(f"norm_placement={model_config['norm_placement']!r} (GPT-2 is Pre-LN only)")
    if model_config.get("attention_span") is not None:
        problems.append(f"attention_span={model_config['attention_span']} (GPT-2 attends fully)")
    spans = model_config.get("layer_spans")
    if spans is not None and any(s is not None for s in spans):
        problems.append(f"layer_spans={spans} (GPT-2 attends fully)")
    if problems:
        raise ConfigError(
            "this model cannot be exported to Hugging Face GPT-2 without changing what it "
            "computes: "
            + "; ".join(problems)
            + (
                " - train with --set model.positions=learned for an exportable run "
                "(the recipe chooses rotary)"
                if model_config.get("positions", "learned") != "learned"
                else ""
            )
        )


def gpt2_config(model_config: dict[str, Any], vocab: dict[str, int]) -> dict[str, Any]:
    """The `config.json` of the equivalent `GPT2LMHeadModel`."""
    n_embd = int(model_config["n_embd"])
    token_ids = {key: vocab[token] for key, token in SPECIAL_TOKENS.items() if token in vocab}
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": int(model_config["vocab_size"]),
        "n_positions": int(model_config["block_size"]),
        "n_ctx": int(model_config["block_size"]),
        "n_embd": n_embd,
        "n_layer": int(model_config["n_layer"]),
        "n_head": int(model_config["n_head"]),
        "n_inner": int(model_config.get("mlp_ratio", 4)) * n_embd,
        "activation_function": "gelu",
        "layer_norm_epsilon": float(model_config.get("norm_eps", 1e-5)),
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "scale_attn_weights": True,
        "tie_word_embeddings": bool(model_config.get("tie_embeddings", True)),
        "bos_token_id": token_ids.get("bos_token"),
        "eos_token_id": token_ids.get("eos_token"),
        "pad_token_id": token_ids.get("pad_token"),
        "torch_dtype": "float32",
    }


def gpt2_state_dict(state: dict[str, torch.Tensor], model_config: dict[str, Any]) -> dict:
    """seqlm GPT weights renamed (and Conv1D-transposed) to GPT-2's names."""
    n_embd = int(model_config["n_embd"])

    def weight(name: str) -> torch.Tensor:
        if name not in state:
            raise CorpusError(f"the run's weights have no {name!r}")
        return state[name].detach().to(torch.float32)

    def bias(name: str, size: int) -> torch.Tensor:
        # A model trained without biases: zeros compute the same function.
        return weight(name) if name in state else torch.zeros(size)

    wte = weight("token_embedding.weight")
    if model_config.get("token_parts"):
        # GPT-2 has one table: fold each token's code and value rows into it (row 0 of
        # each part table is the zero "none" row).
        code = weight("token_parts.code.weight")[state["token_parts.code_ids"].long()]
        value = weight("token_parts.value.weight")[state["token_parts.value_ids"].long()]
        wte = wte + code + value
    out: dict[str, torch.Tensor] = {
        "transformer.wte.weight": wte,
        "transformer.wpe.weight": weight("position_embedding.embedding.weight"),
        "transformer.ln_f.weight": weight("final_norm.weight"),
        "transformer.ln_f.bias": bias("final_norm.bias", n_embd),
    }
    for i in range(int(model_config["n_layer"])):
        src, dst = f"blocks.{i}.", f"transformer.h.{i}."
        out[dst + "ln_1.weight"] = weight(src + "attn_norms.inner.weight")
        out[dst + "ln_1.bias"] = bias(src + "attn_norms.inner.bias", n_embd)
        out[dst + "ln_2.weight"] = weight(src + "mlp_norms.inner.weight")
        out[dst + "ln_2.bias"] = bias(src + "mlp_norms.inner.bias", n_embd)
        # nn.Linear stores (out, in); GPT-2's Conv1D stores (in, out).
        for seqlm_name, hf_name in (
            ("attn.qkv", "attn.c_attn"),
            ("attn.proj", "attn.c_proj"),
            ("mlp.up", "mlp.c_fc"),
            ("mlp.down", "mlp.c_proj"),
        ):
            linear = weight(src + seqlm_name + ".weight")
            out[dst + hf_name + ".weight"] = linear.t().contiguous()
            out[dst + hf_name + ".bias"] = bias(src + seqlm_name + ".bias", linear.shape[0])
    if not model_config.get("tie_embeddings", True):
        out["lm_head.weight"] = weight("lm_head.weight")
    return {k: v.contiguous() for k, v in out.items()}


def _check_run_tokenizer(run: Path, config: dict[str, Any]) -> None:
    """The run's tokenizer.json must hash to the vocabulary hash its config recorded."""
    recorded = (config.get("corpus") or {}).get("vocabulary_hash")
    source = run / TOKENIZER_FILE
    if recorded and source.is_file() and sha256_of(source) != recorded:
        raise CorpusError(
            f"{source}: does not match the vocabulary hash in config.json "
            "(edited or corrupted after training)"
        )


def _tokenizer_files(run: Path, out: Path, model_config: dict[str, Any]) -> dict[str, int]:
    source = run / TOKENIZER_FILE
    try:
        tokenizer = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CorpusError(f"{source}: cannot read the run's tokenizer: {err}") from None
    vocab = tokenizer.get("model", {}).get("vocab")
    if not isinstance(vocab, dict):
        raise CorpusError(f"{source}: not a word-level tokenizer with a vocabulary")
    shutil.copyfile(source, out / TOKENIZER_FILE)
    specials = {key: token for key, token in SPECIAL_TOKENS.items() if token in vocab}
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": int(model_config["block_size"]),
        "clean_up_tokenization_spaces": False,
        **specials,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")
    return vocab


def export_hf(run: str | Path, out: str | Path, *, which: str = "best") -> Path:
    """Write the run's model (`best` or `latest` weights) as a Hugging Face GPT-2 folder."""

    run, out = Path(run), Path(out)
    try:
        config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CorpusError(f"{run}: not a run folder (config.json: {err})") from None
    model_config = config.get("model")
    if not isinstance(model_config, dict):
        raise CorpusError(f"{run / 'config.json'}: has no model table")
    check_exportable(model_config)
    if which == "best" and not (run / "best").exists():
        which = "latest"  # a run without tuning evaluations has no best checkpoint
    model = load_trained_model(run, which=which)  # type: ignore[arg-type]
    with output_lock(out, "seqlm export"):
        check_output(out, [run])
        _check_run_tokenizer(run, config)
        out.mkdir(parents=True, exist_ok=True)
        vocab = _tokenizer_files(run, out, model_config)
        hf_config = gpt2_config(model_config, vocab)
        # Where the run lived on this machine is not part of the model: not recorded.
        hf_config["seqlm"] = {"checkpoint": which}
        (out / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
        weights = gpt2_state_dict(model.state_dict(), model_config)
        save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
        apply_umask(out / "model.safetensors")
    return out
