"""Plain symbol strings with a bout marker, such as the mMAN lesion data.

One file per bird and condition (`bird1_prelesion`, `bird1_postlesion_REPR`), one
character per syllable, `bout_marker` (`Y`) at the start of each bout. Whitespace and
line breaks are not syllables, and the marker is structure, not a syllable: `rows_read`
counts the syllable characters of the files read, so for the lesion data it matches the
figures of the data's README (176,362 syllables before the lesion, 138,890 after, plain
files; the 2,105 `Y`s of each condition are not counted). Characters before the first
marker form a bout of their own. There are no times: `time` is null, `order` the
position in the bout, `value` null.

Folders: the files without a suffix or ending `.txt` (licence/readme files skipped), of
the chosen `variant`: `plain`, or `repr` (names ending `_REPR`: repeat phrases collapsed
into one capital letter). Files named explicitly are read whatever their variant.

Names: the bird is found by `bird_pattern` (`bird3_prelesion` -> `bird3`); the condition
(`pre`/`post`) by `condition_pattern` (null when absent). A bout's entity is
`<bird>/<condition>/<bout index, 4 digits>` (`bird3/pre/0042`; REPR files `pre-repr`),
or `<file stem>/<bout index>` when the name has no condition. In rejects `row` is the
1-based character position in the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from seqlm.corpora_adapters.base import Ingested, register_adapter
from seqlm.corpora_adapters.birdsong.bouts import (
    BIRDSONG_SCHEME_DEFAULTS,
    BirdsongOptions,
    EventBuilder,
    bird_from_name,
    collect_inputs,
    recording_name,
    settings_of,
    unique_files,
)
from seqlm.corpora_adapters.birdsong.textio import read_text
from seqlm.errors import ConfigError, InputError

SUFFIXES = ("", ".txt")
STRING_ATTRIBUTES = ("source_file", "condition", "variant")
_REPR = re.compile(r"(?i)_repr$")


@dataclass
class StringsOptions(BirdsongOptions):
    """`bout_marker`: the character that starts a bout. `variant`: which files of a
    folder are read (`plain` or `repr`). `condition_pattern`: regex whose first group is
    the condition in a file name."""

    bout_marker: str = field(
        default="Y", metadata={"help": "The character that starts a bout in the symbol strings."}
    )
    variant: Literal["plain", "repr"] = field(
        default="plain",
        metadata={"help": "Which files of a folder are read: plain or repr (the *_REPR files)."},
    )
    condition_pattern: str = field(
        default=r"(?i)(pre|post)[-_]?lesion",
        metadata={
            "help": "Regex whose first group, searched in the file name, is the condition (pre/post lesion)."
        },
    )
    encoding: str | None = field(
        default=None,
        metadata={
            "help": "Text encoding of the files; null = UTF-8 (with or without a byte-order mark)."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.bout_marker) != 1 or self.bout_marker.isspace():
            raise ConfigError(
                f"option bout_marker must be one visible character, got {self.bout_marker!r}"
            )
        try:
            compiled = re.compile(self.condition_pattern)
        except re.error as err:
            raise ConfigError(f"option condition_pattern is not a valid regex: {err}") from None
        if compiled.groups < 1:
            raise ConfigError("option condition_pattern needs a capture group")


def file_variant(path: Path) -> str:
    return "repr" if _REPR.search(recording_name(path, (".txt",))) else "plain"


def string_files(inputs: list[Path], options: StringsOptions) -> list[Path]:
    if not inputs:
        raise ConfigError("no input files given")
    files: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found = collect_inputs([path], SUFFIXES, options.pattern, "symbol string")
            chosen = [f for f in found if file_variant(f) == options.variant]
            if not chosen:
                raise InputError(f"no {options.variant} symbol-string files here", file=path)
            files.extend(chosen)
        else:
            files.extend(collect_inputs([path], SUFFIXES, options.pattern, "symbol string"))
    return unique_files(files)


def read_string_file(path: Path, options: StringsOptions, builder: EventBuilder) -> None:
    text = read_text(path, options.encoding)
    stem = recording_name(path, (".txt",))
    variant = file_variant(path)
    bird = bird_from_name(stem, options)
    match = re.search(options.condition_pattern, stem)
    condition = match.group(1).lower() if match and match.group(1) else None
    if condition is not None:
        prefix = f"{bird}/{condition}" + ("-repr" if variant == "repr" else "")
    else:
        prefix = stem
    builder.claim(prefix, path)
    attributes = {"source_file": path.name, "condition": condition, "variant": variant}
    intro = set(options.intro_labels) if options.drop_intro else set()
    width = max(4, len(str(text.count(options.bout_marker))))
    marker = options.bout_marker
    bout_index = -1
    position = 0  # 0-based character position of the chunk's first character
    for chunk_number, chunk in enumerate(text.split(marker)):
        if chunk_number > 0:
            position += 1  # the marker itself
            bout_index += 1
        elif chunk.strip():
            bout_index = 0  # syllables before the first marker: a bout of their own
        codes: list[str] = []
        for offset, char in enumerate(chunk):
            if char.isspace():
                continue
            builder.rows_read += 1
            if char in intro:
                builder.rejects.add(path.name, position + offset + 1, "introductory note")
            else:
                codes.append(char)
        position += len(chunk)
        if codes:
            builder.add_bout(
                f"{prefix}/{bout_index:0{width}d}",
                bird,
                codes,
                [None] * len(codes),
                [None] * len(codes),
                attributes,
            )


@register_adapter(
    "birdsong-strings",
    options=StringsOptions,
    description="symbol strings, one character per syllable, with a bout marker (lesion data)",
    scheme_defaults=BIRDSONG_SCHEME_DEFAULTS,
)
def read(inputs: list[Path], options: StringsOptions) -> Ingested:
    """Read symbol-string files (or folders of them): one entity per bout."""
    files = string_files(inputs, options)
    builder = EventBuilder(STRING_ATTRIBUTES)
    for path in files:
        read_string_file(path, options, builder)
    return builder.ingested("birdsong-strings", settings_of(options, files))
