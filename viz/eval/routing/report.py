"""The report of `viz eval routing`: results.json and a readable report.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["write_routing_report"]


def write_routing_report(out: Path, results: dict[str, Any]) -> None:
    """Write `results` to `out`/results.json and its tables to `out`/report.md."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [*_routing_lines(results), *_quality_lines(results)]
    (out / "report.md").write_text("\n".join(lines))


def _routing_lines(results: dict[str, Any]) -> list[str]:
    accuracy = results["accuracy"]
    lines = [
        "# Routing evaluation: a QASPER hierarchy",
        "",
        "Hierarchy: base -> english -> nlp-research -> "
        + ", ".join(results["subdomains"])
        + " (how papers were grouped: `viz/eval/routing/plan.py`).",
        f"Queries: {results['queries']} QASPER-dev questions of papers whose title names one "
        "sub-domain; no dev paper was used in training.",
        "",
        "## Top-1 routing accuracy (the right sub-domain adapter)",
        "",
        "| routing | accuracy | vs random |",
        "|---|---|---|",
    ]
    expected = results["random_expected"]
    for kind in ("hierarchical", "flat", "random"):
        lines.append(f"| {kind} | {accuracy[kind]:.3f} | {accuracy[kind] / expected:.2f}x |")
    lines += [
        f"| random (expected) | {expected:.3f} | 1.00x |",
        "",
        f"The hierarchical walk reached a sub-domain for {results['reached_subdomain']:.1%} of "
        f"queries (stopped at depth: {results['stopped_at_depth']}); when it did, it was right "
        f"{_percent(results['hierarchical_precision'])} of the time.",
        "",
        "Confidence thresholds of the walk (defaults: min_score 0.1, min_margin 0.02). With no "
        "threshold the walk is greedy and, as this tree has one language and one domain, picks "
        "what flat routing picks; thresholds trade coverage for precision:",
        "",
        "| min_score | min_margin | top-1 accuracy | reached a sub-domain | right when reached |",
        "|---|---|---|---|---|",
        *(
            f"| {row['min_score']} | {row['min_margin']} | {row['accuracy']:.3f} | "
            f"{row['reached']:.1%} | {_percent(row['precision'])} |"
            for row in results["threshold_sweep"]
        ),
        "",
        "| sub-domain | queries | hierarchical | flat |",
        "|---|---|---|---|",
    ]
    for label, row in results["per_subdomain"].items():
        lines.append(
            f"| {label} | {row['queries']} | {_percent(row['hierarchical'])} | "
            f"{_percent(row['flat'])} |"
        )
    return lines


def _quality_lines(results: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"## Answer quality ({results['quality_questions']} questions, closed book)",
        "",
        "| model | reference-answer perplexity | token F1 |",
        "|---|---|---|",
    ]
    for name, row in results["quality"].items():
        perplexity = f"{row['perplexity']:.2f}" if row["perplexity"] else "-"
        f1 = f"{row['token_f1']:.3f}" if row["token_f1"] is not None else "-"
        lines.append(f"| {name} | {perplexity} | {f1} |")
    return [*lines, "", f"Run time: {results['seconds']} s.", ""]


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"
