"""seqlm's figures leave matplotlib's global state alone: the backend, rcParams and
pyplot's list of figures are the user's (a notebook's inline backend must survive)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap

from helpers.shared_data import REPO_ROOT

from seqlm.plotting import plain_text, subplots

# Runs in a fresh interpreter on the SVG backend (not Agg, so a switch to Agg shows) and
# draws figures whose labels hold TeX-like text. (Every other drawing module is held to
# the same rule by the source check at the end of this file.)
SCRIPT = textwrap.dedent(
    r"""
    import json, sys
    from pathlib import Path
    import matplotlib
    before = matplotlib.get_backend(), matplotlib.rcParams["text.parse_math"]
    import polars as pl
    from seqlm.analysis.stats_plots import plot_entropy
    from seqlm.evaluation.plots import perplexity_by_group_plot
    out = Path(sys.argv[1])
    frame = pl.DataFrame({"group": [r"$\frac{$", "b"], "model": ["m", "m"],
                          "perplexity": [3.0, 4.0]})
    perplexity_by_group_plot(frame, out / "bars.png", models=["m"], title="$x")
    heads = pl.DataFrame({"layer": [0, 0], "head": [0, 1], "entropy": [1.0, 2.0],
                          "normalized_entropy": [0.5, 0.9]})
    plot_entropy(heads, out / "entropy", title="run $x$")
    import matplotlib.pyplot as plt
    after = matplotlib.get_backend(), matplotlib.rcParams["text.parse_math"]
    print(json.dumps({"before": before, "after": after, "open": plt.get_fignums()}))
    """
)


def test_importing_and_plotting_leave_matplotlib_state_alone(tmp_path):
    env = {**os.environ, "MPLBACKEND": "svg", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    state = __import__("json").loads(result.stdout.strip().splitlines()[-1])
    assert state["before"] == ["svg", True]
    assert state["after"] == state["before"]
    assert state["open"] == []
    assert (tmp_path / "bars.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "entropy.png").read_bytes()[:4] == b"\x89PNG"


def test_labels_are_literal_only_while_drawing():
    import matplotlib

    @plain_text
    def draw() -> bool:
        figure, axes = subplots(figsize=(2, 2))
        axes.set_title(r"$\frac{$")  # TeX parsing would fail on this at draw time
        figure.canvas.draw()
        return bool(matplotlib.rcParams["text.parse_math"])

    before = matplotlib.rcParams["text.parse_math"]
    assert draw() is False
    assert matplotlib.rcParams["text.parse_math"] == before


def test_subplots_splits_figure_and_grid_keywords():
    figure, axes = subplots(2, 1, figsize=(3, 4), dpi=50, sharex=True, height_ratios=(3, 1))
    assert tuple(figure.get_size_inches()) == (3.0, 4.0) and figure.dpi == 50
    assert len(axes) == 2 and axes[0].get_shared_x_axes().joined(axes[0], axes[1])


def test_no_library_module_touches_pyplot_or_the_backend():
    offenders = []
    for path in sorted((REPO_ROOT / "seqlm").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            imported = []
            if isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                imported = [f"{node.module}.{alias.name}" for alias in node.names]
            if any(name.startswith("matplotlib.pyplot") for name in imported):
                offenders.append(f"{path.name}:{node.lineno} imports pyplot")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "use"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in ("matplotlib", "mpl")
            ):
                offenders.append(f"{path.name}:{node.lineno} calls matplotlib.use")
    assert offenders == []
