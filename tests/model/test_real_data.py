"""A small GPT on real Bengalese finch song (Koparkar et al. 2024), packed by bout.

The model must learn real syntax, not only a toy pattern: trained briefly on 80% of
one bird's pre-lesion bouts (packed with document masks and restarting positions),
it must beat an add-0.1 bigram on the held-out 20%.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from seqlm.model import GPT, GPTConfig, document_positions

SEQ_LEN = 64


def packed(bouts: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    tokens = np.concatenate([np.array(b) for b in bouts])
    doc_ids = np.concatenate([np.full(len(b), i) for i, b in enumerate(bouts)])
    return tokens, doc_ids


def rows(tokens: np.ndarray, doc_ids: np.ndarray, starts: np.ndarray):
    """Inputs, targets (-100 where the next token is another bout's) and doc ids."""
    x = np.stack([tokens[s : s + SEQ_LEN] for s in starts])
    y = np.stack([tokens[s + 1 : s + SEQ_LEN + 1] for s in starts])
    docs = np.stack([doc_ids[s : s + SEQ_LEN] for s in starts])
    next_docs = np.stack([doc_ids[s + 1 : s + SEQ_LEN + 1] for s in starts])
    y = np.where(docs == next_docs, y, -100)
    return (torch.from_numpy(a).long() for a in (x, y, docs))


def test_tiny_gpt_beats_a_bigram_on_held_out_finch_song(finch_lesions: Path) -> None:
    song = (finch_lesions / "bird1_prelesion").read_text().strip()
    alphabet = sorted(set(song))
    bouts = [[alphabet.index(c) for c in "Y" + bout] for bout in song.split("Y") if bout]
    cut = int(0.8 * len(bouts))
    train_tokens, train_docs = packed(bouts[:cut])
    held_tokens, held_docs = packed(bouts[cut:])

    # add-0.1 bigram within bouts, the baseline to beat
    unigram = Counter(train_tokens.tolist())
    bigram = Counter(
        (a, b) for bout in bouts[:cut] for a, b in zip(bout[:-1], bout[1:], strict=False)
    )
    held_pairs = [(a, b) for bout in bouts[cut:] for a, b in zip(bout[:-1], bout[1:], strict=False)]
    bigram_nll = -np.mean(
        [math.log((bigram[p] + 0.1) / (unigram[p[0]] + 0.1 * len(alphabet))) for p in held_pairs]
    )

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    config = GPTConfig(vocab_size=len(alphabet), n_layer=2, n_head=2, n_embd=32, block_size=SEQ_LEN)
    model = GPT(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    for _ in range(120):
        starts = rng.integers(0, len(train_tokens) - SEQ_LEN - 1, 16)
        x, y, docs = rows(train_tokens, train_docs, starts)
        loss = model(x, y, doc_ids=docs, position_ids=document_positions(docs)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    model.eval()
    starts = np.arange(0, len(held_tokens) - SEQ_LEN - 1, SEQ_LEN)
    x, y, docs = rows(held_tokens, held_docs, starts)
    with torch.no_grad():
        held_loss = model(x, y, doc_ids=docs, position_ids=document_positions(docs)).loss.item()
    # the windows score almost every within-bout pair the bigram scores
    assert (y != -100).sum().item() > 0.9 * len(held_pairs)
    assert held_loss < bigram_nll, (math.exp(held_loss), math.exp(bigram_nll))
