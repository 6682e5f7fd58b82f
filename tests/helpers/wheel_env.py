"""Build seqlm's wheel from a copy of the sources and install it into a fresh venv.

The wheel itself is installed by pip into the new environment (so a file missing from
the package data is missing there too); its dependencies are the ones of the
environment running the tests, reached through a `.pth` path line rather than installed
again, which keeps this inside the default test run. A `.pth` path line adds a folder to
sys.path without running the `.pth` files inside it, so the editable install of the test
environment stays out of the fresh one.
"""

from __future__ import annotations

import importlib.util
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def build_wheel(workdir: Path) -> Path:
    """A wheel built from a copy of the sources (the checkout gets no build/ folder)."""
    source = workdir / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(REPO_ROOT / "seqlm", source / "seqlm", ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO_ROOT / name, source / name)
    out = workdir / "dist"
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out)]
    if importlib.util.find_spec("setuptools") is not None:
        command.append("--no-build-isolation")  # offline when setuptools is already here
    subprocess.run([*command, str(source)], check=True, capture_output=True, text=True)
    (wheel,) = out.glob("seqlm-*.whl")
    return wheel


def install_in_fresh_venv(wheel: Path, venv: Path) -> Path:
    """Install `wheel` into a new venv at `venv`; returns its `seqlm` executable."""
    # Without its own pip (ensurepip takes ~20 s); this pip installs into it (--python).
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True
    )
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
    pip += ["--no-index", str(wheel)]
    subprocess.run(pip, check=True, capture_output=True, text=True)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    deps |= set(site.getsitepackages())
    (Path(purelib) / "_test_dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")
    return venv / "bin" / "seqlm"
