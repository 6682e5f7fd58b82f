"""A corpus folder, opened: the vocabulary, the index, and memory-mapped tokens.

`tokens.bin` (and `times.bin`) are mapped read-only, so a corpus larger than memory
opens at once and `sequence(seq_id)` is a view into the file, never a copy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from seqlm.artefacts import sha256_of, verify_recorded
from seqlm.constants import TOKENIZER_FILE
from seqlm.errors import CorpusError
from seqlm.events import SPLITS
from seqlm.vocabularies.vocabulary import SCHEME_FILE, Vocabulary

MANIFEST_FILE = "manifest.json"
INDEX_FILE = "index.parquet"
TOKENS_FILE = "tokens.bin"
TIMES_FILE = "times.bin"
REJECTS_FILE = "rejects.parquet"
# Every name a corpus writer puts in the folder: `--overwrite` refuses a folder with more.
CORPUS_FILES = (
    MANIFEST_FILE,
    TOKENIZER_FILE,
    "scheme.json",
    INDEX_FILE,
    TOKENS_FILE,
    TIMES_FILE,
    REJECTS_FILE,
)
INDEX_COLUMNS = (
    "seq_id",
    "entity",
    "group",
    "split",
    "offset",
    "length",
    "first_time",
    "last_time",
)
# Files whose checksums the manifest records (`seqlm.artefacts`); tokenizer.json is
# covered by the vocabulary hash, recomputed from the loaded vocabulary.
CHECKSUMMED_FILES = (TOKENS_FILE, TIMES_FILE, INDEX_FILE, SCHEME_FILE)
TOKEN_DTYPES = {"uint16": np.uint16, "uint32": np.uint32}


@dataclass(eq=False)
class Corpus:
    path: Path
    manifest: dict[str, Any]
    vocabulary: Vocabulary
    index: pl.DataFrame
    tokens: np.memmap
    times: np.memmap | None = None
    _offsets: np.ndarray = field(init=False, repr=False)
    _lengths: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._offsets = self.index["offset"].to_numpy()
        self._lengths = self.index["length"].to_numpy()

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    def __len__(self) -> int:
        return self.index.height

    def _span(self, seq_id: int) -> slice:
        if not 0 <= seq_id < len(self._offsets):
            raise CorpusError(f"{self.path}: no sequence {seq_id} (0..{len(self._offsets) - 1})")
        start = int(self._offsets[seq_id])
        return slice(start, start + int(self._lengths[seq_id]))

    def sequence(self, seq_id: int) -> np.ndarray:
        """The token ids of one sequence, `[BOS]` ... `[EOS]`: a view into `tokens.bin`."""
        return self.tokens[self._span(seq_id)]

    @property
    def time_unit(self) -> str:
        """What the times count: "s" (seconds) or "index" (unitless: beats, steps)."""
        return str(self.manifest.get("time_unit", "s"))

    def sequence_times(self, seq_id: int) -> np.ndarray:
        """Seconds since the sequence's first timed event, one per token (a view)."""
        if self.times is None:
            raise CorpusError(f"{self.path}: this corpus has no {TIMES_FILE}")
        return self.times[self._span(seq_id)]

    def split(self, name: str) -> pl.DataFrame:
        """The index rows of one split."""
        if name not in SPLITS:
            raise CorpusError(f"no split {name!r}; splits are {list(SPLITS)}")
        return self.index.filter(pl.col("split") == name)


def read_parquet_file(file: Path, columns: list[str] | None = None) -> pl.DataFrame:
    """Read one of the corpus's parquet files; damage is a `CorpusError` naming it."""
    try:
        return pl.read_parquet(file, columns=columns, glob=False)
    except (pl.exceptions.PolarsError, OSError, ValueError) as err:
        reason = " ".join(str(err).split())[:200]
        raise CorpusError(f"{file}: not a readable parquet file ({reason})") from None


