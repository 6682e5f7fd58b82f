"""Names the whole project shares, defined once (the ground floor: imports nothing).

- `IGNORE_INDEX`: a target that adds nothing to the loss (padding, a target in another
  document, a context-only token). -100 is PyTorch's `cross_entropy` default, so the
  fast path needs no argument.
- `TOKENIZER_FILE`: the vocabulary's HF `tokenizers` file, in a corpus folder and (a
  copy) in a run folder.
"""

from __future__ import annotations

IGNORE_INDEX = -100
TOKENIZER_FILE = "tokenizer.json"
