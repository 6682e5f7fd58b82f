"""A self-contained, offline HTML report: tables as HTML, figures inlined as base64 PNG.

One file that opens in any browser without a network or the files beside it, so it can
be mailed or attached to a lab notebook. No scripts and no external stylesheets.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from seqlm.errors import CorpusError
from seqlm.evaluation.group_ngram import GROUP_NGRAM_NAME

# Figure captions: what each picture shows and how to read it.
FIGURE_CAPTIONS: dict[str, str] = {
    "perplexity_by_group": "Held-out pre-lesion perplexity per bird: the model beside the "
    "baselines (lower is better).",
    "reliability": "Reliability: predicted probability of the top token against how often it "
    "was right. On the diagonal = calibrated.",
    "lesion": "Lesion comparison: perplexity of held-out pre-lesion song and of post-lesion "
    "song under models trained on pre-lesion song only. Higher after = less predictable syntax.",
    "attention_mean_distance": "Mean attention distance (tokens back) per head and layer.",
    "attention_entropy": "Attention entropy per head: low = focused on few tokens.",
    "attention_mass_by_distance": "Share of attention mass by distance, against a uniform "
    "reader: long-range heads put mass far back.",
    "attention_mass_by_time": "Share of attention mass by elapsed time between events.",
    "attention_mean_elapsed": "Mean elapsed time attended back, per head.",
}

SUMMARY_COLUMNS = (
    "model", "tokens", "cross_entropy_nats", "perplexity", "top1", "top1_no_eos", "top5",
    "mean_confidence", "ece",
)  # fmt: skip

STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2rem auto;
       max-width: 1100px; color: #1b1b1b; line-height: 1.45; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .92rem; }
th, td { border: 1px solid #d0d0d0; padding: .25rem .6rem; text-align: right; }
th { background: #f0f0f0; }
td:first-child, th:first-child { text-align: left; }
tr.best td { font-weight: 600; background: #eef7ee; }
figure { margin: 1rem 0; }
figure img { max-width: min(100%, 860px); border: 1px solid #e4e4e4; }
figure.wide img { max-width: 100%; }
table.facts td { text-align: left; }
.scroll { overflow-x: auto; max-width: 100%; }
figcaption { font-size: .9rem; color: #444; }
code, pre { background: #f6f6f6; padding: .1rem .3rem; }
pre { padding: .6rem; overflow-x: auto; }
.headline { font-size: 1.1rem; padding: .6rem .8rem; background: #f4f8ff;
            border-left: 4px solid #3b6fd8; }
.caution { padding: .6rem .8rem; background: #fff1f0; border-left: 4px solid #c0392b;
           color: #7b1d14; white-space: pre-wrap; font-weight: 600; }
"""


@dataclass
class QuickstartReport:
    """What the quickstart's page shows. `figures` maps a name to a PNG file."""

    title: str
    summary: pl.DataFrame
    lesion_rows: pl.DataFrame
    attention_heads: pl.DataFrame | None
    figures: Mapping[str, Path]
    facts: Mapping[str, str] = field(default_factory=dict)
    next_commands: Sequence[str] = ()
    # `PairedComparison.to_dict()` of the model against each baseline, and the
    # interpretation gate's warning lines (empty when the model may be interpreted)
    comparisons: Sequence[Mapping] = ()
    caution: Sequence[str] = ()
    # the same, per bird: the pooled model against that bird's own n-gram on its held-out
    # pre-lesion bouts (`lesion.json` comparisons whose run is the bird)
    per_bird: Sequence[Mapping] = ()


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def html_table(
    frame: pl.DataFrame,
    columns: Sequence[str] | None = None,
    highlight: int | None = None,
    max_rows: int = 200,
    css_class: str = "",
) -> str:
    """`frame` as an HTML table; row `highlight` (0-based) is drawn in bold."""
    columns = list(columns or frame.columns)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for i, row in enumerate(frame.select(columns).head(max_rows).iter_rows()):
        cells = "".join(f"<td>{_cell(v)}</td>" for v in row)
        attr = ' class="best"' if i == highlight else ""
        body.append(f"<tr{attr}>{cells}</tr>")
    more = ""
    if frame.height > max_rows:
        more = f"<p>({frame.height - max_rows} more rows in the folder's files)</p>"
    attr = f' class="{html.escape(css_class)}"' if css_class else ""
    table = f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    return f"<div class='scroll'>{table}</div>{more}"


