"""Koumura & Okanoya (2016) BirdsongRecognition XML (`BirdN/Annotation.xml`).

```
<Sequences>                             (or <AnnotationSequence>; the root is not checked)
  <NumSequence>571</NumSequence>
  <Sequence>
    <WaveFileName>0.wav</WaveFileName>
    <Position>32000</Position>          sample where the sequence starts in the wav
    <Length>43168</Length>
    <NumNote>..</NumNote>
    <Note><Position>..</Position><Length>..</Length><Label>a</Label></Note> …
```

Note positions are samples relative to their sequence; times are samples divided by
`sample_rate` (32 kHz in that dataset, an option here since the XML does not state it).
Each `Sequence` is a song bout already, so `bout_gap_s` defaults to None (set it to split
sequences further). A wav file can hold several sequences: the recording is
`<bird>/<wav stem>` and its bouts are numbered in time order (`Bird0/0#1`). The bird id
is `bird` if given, else a `BirdN` folder holding the XML file (the dataset's
`BirdN/Annotation.xml` layout) or named in the wav paths, else the `bird_pattern` rule
on the file name; an `Annotation.xml` elsewhere names no bird (never its folder's name).
The corpus is split by recording (`splits.by = "recording"`): the sequences of one wav
are chunks of one song session and stay in one split unless told otherwise.

Parsed with expat (no DTDs or external entities are fetched), so errors carry the line.
`row` is the line of a `<Note>`; `rows_read` counts `Note` elements.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

from seqlm.corpora_adapters.base import Ingested, register_adapter
from seqlm.corpora_adapters.birdsong.bouts import (
    BIRDSONG_SCHEME_DEFAULTS,
    EventBuilder,
    Syllable,
    TimedOptions,
    bird_from_name,
    check_times,
    read_files,
    require_positive,
)
from seqlm.corpora_adapters.birdsong.textio import parse_number, read_bytes
from seqlm.errors import InputError

SUFFIXES = (".xml",)


@dataclass
class KoumuraOptions(TimedOptions):
    """`sample_rate`: Hz of the wav files (positions are in samples)."""

    bout_gap_s: float | None = field(
        default=None,
        metadata={
            "help": "A silence longer than this (seconds) starts a new bout; null keeps each recording's song whole."
        },
    )
    sample_rate: float = field(
        default=32000.0, metadata={"help": "Hz of the wav files (note positions are in samples)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive("sample_rate", self.sample_rate)


@dataclass
class _Note:
    line: int
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class _Sequence:
    line: int
    fields: dict[str, str] = field(default_factory=dict)
    notes: list[_Note] = field(default_factory=list)


def parse_annotation_xml(data: bytes, file: Path) -> list[_Sequence]:
    """The sequences and notes of a Koumura XML file, with line numbers."""
    sequences: list[_Sequence] = []
    path: list[str] = []
    text: list[str] = []
    open_note: list[_Note] = []  # the <Note> being read, if any
    parser = expat.ParserCreate()

    def start(name: str, _attributes: dict[str, str]) -> None:
        parent = path[-1] if path else None
        path.append(name)
        text.clear()
        if name == "Sequence":
            sequences.append(_Sequence(parser.CurrentLineNumber))
        elif name == "Note" and parent == "Sequence" and sequences:
            note = _Note(parser.CurrentLineNumber)
            sequences[-1].notes.append(note)
            open_note.append(note)

    def end(name: str) -> None:
        value = "".join(text).strip()
        text.clear()
        path.pop()
        parent = path[-1] if path else None
        if name == "Note" and parent == "Sequence" and open_note:
            open_note.clear()
        elif parent == "Note" and open_note:
            open_note[-1].fields[name] = value
        elif parent == "Sequence" and sequences:
            sequences[-1].fields[name] = value

    def refuse_entities(name: str, *_declaration: object) -> None:
        # As defusedxml: no entity declarations, so no expansion can exhaust memory.
        raise InputError(
            f"XML declares the entity {name!r}; entity declarations are not allowed "
            "(their expansion can exhaust memory)",
            file=file,
            row=parser.CurrentLineNumber,
        )

    parser.EntityDeclHandler = refuse_entities
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text.append
    try:
        parser.Parse(data, True)
    except expat.ExpatError as err:
        message = expat.ErrorString(err.code)
        raise InputError(f"not well-formed XML: {message}", file=file, row=err.lineno) from None
    except RecursionError:
        raise InputError("XML nested too deeply", file=file) from None
    return sequences


def _field(fields: dict[str, str], name: str, file: Path, line: int) -> str:
    if name not in fields:
        raise InputError(f"no <{name}> element", file=file, row=line, column=name)
    return fields[name]


def _samples(fields: dict[str, str], name: str, file: Path, line: int) -> float:
    value = parse_number(_field(fields, name, file, line), file, line, name)
    if value < 0:
        raise InputError(f"negative {name} {value:g}", file=file, row=line, column=name)
    return value


_BIRD_NAME = re.compile(r"(?i)bird\d+")


def bird_of(path: Path, options: KoumuraOptions, wav_names: list[str]) -> str | None:
    """The bird: `bird` if given; else a `BirdN` folder holding the XML (the dataset's
    `BirdN/Annotation.xml`) or named in the wav paths; else, for a file not named
    `Annotation.xml`, the `bird_pattern` rule on its name. An `Annotation.xml` copied
    elsewhere (`examples/Annotation.xml`) names no bird: None, never the folder's name."""
    if options.bird is not None:
        return options.bird
    parents = path.resolve().parents
    for folder in (parents[0].name, parents[1].name if len(parents) > 1 else ""):
        if _BIRD_NAME.fullmatch(folder):
            return folder
    for wav in wav_names:
        for part in re.split(r"[/\\]", wav)[:-1]:
            if _BIRD_NAME.fullmatch(part):
                return part
    if path.name.lower() == "annotation.xml":
        return None
    return bird_from_name(path.name, options)