def _trained_on(run: Path) -> str:
    try:
        corpus = json.loads((run / "config.json").read_text(encoding="utf-8"))["corpus"]["path"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return f" ({corpus})"


def load_corpus(path: str | Path) -> Corpus:
    """Open a corpus folder written by `build_corpus`, checking that its files agree."""
    path = Path(path)
    if not path.is_dir():
        raise CorpusError(f"{path}: not a corpus folder")
    if (path / REJECTS_FILE).is_file() and not (path / MANIFEST_FILE).is_file():
        raise CorpusError(
            f"{path}: not a corpus: the ingest that wrote it kept no events; its "
            f"{REJECTS_FILE} lists every rejected row and why"
        )
    if not (path / MANIFEST_FILE).is_file() and (path / "config.json").is_file():
        raise CorpusError(
            f"{path}: a run folder (from seqlm train), not a corpus; give the corpus "
            f"folder it was trained on{_trained_on(path)}"
        )
    for name in (MANIFEST_FILE, TOKENIZER_FILE, INDEX_FILE, TOKENS_FILE):
        if not (path / name).is_file():
            raise CorpusError(f"{path}: missing {name}; is this a corpus folder?")
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CorpusError(f"{path / MANIFEST_FILE}: not readable JSON: {err}") from None
    dtype = TOKEN_DTYPES.get(str(manifest.get("token_dtype")))
    if dtype is None:
        raise CorpusError(
            f"{path / MANIFEST_FILE}: unknown token_dtype {manifest.get('token_dtype')!r}"
        )
    vocabulary = Vocabulary.load(path)
    _check_vocabulary_hash(path, manifest)
    if "files" in manifest:  # corpora written before checksums have none to check
        verify_recorded(path, manifest["files"], path / MANIFEST_FILE)
    if np.dtype(dtype) != vocabulary.token_dtype:
        raise CorpusError(f"{path}: token_dtype {dtype.__name__} does not fit the vocabulary")
    index = read_parquet_file(path / INDEX_FILE)
    missing = [c for c in INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise CorpusError(f"{path / INDEX_FILE}: missing columns {missing}")
    if not index["seq_id"].equals(pl.Series("seq_id", range(index.height), dtype=pl.Int64)):
        raise CorpusError(f"{path / INDEX_FILE}: seq_id is not 0..n-1 in order")
    lengths = index["length"].to_numpy()
    offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    if not np.array_equal(index["offset"].to_numpy(), offsets) or (lengths < 2).any():
        raise CorpusError(f"{path / INDEX_FILE}: offsets and lengths do not tile tokens.bin")
    n_tokens = int(lengths.sum())
    tokens = _map(path / TOKENS_FILE, dtype, n_tokens)
    _check_token_ids(path / TOKENS_FILE, tokens, len(vocabulary))
    times = _map(path / TIMES_FILE, np.float32, n_tokens) if (path / TIMES_FILE).is_file() else None
    return Corpus(path, manifest, vocabulary, index, tokens, times)


def _check_vocabulary_hash(path: Path, manifest: dict[str, Any]) -> None:
    """tokenizer.json must be the one the corpus was written with: its hash is
    recomputed from the file's bytes (the writer recorded the hash of exactly those
    bytes), so an edited or id-swapped tokenizer is caught whatever the HF version."""
    recorded = (manifest.get("vocabulary") or {}).get("hash")
    if recorded is not None and recorded != sha256_of(path / TOKENIZER_FILE):
        raise CorpusError(
            f"{path / TOKENIZER_FILE}: does not match the vocabulary hash in {MANIFEST_FILE} "
            "(edited or corrupted after the corpus was written)"
        )


# Ids checked per chunk, so the check reads a large tokens.bin without copying it whole.
_ID_CHECK_CHUNK = 1 << 24


def _check_token_ids(file: Path, tokens: np.memmap, vocab_size: int) -> None:
    """Every id must name a vocabulary token (checked once, when the corpus opens)."""
    for start in range(0, len(tokens), _ID_CHECK_CHUNK):
        chunk = np.asarray(tokens[start : start + _ID_CHECK_CHUNK])
        if int(chunk.max()) >= vocab_size:
            position = start + int(np.argmax(chunk >= vocab_size))
            raise CorpusError(
                f"{file}: token id {int(tokens[position])} at position {position} is outside "
                f"the vocabulary (0..{vocab_size - 1}); the file is corrupted"
            )


def _map(file: Path, dtype: type, expected: int) -> np.memmap:
    size = file.stat().st_size
    itemsize = np.dtype(dtype).itemsize
    if size != expected * itemsize:
        raise CorpusError(
            f"{file}: holds {size // itemsize} values but the index counts {expected}"
        )
    if expected == 0:
        raise CorpusError(f"{file}: empty")
    return np.memmap(file, dtype=dtype, mode="r")
