"""evsonganaly `.not.mat` files (MATLAB v5, read with scipy.io): one song file each.

evsonganaly saves, for each song `x.cbin`, a file `x.cbin.not.mat` holding `onsets` and
`offsets` (milliseconds from the start of the song file), `labels` (a char array, one
character per segment; unlabelled segments are often `-` or `0`, kept as written),
`Fs` (Hz), and the segmentation settings `min_dur`, `min_int`, `threshold`, `sm_win`.
Only onsets, offsets and labels are needed; the segmentation settings go nowhere (they
describe how segments were found, not the song).

`row` in errors and rejects is the 1-based segment number. `rows_read` counts segments
(characters of `labels`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seqlm.corpora_adapters.base import Ingested, register_adapter
from seqlm.corpora_adapters.birdsong.bouts import (
    BIRDSONG_SCHEME_DEFAULTS,
    EventBuilder,
    Syllable,
    TimedOptions,
    add_file_recording,
    check_times,
    read_files,
)
from seqlm.corpora_adapters.birdsong.textio import read_bytes
from seqlm.corpora_adapters.inflation import check_mat_inflation
from seqlm.errors import InputError

SUFFIXES = (".not.mat",)
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


@dataclass
class NotMatOptions(TimedOptions):
    pass


def load_notmat(path: Path) -> dict[str, Any]:
    """The variables of a MATLAB v5 file; any failure becomes an InputError."""
    data = read_bytes(path)
    if not data:
        raise InputError("file is empty", file=path)
    if data[512 : 512 + len(_HDF5_SIGNATURE)] == _HDF5_SIGNATURE or b"MATLAB 7.3" in data[:128]:
        raise InputError(
            "MATLAB v7.3 (HDF5) file: evsonganaly writes v5; re-save with save(..., '-v7')",
            file=path,
        )
    check_mat_inflation(data, path)  # before scipy inflates it all in memory
    # Imported here: every `seqlm ingest` registers this adapter, few read .mat files,
    # and scipy.io cost every ingest 0.24 s of start-up before its workers start.
    import scipy.io

    try:
        return scipy.io.loadmat(io.BytesIO(data), squeeze_me=True, chars_as_strings=True)
    except Exception as err:  # scipy raises many types on damaged files; all mean "bad input"
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise InputError(f"not a readable MATLAB .mat file: {reason}", file=path) from None


def _times(variables: dict[str, Any], name: str, path: Path) -> np.ndarray:
    if name not in variables:
        raise InputError(f"no {name!r} variable in this .not.mat", file=path, column=name)
    try:
        values = np.atleast_1d(np.asarray(variables[name], dtype=np.float64)).ravel()
    except (TypeError, ValueError):
        raise InputError(f"{name!r} is not numeric", file=path, column=name) from None
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise InputError(
            f"{name!r} has a non-finite value", file=path, row=int(bad[0]) + 1, column=name
        )
    return values


def _labels(variables: dict[str, Any], path: Path) -> str:
    if "labels" not in variables:
        raise InputError("no 'labels' variable in this .not.mat", file=path, column="labels")
    raw = variables["labels"]
    if isinstance(raw, str):
        return raw
    array = np.asarray(raw)
    if array.size == 0:
        return ""
    if array.dtype.kind == "U":  # a char matrix: one string per row, read in order
        return "".join(str(s) for s in array.ravel())
    raise InputError(
        f"'labels' must be a char array, got {array.dtype} values", file=path, column="labels"
    )


def notmat_syllables(path: Path) -> list[Syllable]:
    variables = load_notmat(path)
    labels = _labels(variables, path)
    onsets = _times(variables, "onsets", path)
    offsets = _times(variables, "offsets", path)
    if not len(labels) == len(onsets) == len(offsets):
        raise InputError(
            f"{len(labels)} labels but {len(onsets)} onsets and {len(offsets)} offsets",
            file=path,
            column="labels",
        )
    syllables = []
    for number, (label, onset_ms, offset_ms) in enumerate(
        zip(labels, onsets, offsets, strict=True), start=1
    ):
        onset, offset = float(onset_ms), float(offset_ms)
        check_times(onset, offset, path, number, ("onsets", "offsets"))
        syllables.append(Syllable(label.strip(), onset / 1000.0, offset / 1000.0, number))
    return syllables


@register_adapter(
    "notmat",
    options=NotMatOptions,
    description="evsonganaly .not.mat (onsets/offsets in ms, one-character labels)",
    scheme_defaults=BIRDSONG_SCHEME_DEFAULTS,
)
def read(inputs: list[Path], options: NotMatOptions) -> Ingested:
    """Read `.not.mat` files (or folders of them), one song file each."""
    return read_files("notmat", inputs, options, SUFFIXES, ".not.mat", read_notmat_file)


def read_notmat_file(path: Path, options: NotMatOptions, builder: EventBuilder) -> None:
    add_file_recording(builder, path, SUFFIXES, notmat_syllables(path), options, "labels")
