"""Write an experiment report: the raw results, a table of every cell, a summary and plots.

An experiment is a grid of cells. A cell is one setting of the pipeline (the method "vanilla",
"rag" or "rar", and for the retrieving methods a chunk size, a number of reranker candidates and
a top-k) scored over the same questions. `write_report` takes the list of cell dicts and a
`meta` dict (title, dataset, model, reranker, sample size, date, command) and writes, into one
folder:

- `results.json`: meta and cells as given, for re-plotting or diffing two runs;
- `results.csv`: one row per cell, every column;
- `report.md`: title, meta table, the best cell per metric, plots, and a table of all cells
  (floats to 3 decimals, "–" where a metric does not apply);
- `report.html`: the same as a standalone page with inline CSS, the PNGs linked by relative
  path, every value escaped by jinja2's autoescape;
- the PNG plots, each averaging a metric over the parameters it does not show:
  `f1_by_chunk_size.png`, `by_top_k.png` and `by_candidates.png` (rar only).

A `--sample` run may hold only vanilla and a few cells, and metrics may be None (vanilla has no
recall). Points without a value are skipped; a plot with no point at all is not written and the
reports leave it out.
"""

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from viz.eval.metrics import mean

COLUMNS: tuple[str, ...] = (
    "cell",
    "method",
    "chunk_chars",
    "candidates",
    "top_k",
    "recall_at_k",
    "mrr",
    "ndcg_at_10",
    "exact_match",
    "f1",
    "citation_precision",
    "citation_recall",
    "answer_tokens",
    "ended_cleanly",
    "retrieve_ms",
    "rerank_ms",
    "generate_ms",
    "prompt_tokens",
    "questions",
)
"""Column order of the CSV and the tables; keys a cell has beyond these are appended."""

BEST_METRICS: tuple[tuple[str, str], ...] = (
    ("f1", "F1"),
    ("exact_match", "exact match"),
    ("recall_at_k", "recall@k"),
    ("mrr", "MRR"),
    ("ndcg_at_10", "nDCG@10"),
    ("citation_precision", "citation precision"),
    ("citation_recall", "citation recall"),
)
"""Metrics where higher is better, summarised by their best cell."""

MISSING = "–"


@dataclass(frozen=True)
class Plot:
    """One PNG: F1 and recall@k (two panels) against one cell parameter."""

    file_name: str
    x_key: str
    x_label: str
    methods: tuple[str, ...]


PLOTS: tuple[Plot, ...] = (
    Plot("f1_by_chunk_size.png", "chunk_chars", "chunk size (characters)", ("rag", "rar")),
    Plot("by_top_k.png", "top_k", "top-k chunks in the prompt", ("rag", "rar")),
    Plot("by_candidates.png", "candidates", "reranker candidates", ("rar",)),
)

_HTML = jinja2.Environment(autoescape=True).from_string(
    """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
.wide { overflow-x: auto; }
img { max-width: 100%; margin: 0.5rem 0; }
code { background: #f3f3f3; padding: 0 0.2rem; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<table>
{% for key, value in meta_rows %}<tr><th>{{ key }}</th><td>{{ value }}</td></tr>
{% endfor %}</table>
<h2>Best cells</h2>
<ul>
{% for line in best_lines %}<li>{{ line }}</li>
{% endfor %}</ul>
{% if plot_names %}<h2>Plots</h2>
{% for name in plot_names %}<img src="{{ name }}" alt="{{ name }}">
{% endfor %}{% endif %}
<h2>All cells</h2>
<div class="wide"><table>
<tr>{% for column in columns %}<th>{{ column }}</th>{% endfor %}</tr>
{% for row in rows %}<tr>{% for value in row %}<td>{{ value }}</td>{% endfor %}</tr>
{% endfor %}</table></div>
</body>
</html>
"""
)


