"""Small real corpora bundled with seqlm, so examples run without a download."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from seqlm.config import options_from_mapping
from seqlm.corpora_adapters import get_adapter
from seqlm.corpora_adapters.base import Ingested

FINCH_LESIONS = "finch_lesions"


def finch_lesions_path() -> Path:
    """The folder of the Bengalese finch lesion data (Koparkar et al. 2024, MIT)."""
    return Path(str(resources.files(__package__).joinpath(FINCH_LESIONS)))


def finch_lesions(variant: str = "plain") -> Ingested:
    """The finch lesion data read by the `birdsong-strings` adapter: 7 birds, song before
    and after mMAN lesions, one bout per entity, `group` = bird, `condition` = pre/post.

    `variant="repr"` reads the files with repeat phrases collapsed to one symbol.
    """

    spec = get_adapter("birdsong-strings")
    options = options_from_mapping(spec.options, {"variant": variant})
    return spec.read([finch_lesions_path()], options)
