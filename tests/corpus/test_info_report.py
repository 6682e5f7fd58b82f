"""corpus_report: everything `seqlm corpus info` shows, gathered in one call."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
from helpers.corpus_helpers import clinic_frame, ingested

from seqlm.corpus import SplitConfig, build_corpus, corpus_info
from seqlm.corpus.breakdown import counts_by
from seqlm.corpus.info_report import corpus_report
from seqlm.vocabularies import TokenScheme


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    scheme = TokenScheme(value_bins=4, min_values_per_bin=2, min_entities=3)
    out = tmp_path_factory.mktemp("report") / "corpus"
    return build_corpus(ingested(clinic_frame(30)), out, scheme, SplitConfig())


def test_report_without_columns_is_the_summary_alone(built):
    report = corpus_report(built.path, top=5)
    assert report.info == corpus_info(built.path, top=5)
    assert report.clinical is None and report.breakdown is None and report.by == ()
    assert report.to_dict() == asdict(corpus_info(built.path, top=5))


def test_report_counts_by_the_columns_asked_for(built):
    report = corpus_report(built.path, ["group"], top=3)
    expected = counts_by(built.path, ["group"])
    assert report.by == ("group",)
    assert report.breakdown.equals(expected)
    payload = json.loads(json.dumps(report.to_dict(), default=str))
    assert payload["counts_by"] == expected.to_dicts()
    assert sum(row["sequences"] for row in payload["counts_by"]) == built.index.height
    assert len(payload["top_tokens"]) == 3
