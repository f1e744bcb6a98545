"""Charts drawn on the server as inline SVG: no JavaScript, readable by a screen reader.

Each chart is an `<svg role="img">` with a `<title>` that says what it shows; the pages put the
same figures in a table beside it, so nothing is only in the picture.
"""

from __future__ import annotations

from datetime import date
from html import escape

from markupsafe import Markup

__all__ = ["line_chart"]

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 12, 28
# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")


def line_chart(
    series: dict[str, list[tuple[date, float]]], *, title: str, unit: str = ""
) -> Markup:
    """Lines over days, one per series (at most seven coloured, the rest grouped as "other")."""
    series = _at_most(series, len(PALETTE))
    days = next(iter(series.values()), [])
    if not days:
        return Markup(f'<p class="empty">{escape(title)}: nothing yet.</p>')
    top = max((value for points in series.values() for _, value in points), default=0.0)
    top = _nice(top)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + plot_w * i / max(len(days) - 1, 1)

    def y(value: float) -> float:
        return TOP + plot_h * (1 - value / top)

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" preserveAspectRatio="xMidYMid meet">',
        f"<title>{escape(title)}</title>",
    ]
    for fraction in (0, 0.5, 1):
        level = TOP + plot_h * (1 - fraction)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{level:.1f}" y2="{level:.1f}" '
            'class="grid"/>'
            f'<text x="{LEFT - 6}" y="{level + 4:.1f}" text-anchor="end">'
            f"{escape(_short(top * fraction))}{escape(unit)}</text>"
        )
    for i in (0, len(days) // 2, len(days) - 1):
        parts.append(
            f'<text x="{x(i):.1f}" y="{HEIGHT - 8}" text-anchor="middle">{days[i][0]:%d %b}</text>'
        )
    for colour, (name, points) in zip(PALETTE, series.items(), strict=False):
        path = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, (_, v) in enumerate(points))
        parts.append(
            f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2">'
            f"<title>{escape(name)}</title></polyline>"
        )
    parts.append("</svg>")
    if len(series) > 1:
        parts.append('<ul class="legend">')
        for number, name in enumerate(series):  # colours in viz.css: .s0 ... .s6
            parts.append(f'<li><span class="swatch s{number}"></span>{escape(name)}</li>')
        parts.append("</ul>")
    return Markup("".join(parts))


def _at_most(
    series: dict[str, list[tuple[date, float]]], count: int
) -> dict[str, list[tuple[date, float]]]:
    if len(series) <= count:
        return series
    ranked = sorted(series, key=lambda name: -sum(v for _, v in series[name]))
    kept = {name: series[name] for name in ranked[: count - 1]}
    rest = [series[name] for name in ranked[count - 1 :]]
    kept["other"] = [(day, sum(s[i][1] for s in rest)) for i, (day, _) in enumerate(rest[0])]
    return kept


def _nice(value: float) -> float:
    """A round upper bound at or above `value` (1, 2 or 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    power = 10 ** len(str(int(value))) / 10
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return value


def _short(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:g}{suffix}"
    return f"{value:g}"
