"""Fixtures for the trainer's tests: a small song corpus built through the real ingest
path (no ../shared needed), and a tiny GPT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

# Song of a made-up bird: bouts of motifs with a few random substitutions, so a model
# has something to learn and the loss can fall well below the unigram entropy.
MOTIFS = ("abcd", "abce", "fgh", "ijkl", "abcdfgh")


def write_song_file(path: Path, bouts: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    pieces = []
    for _ in range(bouts):
        syllables = "i" * int(rng.integers(1, 4))
        for _ in range(int(rng.integers(3, 12))):
            motif = MOTIFS[int(rng.integers(len(MOTIFS)))]
            if rng.random() < 0.1:
                motif = motif.replace(motif[-1], "x")
            syllables += motif
        pieces.append("Y" + syllables)
    path.write_text("".join(pieces) + "\n", encoding="utf-8")
    return path


def build_song_corpus(folder: Path, bouts: int = 300, seed: int = 0):
    from seqlm.ingest import ingest

    source = folder / "raw"
    source.mkdir(parents=True, exist_ok=True)
    song = write_song_file(source / "bird1_prelesion", bouts, seed)
    return ingest("birdsong-strings", [song], folder / "corpus")


@pytest.fixture(scope="session")
def song_corpus(tmp_path_factory):
    """A corpus folder of ~300 synthetic bouts (train / tuning / held_out splits)."""
    return build_song_corpus(tmp_path_factory.mktemp("song"))


@pytest.fixture(scope="session")
def other_song_corpus(tmp_path_factory):
    """A different, smaller song corpus (another seed)."""
    return build_song_corpus(tmp_path_factory.mktemp("other_song"), bouts=80, seed=1)


@pytest.fixture
def tiny_gpt_factory():
    """Builds a 2-layer, 32-wide GPT for a vocabulary and context, seeded."""
    import torch

    from seqlm.model import GPT, preset

    def build(vocab_size: int, context: int = 32, seed: int = 0, **overrides):
        torch.manual_seed(seed)
        return GPT(preset("tiny", vocab_size=vocab_size, block_size=context, **overrides))

    return build
