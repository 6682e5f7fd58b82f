"""Birdsong adapters: one module per annotation format, sharing `bouts.py`.

Registered names: `birdsong-strings` (symbol strings with a bout marker, e.g. the mMAN
lesion data), `crowsetta-generic-seq`, `simple-seq` (also DAS CSVs), `audacity`,
`textgrid`, `notmat` (evsonganaly), `koumura-xml`. Every adapter gives `kind="syllable"`
events with `group` = bird and one entity per bout; see `bouts.py` for the rules.
"""

# Importing the package registers every birdsong adapter (one ADAPTER_MODULES entry).
from seqlm.corpora_adapters.birdsong import (  # noqa: E402
    audacity,
    generic_seq,
    koumura_xml,
    notmat,
    simple_seq,
    strings,
    textgrid,
)

__all__ = [
    "audacity",
    "generic_seq",
    "koumura_xml",
    "notmat",
    "simple_seq",
    "strings",
    "textgrid",
]