def write_report(
    folder: Path, cells: list[dict[str, Any]], meta: dict[str, Any]
) -> dict[str, Path]:
    """Write results.json, results.csv, report.md, report.html and the plots into `folder`.

    Args:
        folder: Where to write; created if missing. Existing files of the same names are
            replaced.
        cells: One dict per cell with the keys in `COLUMNS` (missing keys read as None).
        meta: What the run was: title, dataset, model, reranker, sample size, date, command.

    Returns:
        The paths written, keyed by file name. A plot with nothing to draw is not written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    columns = _columns(cells)
    written: dict[str, Path] = {}

    json_path = folder / "results.json"
    json_path.write_text(
        json.dumps({"meta": meta, "cells": cells}, indent=2, default=str) + "\n",
        encoding="utf-8",
    )
    written[json_path.name] = json_path

    csv_path = folder / "results.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(columns), restval="")
        writer.writeheader()
        for cell in cells:
            writer.writerow({column: _csv_value(cell.get(column)) for column in columns})
    written[csv_path.name] = csv_path

    for plot in PLOTS:
        path = folder / plot.file_name
        if _draw_plot(plot, cells, path):
            written[path.name] = path
    plot_names = [plot.file_name for plot in PLOTS if plot.file_name in written]

    title = str(meta.get("title") or "Experiment report")
    meta_rows = [(str(key), str(value)) for key, value in meta.items() if key != "title"]
    best_lines = _best_lines(cells)
    rows = [[_format(cell.get(column)) for column in columns] for cell in cells]

    markdown_path = folder / "report.md"
    markdown_path.write_text(
        _markdown(title, meta_rows, best_lines, plot_names, columns, rows), encoding="utf-8"
    )
    written[markdown_path.name] = markdown_path

    html_path = folder / "report.html"
    html_path.write_text(
        _HTML.render(
            title=title,
            meta_rows=meta_rows,
            best_lines=best_lines,
            plot_names=plot_names,
            columns=columns,
            rows=rows,
        ),
        encoding="utf-8",
    )
    written[html_path.name] = html_path
    return written


def _columns(cells: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    extra = [key for cell in cells for key in cell if key not in COLUMNS]
    return COLUMNS + tuple(dict.fromkeys(extra))


def _csv_value(value: Any) -> Any:
    return "" if value is None else value


def _format(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _best_lines(cells: Sequence[dict[str, Any]]) -> list[str]:
    """One line per metric: the best cell and its value, plus best F1 over vanilla F1."""
    lines = []
    for key, label in BEST_METRICS:
        scored = [cell for cell in cells if cell.get(key) is not None]
        if not scored:
            continue
        best = max(scored, key=lambda cell: cell[key])
        lines.append(f"{label}: {best[key]:.3f} ({best.get('cell', '?')})")
    vanilla_f1 = mean(cell.get("f1") for cell in cells if cell.get("method") == "vanilla")
    retrieving = [
        cell["f1"]
        for cell in cells
        if cell.get("method") != "vanilla" and cell.get("f1") is not None
    ]
    if vanilla_f1 and retrieving:
        lines.append(f"best retrieving F1 / vanilla F1: {max(retrieving) / vanilla_f1:.2f}x")
    if not lines:
        lines.append("no cell has a score")
    return lines


def _markdown(
    title: str,
    meta_rows: list[tuple[str, str]],
    best_lines: list[str],
    plot_names: list[str],
    columns: Sequence[str],
    rows: list[list[str]],
) -> str:
    parts = [f"# {title}", "", "| | |", "|---|---|"]
    parts += [f"| {_md(key)} | {_md(value)} |" for key, value in meta_rows]
    parts += ["", "## Best cells", ""]
    parts += [f"- {line}" for line in best_lines]
    if plot_names:
        parts += ["", "## Plots", ""]
        parts += [f"![{name}]({name})" for name in plot_names]
    parts += ["", "## All cells", ""]
    parts.append("| " + " | ".join(columns) + " |")
    parts.append("|" + "|".join("---" for _ in columns) + "|")
    parts += ["| " + " | ".join(_md(value) for value in row) + " |" for row in rows]
    return "\n".join(parts) + "\n"


def _md(text: str) -> str:
    """A table cell: pipes escaped and newlines flattened so the row stays one row."""
    return text.replace("|", "\\|").replace("\n", " ")


def _series(
    cells: Sequence[dict[str, Any]], method: str, x_key: str, metric: str
) -> tuple[list[float], list[float]]:
    """Mean of `metric` per value of `x_key` over one method's cells, skipping Nones."""
    by_x: dict[float, list[float | None]] = {}
    for cell in cells:
        x = cell.get(x_key)
        if cell.get("method") == method and x is not None:
            by_x.setdefault(x, []).append(cell.get(metric))
    xs, ys = [], []
    for x in sorted(by_x):
        y = mean(by_x[x])
        if y is not None:
            xs.append(x)
            ys.append(y)
    return xs, ys


def _draw_plot(plot: Plot, cells: Sequence[dict[str, Any]], path: Path) -> bool:
    """Draw F1 and recall@k against `plot.x_key`; False (nothing written) if no point."""
    panels = (("f1", "F1"), ("recall_at_k", "recall@k"))
    series = {
        (metric, method): _series(cells, method, plot.x_key, metric)
        for metric, _ in panels
        for method in plot.methods
    }
    if not any(xs for xs, _ in series.values()):
        return False

    # deferred: matplotlib is heavy
    import matplotlib

    matplotlib.use("Agg")
    # deferred: matplotlib is heavy
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(10, 4))
    for axis, (metric, label) in zip(axes, panels, strict=True):
        for method in plot.methods:
            xs, ys = series[(metric, method)]
            if xs:
                axis.plot(xs, ys, marker="o", label=method)
        vanilla = mean(cell.get(metric) for cell in cells if cell.get("method") == "vanilla")
        if vanilla is not None:
            axis.axhline(vanilla, color="grey", linestyle="--", label="vanilla")
        axis.set_xlabel(plot.x_label)
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)
    return True