def inline_png(path: str | Path) -> str:
    """A PNG file as a `data:` URI."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CorpusError(f"{path}: cannot read the figure: {err}") from None
    if not data.startswith(b"\x89PNG"):
        raise CorpusError(f"{path}: not a PNG file")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


WIDE_FIGURES = frozenset({"lesion", "attention_mass_by_distance", "attention_mass_by_time"})


def _figure(name: str, path: Path, folder: Path | None = None) -> str:
    """The figure inlined (the page stays self-contained), linked to its PNG file when
    the file sits under the report's folder, for a full-resolution look."""
    caption = FIGURE_CAPTIONS.get(name, name.replace("_", " "))
    image = f'<img alt="{html.escape(name)}" src="{inline_png(path)}">'
    link = ""
    if folder is not None:
        try:
            relative = Path(path).resolve().relative_to(folder.resolve()).as_posix()
        except ValueError:
            relative = ""
        if relative:
            image = f'<a href="{html.escape(relative)}">{image}</a>'
            link = f' (<a href="{html.escape(relative)}">full size</a>)'
    # multi-panel figures get the page's full width; their text is small otherwise
    wide = ' class="wide"' if name in WIDE_FIGURES else ""
    return f"<figure{wide}>{image}<figcaption>{html.escape(caption)}{link}</figcaption></figure>"


def _headline(summary: pl.DataFrame) -> str:
    model = summary.filter(pl.col("model") == "model")
    # the pooled n-gram; the per-group n-grams have their own line (`_per_bird_line`)
    pooled = ~pl.col("model").is_in(["unigram", GROUP_NGRAM_NAME])
    grams = summary.filter(pl.col("model").str.contains("gram") & pooled)
    if model.height == 0 or grams.height == 0:
        return ""
    best = grams.sort("perplexity").row(0, named=True)
    ppl = float(model["perplexity"][0])
    verdict = "beats" if ppl < best["perplexity"] else "does not beat"
    name = str(best["model"]).removeprefix("best n-gram").strip(" ()") or str(best["model"])
    return (
        f'<p class="headline">Held-out pre-lesion perplexity: model <b>{ppl:.3f}</b> '
        f"{verdict} the best n-gram ({html.escape(name)}, "
        f"<b>{best['perplexity']:.3f}</b>).</p>"
    )


def _interval(metric: Mapping, scale: float = 1.0) -> str:
    values = [scale * metric[k] for k in ("difference", "ci_low", "ci_high")]
    if any(v is None or not math.isfinite(v) for v in values):
        return "n/a"
    digits = 4 if scale == 1.0 else 2
    return f"{values[0]:+.{digits}f} [{values[1]:+.{digits}f}, {values[2]:+.{digits}f}]"


def comparisons_table(comparisons: Sequence[Mapping]) -> str:
    """The model against each baseline: differences with their intervals, the verdict."""
    if not comparisons:
        return ""
    frame = pl.DataFrame(
        {
            "model vs": [c["baseline"] for c in comparisons],
            "Δ cross-entropy (nats)": [
                _interval(c["metrics"]["cross_entropy"]) for c in comparisons
            ],
            "Δ top-1 (points)": [_interval(c["metrics"]["top1"], 100) for c in comparisons],
            "Δ top-1 without EOS (points)": [
                _interval(c["metrics"]["top1_no_eos"], 100) for c in comparisons
            ],
            "model is": [c["verdict"] for c in comparisons],
        }
    )
    first = comparisons[0]
    note = (
        f"<p>Model minus baseline on the same held-out tokens, with "
        f"{100 * first['confidence']:g}% paired bootstrap intervals over "
        f"{first['units']:,} {html.escape(first['resampled_by'])}s: negative cross-entropy "
        "and positive top-1 favour the model; the verdict follows the cross-entropy "
        "interval.</p>"
    )
    return html_table(frame) + note


def per_bird_table(comparisons: Sequence[Mapping]) -> str:
    """One row per bird: the model minus the bird's own n-gram, with its interval."""
    if not comparisons:
        return ""
    frame = pl.DataFrame(
        {
            "bird": [c["run"] for c in comparisons],
            "held-out bouts": [c["units"] for c in comparisons],
            "Δ cross-entropy vs its n-gram (nats)": [
                _interval(c["metrics"]["cross_entropy"]) for c in comparisons
            ],
            "Δ top-1 (points)": [_interval(c["metrics"]["top1"], 100) for c in comparisons],
            "model is": [c["verdict"] for c in comparisons],
        }
    )
    note = (
        "<p>Per bird: the pooled model against an n-gram fitted on that bird's song alone, "
        "on the bird's held-out pre-lesion bouts (95% paired bootstrap by bout). A bird "
        "with few held-out bouts gives a wide interval that moves with which bouts were held "
        "out: <code>examples/finchgpt/splits.sh</code> repeats the study over five splits "
        "and pools each bird's bouts (<code>seqlm lesion-splits</code>)."
        + _temperature_sentence(comparisons)
        + "</p>"
    )
    return html_table(frame) + note


def _temperature_sentence(comparisons: Sequence[Mapping]) -> str:
    """Say when the per-bird rows score the model at a fitted temperature: the headline
    above them is at T = 1, so the two must not be read as the same scoring."""
    temperatures = {c.get("temperature") for c in comparisons} - {None}
    if not temperatures:
        return ""
    shown = ", ".join(f"{t:.3f}" for t in sorted(temperatures))
    return (
        f" Here the model's logits are divided by T = {shown}, fitted on the pre-lesion "
        "tuning bouts (`seqlm lesion --calibrate-on-tuning`); the headline is at T = 1."
    )


