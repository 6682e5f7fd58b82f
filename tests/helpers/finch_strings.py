"""The Koparkar et al. (2024) lesion strings read directly, without seqlm's adapters:
one file per bird and condition, `Y` starts a bout, every other character is a syllable."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FIRST_SYLLABLE_ID = 5  # after [PAD] [BOS] [EOS] [UNK] [SEP]
BIRDS = tuple(range(1, 8))


def read_bouts(folder: Path, bird: int, condition: str) -> list[str]:
    text = (folder / f"bird{bird}_{condition}").read_text(encoding="ascii").strip()
    return [bout for bout in text.split("Y") if bout]


def bird_corpus(folder: Path, bird: int, train_share: float = 0.8):
    """(train, held-out pre-lesion, post-lesion) id sequences and the vocabulary size.

    Train is the first `train_share` of the pre-lesion bouts in recording order. The
    vocabulary holds every syllable of both conditions, so post-lesion syllables never
    sung before the lesion are in it but unseen in training.
    """
    pre = read_bouts(folder, bird, "prelesion")
    post = read_bouts(folder, bird, "postlesion")
    syllables = sorted(set("".join(pre + post)))
    ids = {s: FIRST_SYLLABLE_ID + i for i, s in enumerate(syllables)}

    def encode(bouts: list[str]) -> list[np.ndarray]:
        return [np.array([1, *(ids[s] for s in bout), 2], dtype=np.int64) for bout in bouts]

    cut = int(train_share * len(pre))
    return encode(pre[:cut]), encode(pre[cut:]), encode(post), FIRST_SYLLABLE_ID + len(ids)
