"""The privacy threshold applied to what a corpus records besides its vocabulary.

The vocabulary already drops every token seen in fewer than `min_entities` train
entities (`seqlm.vocabularies.fitting`). Adapters also record facts about the data in
`Ingested.settings`, which the manifest copies; any of those that name kinds or codes
must pass the same threshold. A kind passes when the vocabulary kept its unknown token
(`KIND//[UNK]`), which needs the same support as any token. A static MEDS code with no
`//` is its own kind, so without this a code of one subject would reach
`manifest.json` as a "static kind".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from seqlm.vocabularies.vocabulary import Vocabulary

# Settings keys whose value is a list of kinds (filtered to kinds the vocabulary kept).
KIND_LIST_SETTINGS: tuple[str, ...] = ("static_kinds",)


def vocabulary_kinds(vocab: Vocabulary) -> set[str]:
    """Kinds with their own unknown token: seen in at least `min_entities` train entities."""
    kinds = set()
    for token, role in zip(vocab.tokens, vocab.roles, strict=True):
        if role == "unknown":
            kind = vocab.token_info(token).kind
            if kind is not None:
                kinds.add(kind)
    return kinds


def public_settings(settings: Mapping[str, Any], vocab: Vocabulary) -> dict[str, Any]:
    """A copy of an adapter's settings with every kind list cut to the kept kinds."""
    public = dict(settings)
    kept = vocabulary_kinds(vocab)
    for key in KIND_LIST_SETTINGS:
        if isinstance(public.get(key), list | tuple):
            public[key] = [k for k in public[key] if k in kept]
    return public