def read_koumura_file(path: Path, options: KoumuraOptions, builder: EventBuilder) -> None:
    data = read_bytes(path)
    if not data.strip():
        raise InputError("file is empty", file=path)
    sequences = parse_annotation_xml(data, path)
    if not sequences:
        raise InputError("no <Sequence> elements: not a Koumura annotation file", file=path)
    wavs = [sequence.fields.get("WaveFileName", "") for sequence in sequences]
    bird = bird_of(path, options, wavs)
    if bird is None:
        builder.note(
            f"{path.name}: no bird named (no BirdN folder or wav path); its recordings have "
            "no group: give one with --option bird=NAME"
        )
    by_wav: dict[str, list[Syllable]] = {}
    for sequence in sequences:
        wav = _field(sequence.fields, "WaveFileName", path, sequence.line)
        start = _samples(sequence.fields, "Position", path, sequence.line)
        syllables = by_wav.setdefault(wav, [])
        # Sequences of one wav are numbered in order of their start sample.
        bout = int(start)
        for note in sequence.notes:
            onset = (
                start + _samples(note.fields, "Position", path, note.line)
            ) / options.sample_rate
            length = _samples(note.fields, "Length", path, note.line)
            offset = onset + length / options.sample_rate
            check_times(onset, offset, path, note.line, ("Position", "Length"))
            label = _field(note.fields, "Label", path, note.line)
            syllables.append(Syllable(label, onset, offset, note.line, bout))
    for wav, syllables in by_wav.items():
        stem = re.split(r"[/\\]", wav)[-1].rsplit(".", 1)[0] or wav
        recording = f"{bird or path.stem}/{stem}"
        builder.add_recording(path, recording, bird, syllables, options, label_column="Label")


@register_adapter(
    "koumura-xml",
    options=KoumuraOptions,
    description="Koumura BirdsongRecognition XML (Sequence/Note positions in samples)",
    scheme_defaults=BIRDSONG_SCHEME_DEFAULTS,
    aliases=("birdsong-recognition-dataset",),
    # A <Sequence> is a chunk of one recording: keep a recording's chunks in one split.
    split_defaults={"by": "recording"},
)
def read(inputs: list[Path], options: KoumuraOptions) -> Ingested:
    """Read Koumura `Annotation.xml` files (or folders holding them)."""
    return read_files("koumura-xml", inputs, options, SUFFIXES, "Koumura XML", read_koumura_file)
