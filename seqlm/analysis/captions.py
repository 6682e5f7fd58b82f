"""Titles that carry the interpretation gate's caution (`seqlm.analysis.trust`)."""

from __future__ import annotations


def with_caution(caution: str, title: str) -> str:
    """A figure or page title with the caution on its own first line."""
    return f"{caution}\n{title}" if caution else title