def _comparison_line(comparisons: Sequence[Mapping]) -> str:
    """The headline's comparisons with the n-grams, in words."""
    sentences = [c["sentence"] for c in comparisons if "n-gram" in c["baseline"]]
    return "".join(f"<p>{html.escape(s)}</p>" for s in sentences)


def _caution(lines: Sequence[str]) -> str:
    return f'<p class="caution">{html.escape(chr(10).join(lines))}</p>' if lines else ""


def _lesion_wide(rows: pl.DataFrame) -> pl.DataFrame:
    """One row per (group, model): perplexity before, after, and their ratio."""
    wide = rows.pivot(on="condition", index=["group", "model"], values="perplexity")
    if "pre" in wide.columns and "post" in wide.columns:
        wide = wide.with_columns((pl.col("post") / pl.col("pre")).alias("post / pre"))
    return wide.rename({"pre": "perplexity pre", "post": "perplexity post"}, strict=False)


# The per-head columns a reader compares, with readable headers; all columns are in the
# attention folder's CSV and parquet files.
ATTENTION_COLUMNS: dict[str, str] = {
    "layer": "layer",
    "head": "head",
    "mean_distance": "mean distance",
    "uniform_mean_distance": "uniform baseline",
    "normalized_entropy": "entropy / log(keys)",
}


def attention_head_summary(heads: pl.DataFrame) -> pl.DataFrame:
    """The per-head statistics narrowed to what fits the page: distances, normalised
    entropy and the mass beyond each k, as 'mass > k'."""
    beyond = [c for c in heads.columns if c.startswith("mass_beyond_")]
    names = {c: n for c, n in ATTENTION_COLUMNS.items() if c in heads.columns}
    names |= {c: f"mass > {c.removeprefix('mass_beyond_')}" for c in beyond}
    return heads.select(list(names)).rename(names)


def _per_bird_line(summary: pl.DataFrame, lesion_rows: pl.DataFrame) -> str:
    """The per-bird n-grams beside the headline: each is fitted on one bird's song (the
    pooled model reads the bird from its conditioning token), so a reader should see
    where the model stands against them too."""
    needed = {"group", "model", "condition", "perplexity"}
    model = summary.filter(pl.col("model") == "model")
    if model.height == 0 or not needed <= set(lesion_rows.columns):
        return ""
    row = lesion_rows.filter(
        (pl.col("group") == "all")
        & (pl.col("model") == "per-bird n-gram")
        & (pl.col("condition") == "pre")
    )
    if row.height == 0:
        return ""
    per_bird, ppl = float(row["perplexity"][0]), float(model["perplexity"][0])
    relation = "above" if ppl > per_bird else "below"
    return (
        f"<p>The per-bird n-grams, each fitted on its own bird's song, reach "
        f"<b>{per_bird:.3f}</b> on the same bouts; the model is {relation} them.</p>"
    )


def render_html_report(report: QuickstartReport, folder: Path | None = None) -> str:
    """The page as a string; `folder` is where it will be written, for links to figures."""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(report.title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(report.title)}</h1>",
        _headline(report.summary),
        _comparison_line(report.comparisons),
        _per_bird_line(report.summary, report.lesion_rows),
        _caution(report.caution),
    ]
    if report.facts:
        facts = pl.DataFrame(
            {"": list(report.facts.keys()), "value": [str(v) for v in report.facts.values()]}
        )
        parts.append(html_table(facts, css_class="facts"))
    parts.append("<h2>Next-event prediction on held-out pre-lesion song</h2>")
    summary = report.summary.sort("perplexity")
    best = summary["model"].to_list().index("model") if "model" in summary["model"] else None
    # The headline columns; the rest are in eval/eval.json.
    shown = [c for c in SUMMARY_COLUMNS if c in summary.columns]
    parts.append(html_table(summary, columns=shown, highlight=best))
    parts.append(comparisons_table(report.comparisons))
    for name in ("perplexity_by_group", "reliability"):
        if name in report.figures:
            parts.append(_figure(name, report.figures[name], folder))
    parts.append("<h2>Lesion comparison: before and after mMAN lesions</h2>")
    parts.append(html_table(_lesion_wide(report.lesion_rows)))
    parts.append(per_bird_table(report.per_bird))
    if "lesion" in report.figures:
        parts.append(_figure("lesion", report.figures["lesion"], folder))
    parts.append("<h2>Attention statistics</h2>")
    parts.append(_caution(report.caution))
    if report.attention_heads is not None:
        parts.append(html_table(attention_head_summary(report.attention_heads)))
    for name, path in report.figures.items():
        if name.startswith("attention_"):
            parts.append(_figure(name, path, folder))
    if report.next_commands:
        parts.append("<h2>The same on your own data</h2>")
        commands = "\n".join(html.escape(c) for c in report.next_commands)
        parts.append(f"<pre>{commands}</pre>")
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)


def write_html_report(report: QuickstartReport, path: str | Path) -> Path:
    """Write the page; returns its path."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_html_report(report, path.parent), encoding="utf-8")
    except OSError as err:
        raise CorpusError(f"{path}: cannot write the report: {err}") from None
    return path
