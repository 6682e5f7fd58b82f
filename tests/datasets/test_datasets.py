from __future__ import annotations

from seqlm.datasets import finch_lesions, finch_lesions_path


def test_bundled_finch_data_has_licence_and_all_files():
    folder = finch_lesions_path()
    assert (folder / "LICENSE.txt").read_text().startswith("MIT License")
    for bird in range(1, 8):
        for condition in ("pre", "post"):
            assert (folder / f"bird{bird}_{condition}lesion").is_file()


def test_finch_lesions_reads_every_syllable():
    ingested = finch_lesions()
    events = ingested.events.collect()
    # the data README's figures: 176,362 syllables before and 138,890 after the lesions
    counts = dict(events.group_by("condition").len().iter_rows())
    assert counts == {"pre": 176_362, "post": 138_890}
    assert ingested.rows_read == events.height + len(ingested.rejects)
    assert events["group"].n_unique() == 7
