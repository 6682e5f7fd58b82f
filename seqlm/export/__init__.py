"""Exporting trained runs to other ecosystems."""

from seqlm.export.hf import check_exportable, export_hf

__all__ = ["check_exportable", "export_hf"]
