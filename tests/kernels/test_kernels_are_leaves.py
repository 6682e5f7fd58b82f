"""Kernels are leaves: importing them loads no model (nor any other higher floor), and
`seqlm.constants` imports nothing of seqlm; the model picks its losses from the kernels."""

from __future__ import annotations

import subprocess
import sys


def _modules_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {name for name in out.stdout.split() if name.startswith("seqlm")}


def test_kernels_import_no_model() -> None:
    for module in ("seqlm.kernels", "seqlm.kernels.model_loss"):
        loaded = _modules_after_import(module)
        assert module in loaded
        higher = ("seqlm.model", "seqlm.training", "seqlm.evaluation", "seqlm.corpus")
        assert not {m for m in loaded if m.startswith(higher)}


def test_constants_are_the_ground_floor() -> None:
    assert _modules_after_import("seqlm.constants") <= {"seqlm", "seqlm.constants"}


def test_the_model_offers_the_kernel_losses_by_name() -> None:
    from seqlm.kernels.model_loss import KERNEL_LOSS_IMPLS
    from seqlm.model.loss import loss_impl

    for name in KERNEL_LOSS_IMPLS:
        assert loss_impl(name).keywords["options"].impl == name
