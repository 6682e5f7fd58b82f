"""Exporting to other ecosystems: a trained run as a Hugging Face GPT-2 (`hf`), token
sequences (a corpus's or a model's generations) as MEDS rows (`meds`)."""

from seqlm.export.hf import check_exportable, export_hf

__all__ = ["check_exportable", "export_hf"]
