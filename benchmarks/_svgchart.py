"""A line chart as hand-written SVG (no plotting dependency): panels side by side, one line
per series, the x axis on a log2 scale (consumer counts 1, 2, 4, 8)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from xml.sax.saxutils import escape

__all__ = ["Panel", "render"]

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
WIDTH, HEIGHT = 420, 300  # one panel
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 40, 50  # margins inside a panel


@dataclass(frozen=True)
class Panel:
    """One chart: a title and, per series name, its (x, y) points."""

    title: str
    series: dict[str, list[tuple[float, float]]]


def _nice_max(value: float) -> float:
    """A round number >= value for the top of the y axis."""
    if value <= 0 or value != value:
        return 1.0
    step: float = 10.0 ** math.floor(math.log10(value))
    for f in (1, 2, 2.5, 5, 10):
        if f * step >= value:
            return f * step
    return 10 * step


def _panel(panel: Panel, y_top: float, xs: list[float], x_label: str, y_label: str) -> list[str]:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    lo, hi = math.log2(min(xs)), math.log2(max(xs))

    def px(x: float) -> float:
        return LEFT + (0.5 if hi == lo else (math.log2(x) - lo) / (hi - lo)) * plot_w

    def py(y: float) -> float:
        return TOP + plot_h - (y / y_top) * plot_h

    out = [
        f'<text x="{WIDTH / 2}" y="22" text-anchor="middle" font-weight="bold">'
        f"{escape(panel.title)}</text>",
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" '
        'stroke="#333"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="#333"/>',
    ]
    for i in range(6):
        y = y_top * i / 5
        out.append(
            f'<line x1="{LEFT}" y1="{py(y):.1f}" x2="{LEFT + plot_w}" y2="{py(y):.1f}" '
            'stroke="#ddd"/>'
        )
        out.append(f'<text x="{LEFT - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:,.0f}</text>')
    for x in xs:
        out.append(
            f'<text x="{px(x):.1f}" y="{TOP + plot_h + 18}" text-anchor="middle">{x:g}</text>'
        )
    out.append(
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 8}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
    )
    out.append(
        f'<text x="16" y="{TOP + plot_h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {TOP + plot_h / 2})">{escape(y_label)}</text>'
    )
    for k, (name, points) in enumerate(panel.series.items()):
        color = COLORS[k % len(COLORS)]
        pts = sorted(p for p in points if p[1] == p[1])
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for x, y in pts:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"/>')
        ly = TOP + 6 + 16 * k
        out.append(
            f'<line x1="{LEFT + 10}" y1="{ly}" x2="{LEFT + 30}" y2="{ly}" stroke="{color}" '
            'stroke-width="2"/>'
        )
        out.append(f'<text x="{LEFT + 36}" y="{ly + 4}">{escape(name)}</text>')
    return out


def render(panels: list[Panel], *, x_label: str, y_label: str) -> str:
    """The SVG text of ``panels`` side by side, sharing the y scale."""
    ys = [y for p in panels for pts in p.series.values() for _x, y in pts if y == y]
    xs = sorted({x for p in panels for pts in p.series.values() for x, _y in pts})
    y_top = _nice_max(max(ys, default=1.0) * 1.05)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH * len(panels)}" '
        f'height="{HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH * len(panels)}" height="{HEIGHT}" fill="white"/>',
    ]
    for i, panel in enumerate(panels):
        parts.append(f'<g transform="translate({WIDTH * i},0)">')
        parts.extend(_panel(panel, y_top, xs or [1.0], x_label, y_label))
        parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
