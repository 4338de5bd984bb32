"""Small server-side SVG charts for the admin: no JavaScript, no CDN, readable without internet.

Two functions, the same arguments:

    from harness_site.svg import Series, bar_chart, line_chart

    bar_chart(["09:00", "10:00"], [Series("succeeded", [3, 5], "#2e7d32"), Series("failed", [1, 0], "#c62828")])
    line_chart(["run 1", "run 2", "run 3"], [Series("pass rate", [0.9, None, 1.0])], y_max=1,
               value_format=lambda v: f"{v:.0%}")

- `labels`: one per x position; long label lists are thinned to about `max_labels` on the axis.
- `series`: each a name, one value per label (None: no value there; a line breaks around it) and a
  colour. Bars stack (`stacked=False` puts them side by side).
- The result is safe HTML (an inline `<svg>`) that scales to its container's width; every bar and
  point has a `<title>`, so hovering shows its label, series and value, and a legend names the series.
- `y_max` fixes the top of the axis (e.g. 1 for a rate); otherwise it is the data's maximum
  rounded up to a 1-2-5 step. `value_format` formats the axis and the tooltips.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

PALETTE = ("#2e7d32", "#c62828", "#757575", "#1565c0", "#ef6c00", "#6a1b9a", "#00838f", "#ad1457")

LEFT, RIGHT, TOP, BOTTOM = 44, 8, 26, 22  # room for the y axis, the legend and the x labels


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]
    color: str = ""


def _number(value: float) -> str:
    return f"{value:g}"


def nice_max(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at least `value` (1 for nothing)."""
    if value <= 0:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)  # pragma: no cover (the loop always returns)


def _check(labels: Sequence[str], series: Sequence[Series], y_max: float | None) -> None:
    for s in series:
        if len(s.values) != len(labels):
            raise ValueError(f"series {s.name!r}: {len(s.values)} values for {len(labels)} labels")
    if y_max is not None and not y_max > 0:
        raise ValueError(f"y_max: must be above 0, got {y_max}")


def _frame(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    width: int,
    height: int,
    top: float,
    title: str,
    value_format: Callable[[float], str],
    max_labels: int,
) -> tuple[list[str], list[Series]]:
    """The svg's opening, legend, grid and axis labels; the series with their colours filled in."""
    coloured = [Series(s.name, s.values, s.color or PALETTE[i % len(PALETTE)]) for i, s in enumerate(series)]
    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="100%" preserveAspectRatio="xMinYMin meet" role="img" aria-label="{escape(title)}" '
        'font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
    ]
    x = LEFT
    for s in coloured:
        parts.append(f'<rect x="{x}" y="6" width="10" height="10" fill="{escape(s.color)}"/>')
        parts.append(f'<text x="{x + 14}" y="15" fill="currentColor">{escape(s.name)}</text>')
        x += 24 + 7 * len(s.name)
    plot_h = height - TOP - BOTTOM
    # Round gridlines for 1-2-5 maxima: 2 -> 0.5 steps, 1 and 5 -> 0.2 and 1.
    divisions = 4 if round(top / 10 ** math.floor(math.log10(top))) == 2 else 5
    for i in range(divisions + 1):
        y = TOP + plot_h * i / divisions
        value = top * (divisions - i) / divisions
        parts.append(
            f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="currentColor" stroke-opacity="{0.5 if i == divisions else 0.15}"/>'
        )
        parts.append(
            f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" fill="currentColor">'
            f"{escape(value_format(value))}</text>"
        )
    every = max(1, math.ceil(len(labels) / max_labels))
    slot = (width - LEFT - RIGHT) / max(len(labels), 1)
    for i, label in enumerate(labels):
        if i % every == 0:
            parts.append(
                f'<text x="{LEFT + slot * (i + 0.5):.1f}" y="{height - 6}" text-anchor="middle" '
                f'fill="currentColor">{escape(label)}</text>'
            )
    return parts, coloured


def bar_chart(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    width: int = 720,
    height: int = 200,
    stacked: bool = True,
    title: str = "",
    y_max: float | None = None,
    value_format: Callable[[float], str] = _number,
    max_labels: int = 12,
) -> SafeString:
    """Bars per label, one segment per series (stacked) or one bar per series (side by side)."""
    _check(labels, series, y_max)
    totals = [
        (sum(v or 0 for v in column) if stacked else max((v or 0 for v in column), default=0))
        for column in zip(*(s.values for s in series), strict=True)
    ] or [0]
    top = y_max if y_max is not None else nice_max(max(totals))
    parts, coloured = _frame(
        labels,
        series,
        width=width,
        height=height,
        top=top,
        title=title,
        value_format=value_format,
        max_labels=max_labels,
    )
    plot_h = height - TOP - BOTTOM
    slot = (width - LEFT - RIGHT) / max(len(labels), 1)
    bar_w = slot * 0.8
    for i, label in enumerate(labels):
        base = 0.0
        for j, s in enumerate(coloured):
            value = s.values[i]
            if not value:
                continue
            h = plot_h * min(value, top) / top
            if stacked:
                x, w, y = LEFT + slot * i + slot * 0.1, bar_w, TOP + plot_h - base - h
                base += h
            else:
                w = bar_w / len(coloured)
                x, y = LEFT + slot * i + slot * 0.1 + j * w, TOP + plot_h - h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{escape(s.color)}">'
                f"<title>{escape(label)} · {escape(s.name)}: {escape(value_format(value))}</title></rect>"
            )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 (every text above is escaped)


def line_chart(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    width: int = 720,
    height: int = 200,
    title: str = "",
    y_max: float | None = None,
    value_format: Callable[[float], str] = _number,
    max_labels: int = 12,
) -> SafeString:
    """One line per series with a dot per value; a None value breaks the line."""
    _check(labels, series, y_max)
    values = [v for s in series for v in s.values if v is not None]
    top = y_max if y_max is not None else nice_max(max(values, default=0))
    parts, coloured = _frame(
        labels,
        series,
        width=width,
        height=height,
        top=top,
        title=title,
        value_format=value_format,
        max_labels=max_labels,
    )
    plot_h = height - TOP - BOTTOM
    slot = (width - LEFT - RIGHT) / max(len(labels), 1)
    for s in coloured:
        path: list[str] = []
        dots: list[str] = []
        for i, value in enumerate(s.values):
            if value is None:
                path.append("")  # the next point starts a new segment
                continue
            x = LEFT + slot * (i + 0.5)
            y = TOP + plot_h - plot_h * min(value, top) / top
            path.append(f"{'L' if path and path[-1] else 'M'}{x:.1f},{y:.1f}")
            dots.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{escape(s.color)}">'
                f"<title>{escape(labels[i])} · {escape(s.name)}: {escape(value_format(value))}</title></circle>"
            )
        d = " ".join(p for p in path if p)
        if d:
            parts.append(f'<path d="{d}" fill="none" stroke="{escape(s.color)}" stroke-width="2"/>')
        parts.extend(dots)
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 (every text above is escaped)
