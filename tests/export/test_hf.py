"""`seqlm export --format hf`: the folder loads in `transformers` and computes the same
logits as the seqlm model (tests that need `transformers` skip when it is missing)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from seqlm.cli.app import main
from seqlm.datasets import finch_lesions_path
from seqlm.errors import ConfigError, CorpusError
from seqlm.export.hf import check_exportable, export_hf, gpt2_state_dict
from seqlm.ingest import ingest
from seqlm.training.config import RunSettings, TrainConfig
from seqlm.training.runs import load_trained_model
from seqlm.training.session import train_on_corpus


@pytest.fixture(scope="module")
def finch_corpus(tmp_path_factory):
    inputs = sorted(finch_lesions_path().glob("bird[12]_prelesion"))
    return ingest("birdsong-strings", inputs, tmp_path_factory.mktemp("hf") / "corpus")


def tiny_run(corpus, out, **model):
    shape = {"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 32, **model}
    train = TrainConfig(max_steps=3, batch_size=4, warmup_steps=1, eval_every=2, eval_batches=1,
                        checkpoint_every=2, log_every=1)  # fmt: skip
    train_on_corpus(corpus.path, out, RunSettings(preset="tiny", model=shape, train=train))
    return out


@pytest.fixture(scope="module")
def run(finch_corpus, tmp_path_factory):
    return tiny_run(finch_corpus, tmp_path_factory.mktemp("hf") / "run")


def test_check_exportable_lists_every_problem():
    config = {"positions": "rotary", "norm": "rmsnorm", "norm_placement": "mix",
              "attention_span": 16}  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        check_exportable(config)
    message = str(caught.value)
    for option in ("positions='rotary'", "norm='rmsnorm'", "norm_placement='mix'",
                   "attention_span=16"):  # fmt: skip
        assert option in message
    check_exportable({"positions": "learned", "layer_spans": [None, None]})


def test_export_writes_the_files_with_gpt2_names(run, tmp_path):
    out = export_hf(run, tmp_path / "hf")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"):  # fmt: skip
        assert (out / name).exists(), name
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["activation_function"] == "gelu"
    assert (config["n_layer"], config["n_embd"], config["n_positions"]) == (2, 16, 32)
    weights = load_file(str(out / "model.safetensors"))
    model = load_trained_model(run, which="best")
    qkv = model.state_dict()["blocks.1.attn.qkv.weight"]
    # Conv1D stores (in, out): the transpose of nn.Linear's (out, in).
    assert torch.equal(weights["transformer.h.1.attn.c_attn.weight"], qkv.t())
    assert "lm_head.weight" not in weights  # tied to the token embedding
    specials = json.loads((out / "special_tokens_map.json").read_text())
    assert specials["bos_token"] == "[BOS]" and specials["pad_token"] == "[PAD]"


def test_export_refuses_a_non_empty_folder_and_a_missing_run(run, tmp_path):
    (tmp_path / "x").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        export_hf(run, tmp_path)
    with pytest.raises(CorpusError, match="not a run folder"):
        export_hf(tmp_path / "nowhere", tmp_path / "out")


def test_models_without_bias_get_zero_biases():
    config = {"n_embd": 4, "n_layer": 1, "tie_embeddings": False}
    state = {
        "token_embedding.weight": torch.ones(5, 4),
        "position_embedding.embedding.weight": torch.ones(8, 4),
        "final_norm.weight": torch.ones(4),
        "blocks.0.attn_norms.inner.weight": torch.ones(4),
        "blocks.0.mlp_norms.inner.weight": torch.ones(4),
        "blocks.0.attn.qkv.weight": torch.ones(12, 4),
        "blocks.0.attn.proj.weight": torch.ones(4, 4),
        "blocks.0.mlp.up.weight": torch.ones(16, 4),
        "blocks.0.mlp.down.weight": torch.ones(4, 16),
        "lm_head.weight": torch.full((5, 4), 2.0),
    }
    out = gpt2_state_dict(state, config)
    assert out["transformer.h.0.attn.c_attn.bias"].shape == (12,)
    assert not out["transformer.h.0.mlp.c_fc.bias"].any()
    assert out["transformer.h.0.mlp.c_fc.weight"].shape == (4, 16)
    assert torch.equal(out["lm_head.weight"], state["lm_head.weight"])
    del state["blocks.0.attn.proj.weight"]
    with pytest.raises(CorpusError, match="attn.proj.weight"):
        gpt2_state_dict(state, config)


def test_cli_export_rejects_unknown_formats(run, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "o")])
    assert exit_.value.code == 2
    assert "unknown export format" in capsys.readouterr().err


def test_transformers_loads_the_export_and_computes_the_same_logits(finch_corpus, tmp_path):
    transformers = pytest.importorskip("transformers")
    run = tiny_run(finch_corpus, tmp_path / "run", bias=False, tie_embeddings=False)
    try:
        main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")])
    except SystemExit as exit_:
        assert not exit_.code
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    tokenizer = transformers.PreTrainedTokenizerFast.from_pretrained(tmp_path / "hf")
    ours = load_trained_model(run, which="best")
    ids = torch.tensor(list(finch_corpus.sequence(0)[:32]), dtype=torch.long)[None]
    with torch.no_grad():
        expected = ours(ids).logits
        got = hf(ids).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    # The tokenizer maps the corpus's tokens to the same ids.
    text = " ".join(tokenizer.convert_ids_to_tokens(ids[0].tolist()))
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == ids[0].tolist()
    assert tokenizer.bos_token == "[BOS]"
