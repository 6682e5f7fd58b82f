"""The corpus on disk: splits, the writer (`build_corpus`), the reader (`load_corpus`)
and the summary behind `seqlm corpus info` (`corpus_info`)."""

from __future__ import annotations

from seqlm.corpus.info import CorpusInfo, corpus_info
from seqlm.corpus.splits import SplitConfig, assign_splits
from seqlm.corpus.store import Corpus, load_corpus
from seqlm.corpus.writer import build_corpus

__all__ = [
    "Corpus",
    "CorpusInfo",
    "SplitConfig",
    "assign_splits",
    "build_corpus",
    "corpus_info",
    "load_corpus",
]
