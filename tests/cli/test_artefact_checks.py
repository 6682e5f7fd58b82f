"""Issue 14 class 5: artefacts are verified, not trusted.

The vocabulary hash is recomputed on load; corpus files and checkpoint files carry
checksums (size + time by default, the full hash with `--verify`); token ids are
bound-checked when a corpus opens. Every failure is one line and exit 2, through the
CLI as a user meets it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers.cli_helpers import BIRDSONG_FIXTURES
from helpers.data_cli import assert_one_line_error, seqlm

TINY = [
    "--set",
    "model.layers=1",
    "--set",
    "model.width=32",
    "--set",
    "model.heads=2",
    "--set",
    "model.context=32",
    "--set",
    "train.steps=4",
    "--set",
    "train.eval_every=2",
    "--set",
    "train.checkpoint_every=2",
    "--set",
    "model.positions=learned",
]  # fmt: skip  (learned: the run is exported to GPT-2)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("artefacts")
    corpus, run = work / "corpus", work / "run"
    result = seqlm(
        "ingest", "crowsetta-generic-seq", BIRDSONG_FIXTURES / "bird1.csv", "--out", corpus
    )
    assert result.returncode == 0, result.stderr
    result = seqlm("train", corpus, "--out", run, *TINY)
    assert result.returncode == 0, result.stderr
    return corpus, run


@pytest.fixture
def corpus(built, tmp_path) -> Path:
    copy = tmp_path / "corpus"
    shutil.copytree(built[0], copy)  # copy2 keeps times: the fast path applies
    return copy


@pytest.fixture
def run(built, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(built[1], copy)
    return copy


def _garble_in_place(path: Path, offset: int, keep_time: bool = True) -> None:
    """Flip one byte without changing the size (and, by default, the modification time)."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    if keep_time:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_swapped_tokenizer_ids_are_caught(corpus):
    path = corpus / "tokenizer.json"
    tokenizer = json.loads(path.read_text())
    vocab = tokenizer["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[5:7]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    path.write_text(json.dumps(tokenizer, indent=2))
    result = seqlm("corpus", "info", corpus)
    assert_one_line_error(result, "tokenizer.json", "vocabulary hash")


def test_edited_scheme_is_caught(corpus):
    path = corpus / "scheme.json"
    scheme = json.loads(path.read_text())
    scheme["merged_tokens"] += 1
    path.write_text(json.dumps(scheme, indent=1))
    assert_one_line_error(seqlm("corpus", "info", corpus), "scheme.json", "checksum")


def test_garbled_tokens_pass_the_fast_path_and_fail_verify(corpus):
    _garble_in_place(corpus / "tokens.bin", 10)  # same size, same time
    assert seqlm("corpus", "info", corpus).returncode == 0  # size + time: trusted
    result = seqlm("--verify", "corpus", "info", corpus)
    assert_one_line_error(result, "tokens.bin", "checksum")


def test_garbled_tokens_with_a_new_time_are_rehashed(corpus):
    _garble_in_place(corpus / "tokens.bin", 10, keep_time=False)
    assert_one_line_error(seqlm("corpus", "info", corpus), "tokens.bin", "checksum")


def test_truncated_index_is_caught(corpus):
    path = corpus / "index.parquet"
    path.write_bytes(path.read_bytes()[:-8])
    assert_one_line_error(seqlm("corpus", "info", corpus), "index.parquet", "size")


def test_token_ids_beyond_the_vocabulary_are_caught_when_the_corpus_opens(corpus):
    # A corpus without checksums (written before they existed): only the bound check
    # stands between an out-of-range id and an IndexError in training.
    manifest = json.loads((corpus / "manifest.json").read_text())
    del manifest["files"]
    (corpus / "manifest.json").write_text(json.dumps(manifest))
    tokens = np.fromfile(corpus / "tokens.bin", dtype=manifest["token_dtype"])
    tokens[3] = 60_000
    tokens.tofile(corpus / "tokens.bin")
    for command in (("corpus", "info", corpus),):
        line = assert_one_line_error(seqlm(*command), "tokens.bin", "token id 60000")
        assert "outside the vocabulary" in line


SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    ("relative", "command"),
    [
        ("best/model.safetensors", ("export", "{run}", "--out", "{tmp}/hf")),
        pytest.param(
            "best/model.safetensors",
            ("eval", "{run}", "--corpus", "{corpus}", "--baselines", "none"),
            marks=SLOW,
        ),
        pytest.param(
            "model.safetensors",
            ("export", "{run}", "--out", "{tmp}/hf", "--checkpoint", "latest"),
            marks=SLOW,
        ),
        pytest.param(
            "checkpoints/step_0000004/optimizer.pt",
            ("train", "{corpus}", "--out", "{run}", "--resume"),
            marks=SLOW,
        ),
    ],
)
def test_garbled_checkpoint_files_are_refused(corpus, run, tmp_path, relative, command):
    _garble_in_place(run / relative, 200)  # same size and time: --verify re-hashes
    args = [a.format(run=run, corpus=corpus, tmp=tmp_path) for a in command]
    result = seqlm("--verify", *args)
    assert_one_line_error(result, Path(relative).name, "checksum")
    assert not (tmp_path / "hf").exists()  # nothing exported from garbled weights


def test_changed_weights_are_rehashed_without_verify(corpus, run, tmp_path):
    _garble_in_place(run / "best" / "model.safetensors", 300, keep_time=False)
    result = seqlm("export", run, "--out", tmp_path / "hf")
    assert_one_line_error(result, "model.safetensors", "checksum")


def test_edited_run_tokenizer_is_not_exported(run, tmp_path):
    path = run / "tokenizer.json"
    path.write_text(path.read_text().replace('"[SEP]": 4', '"[SEP]": 4 '))
    result = seqlm("export", run, "--out", tmp_path / "hf")
    assert_one_line_error(result, "tokenizer.json", "vocabulary hash")
    assert not (tmp_path / "hf").exists()
