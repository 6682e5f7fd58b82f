"""seqlm: language models of structured event streams."""

__version__ = "0.1.0"
