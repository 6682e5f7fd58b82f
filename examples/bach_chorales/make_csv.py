"""Bach chorales (music21's corpus) as a CSV event table for `seqlm ingest tabular`.

Reads every `music21/corpus/bach/*.mxl` straight from the music21 wheel (or an
unpacked music21 folder), unzips each .mxl (a zip holding one MusicXML file) and parses
it with the standard library's xml module: no music21 import, no network. One row per
sounded note: chorale (the file name, e.g. bwv102.7), onset in quarter notes from the
start, the part (Soprano, Alto, Tenor, Bass, or the part's own name), its index in the
score (to order notes struck together, top voice first) and the MIDI pitch. Only the
four voices (parts named Soprano, Alto, Tenor, Bass) are kept unless `--all-parts`:
403 of the 408 scores have all four; doubling instruments and the odd piano piece
(bwv846) are left out. Rests only
move time on; a note tied from the previous one is the same sounding note, not a new
event; grace notes (no duration) are left out. Repeats are not unfolded.

    python examples/bach_chorales/make_csv.py music21-10.5.1-py3-none-any.whl /tmp/bach.csv
    seqlm ingest tabular /tmp/bach.csv --config examples/bach_chorales/mapping.toml \
        --out /tmp/bach/corpus
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

CORPUS_PREFIX = "music21/corpus/bach/"
STEP_SEMITONES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
COLUMNS = ("chorale", "onset", "part", "part_index", "pitch")
VOICES = ("Soprano", "Alto", "Tenor", "Bass")


def _midi(pitch: ElementTree.Element) -> int:
    step = pitch.findtext("step", "C").strip()
    alter = float(pitch.findtext("alter", "0") or 0)
    octave = int(pitch.findtext("octave", "4"))
    return 12 * (octave + 1) + STEP_SEMITONES[step] + round(alter)


def _part_names(root: ElementTree.Element) -> dict[str, str]:
    names = {}
    for part in root.iter("score-part"):
        name = (part.findtext("part-name") or "").strip() or part.get("id", "")
        names[part.get("id", "")] = " ".join(name.replace(",", " ").split())
    return names


def _part_notes(part: ElementTree.Element) -> Iterator[tuple[float, int]]:
    """(onset in quarter notes, MIDI pitch) of each struck note of one part."""
    divisions = 1.0
    position = 0.0  # in divisions
    last_onset = 0.0
    for measure in part.iter("measure"):
        for item in measure:
            if item.tag == "attributes" and item.findtext("divisions"):
                divisions = float(item.findtext("divisions"))
            elif item.tag == "backup":
                position -= float(item.findtext("duration", "0"))
            elif item.tag == "forward":
                position += float(item.findtext("duration", "0"))
            elif item.tag == "note":
                if item.find("grace") is not None:
                    continue
                duration = float(item.findtext("duration", "0"))
                onset = last_onset if item.find("chord") is not None else position
                if item.find("chord") is None:
                    position += duration
                last_onset = onset
                pitch = item.find("pitch")
                tied_from_before = any(t.get("type") == "stop" for t in item.findall("tie"))
                if pitch is not None and not tied_from_before:
                    yield onset / divisions, _midi(pitch)


def chorale_rows(
    name: str, xml_bytes: bytes, all_parts: bool = False
) -> list[tuple[str, float, str, int, int]]:
    """The rows of one chorale's MusicXML text (the four voices, or every part)."""
    root = ElementTree.fromstring(xml_bytes)
    names = _part_names(root)
    rows = []
    for index, part in enumerate(root.findall("part")):
        voice = names.get(part.get("id", ""), part.get("id", f"part{index}"))
        if not all_parts and voice not in VOICES:
            continue
        for onset, midi in _part_notes(part):
            rows.append((name, round(onset, 6), voice, index, midi))
    rows.sort(key=lambda row: (row[1], row[3]))
    return rows


def _musicxml_of(mxl: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(mxl)) as inner:
        scores = [n for n in inner.namelist() if not n.startswith("META-INF/")]
        scores = [n for n in scores if n.endswith((".xml", ".musicxml"))] or scores
        return inner.read(scores[0])


def mxl_files(source: Path) -> Iterator[tuple[str, bytes]]:
    """(chorale name, .mxl bytes) from the music21 wheel or a folder of .mxl files."""
    if source.is_file():
        with zipfile.ZipFile(source) as wheel:
            for member in sorted(wheel.namelist()):
                rest = member[len(CORPUS_PREFIX) :]
                if member.startswith(CORPUS_PREFIX) and "/" not in rest and rest.endswith(".mxl"):
                    yield rest[: -len(".mxl")], wheel.read(member)
    else:
        for path in sorted(source.glob("*.mxl")):
            yield path.stem, path.read_bytes()


def write_csv(source: Path, out: Path, all_parts: bool = False) -> tuple[int, int]:
    """Write the event table; returns (chorales, rows)."""
    chorales = rows = 0
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for name, mxl in mxl_files(source):
            table = chorale_rows(name, _musicxml_of(mxl), all_parts)
            writer.writerows(table)
            chorales += bool(table)
            rows += len(table)
    return chorales, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="music21 wheel, or a folder of .mxl files")
    parser.add_argument("out", type=Path, help="CSV file to write")
    parser.add_argument("--all-parts", action="store_true", help="keep instrument parts too")
    args = parser.parse_args(argv)
    if not args.source.exists():
        print(f"{args.source}: no such file or folder", file=sys.stderr)
        return 2
    chorales, rows = write_csv(args.source, args.out, args.all_parts)
    if chorales == 0:
        print(f"{args.source}: no {CORPUS_PREFIX}*.mxl files", file=sys.stderr)
        return 2
    print(f"{args.out}: {rows:,} notes from {chorales} chorales")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
