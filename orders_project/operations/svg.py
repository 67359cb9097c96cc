"""Server-rendered SVG charts for the operations page: pure functions from numbers to markup.

No JavaScript and nothing fetched from elsewhere: the page is readable with scripts off
and from an air-gapped network. Every text is escaped; hovering a bar or point shows its
exact value through the SVG <title> tooltip the browser draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from html import escape

Formatter = Callable[[float], str]


def format_count(value: float) -> str:
    return f"{value:,.0f}"


def format_money(value: float | Decimal) -> str:
    return f"{value:,.2f}"


def format_compact(value: float) -> str:
    """Axis labels: 950, 1.5k, 12k, 3.2M."""
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            scaled = value / limit
            return f"{scaled:.1f}".removesuffix(".0") + suffix
    return f"{value:g}"


def format_duration(value: timedelta | None) -> str:
    """A duration as a person says it: 340 ms, 4.2 s, 3 min 12 s, 2 h 5 min, 3 d 4 h."""
    if value is None:
        return "—"
    seconds = value.total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def format_seconds(value: float) -> str:
    return format_duration(timedelta(seconds=value)) if value else "0"


def nice_ticks(maximum: float, *, count: int = 4, integer: bool = False) -> list[float]:
    """0 and round steps (1, 2, 2.5, 5 × 10ⁿ) up to the first tick at or above `maximum`."""
    if maximum <= 0:
        return [0.0]
    raw = maximum / count
    magnitude = 10 ** math.floor(math.log10(raw))
    steps = (1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)
    step = next(m * magnitude for m in steps if m * magnitude >= raw)
    if integer:
        step = max(1, round(step))
    ticks = [0.0]
    while ticks[-1] < maximum:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


@dataclass(frozen=True)
class Series:
    """One stacked layer of bars. `key` becomes a CSS class, so keep it a plain word."""

    key: str
    label: str
    color: str


@dataclass(frozen=True)
class Line:
    """A line drawn over the bars against its own axis on the right; None leaves a gap."""

    label: str
    color: str
    values: Sequence[float | None]
    format: Formatter = format_count
    tick_format: Formatter | None = None


def _el(tag: str, text: str | None = None, /, **attrs: object) -> str:
    """One SVG element; `class_`, `stroke_width`... become `class`, `stroke-width`. Floats
    are rounded to 0.01 to keep the markup short; text and attribute values are escaped."""
    parts = [tag]
    for name, value in attrs.items():
        if isinstance(value, float):
            value = round(value, 2)
        parts.append(f'{name.rstrip("_").replace("_", "-")}="{escape(str(value))}"')
    opening = " ".join(parts)
    if text is None:
        return f"<{opening}/>"
    return f"<{opening}>{text}</{tag}>"


def _tooltip(*parts: str) -> str:
    return f"<title>{escape(' · '.join(parts))}</title>"


def bar_chart(
    *,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    values: Sequence[Sequence[float]],
    bucket_titles: Sequence[str] | None = None,
    value_format: Formatter = format_count,
    tick_format: Formatter = format_compact,
    integer: bool = True,
    line: Line | None = None,
    label_every: int = 1,
    width: int = 720,
    height: int = 220,
    empty_text: str = "No data",
) -> str:
    """Stacked bars, one column per bucket: `values[i][j]` is series j in bucket i.

    Only non-zero segments are drawn, each as `<rect class="bar bar-<key>">`, so a test
    can count them. With every value zero (and no line points) the axes are drawn with
    `empty_text` in the middle.
    """
    if len(values) != len(labels) or any(len(row) != len(series) for row in values):
        raise ValueError("values must have one row per label and one column per series")
    titles = bucket_titles or labels
    box = _Box(width=width, height=height, right=60 if line else 16, buckets=len(labels))

    totals = [sum(row) for row in values]
    ticks = nice_ticks(max(totals, default=0), integer=integer)
    y_max = ticks[-1] or 1.0

    out = [
        f'<svg class="ops-chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg" font-size="11">',
        f"<title>{escape(title)}</title>",
    ]
    out.extend(_legend(series, line, box=box))
    out.extend(_grid_and_axis(ticks, y_max, box=box, tick_format=tick_format))
    out.extend(_stacked_bars(values, series, titles, y_max, box=box, value_format=value_format))
    out.extend(_bucket_labels(labels, label_every, box=box))
    has_points = line is not None and any(v is not None for v in line.values)
    if line and has_points:
        out.extend(_line(line, titles=titles, box=box))
    if not any(totals) and not has_points:
        out.append(_empty_text(empty_text, box=box))
    out.append("</svg>")
    return "".join(out)


def _legend(series: Sequence[Series], line: Line | None, *, box: _Box) -> list[str]:
    """Top left: a swatch per series, a stroke for the line."""
    out = []
    x = float(box.left)
    for s in series:
        out.append(_el("rect", x=x, y=8, width=11, height=11, rx=2, fill=s.color))
        out.append(_el("text", escape(s.label), class_="legend", x=x + 16, y=17))
        x += 16 + 7 * len(s.label) + 18
    if line:
        out.append(
            _el("line", x1=x, y1=13.5, x2=x + 16, y2=13.5, stroke=line.color, stroke_width=2.5)
        )
        out.append(_el("text", escape(line.label), class_="legend", x=x + 21, y=17))
    return out


def _grid_and_axis(
    ticks: Sequence[float], y_max: float, *, box: _Box, tick_format: Formatter
) -> list[str]:
    out = []
    for tick in ticks:
        ty = box.y(tick, y_max)
        out.append(
            _el("line", class_="grid", x1=box.left, y1=ty, x2=box.right_x, y2=ty, stroke="#e4e4e4")
        )
        out.append(
            _el(
                "text",
                escape(tick_format(tick)),
                class_="tick",
                x=box.left - 6,
                y=ty + 4,
                text_anchor="end",
                fill="#666",
            )
        )
    out.append(
        _el(
            "line",
            class_="axis",
            x1=box.left,
            y1=box.bottom_y,
            x2=box.right_x,
            y2=box.bottom_y,
            stroke="#999",
        )
    )
    return out


def _stacked_bars(
    values: Sequence[Sequence[float]],
    series: Sequence[Series],
    titles: Sequence[str],
    y_max: float,
    *,
    box: _Box,
    value_format: Formatter,
) -> list[str]:
    """Stacked bottom to top in series order; zero segments are not drawn."""
    out = []
    bar_w = max(box.slot * 0.74, 1.0)
    for i, row in enumerate(values):
        bx = box.centre(i) - bar_w / 2
        base = 0.0
        for s, value in zip(series, row, strict=True):
            if value <= 0:
                continue
            y_top, y_bottom = box.y(base + value, y_max), box.y(base, y_max)
            h = max(y_bottom - y_top, 1.0)  # a 1-in-10,000 segment still shows
            tip = _tooltip(titles[i], f"{s.label}: {value_format(value)}")
            out.append(
                _el(
                    "rect",
                    tip,
                    class_=f"bar bar-{s.key}",
                    x=bx,
                    y=y_bottom - h,
                    width=bar_w,
                    height=h,
                    fill=s.color,
                )
            )
            base += value
    return out


def _bucket_labels(labels: Sequence[str], label_every: int, *, box: _Box) -> list[str]:
    """Every `label_every`-th bucket, centred under its bar; "" leaves a bucket bare."""
    return [
        _el(
            "text",
            escape(label),
            class_="tick",
            x=box.centre(i),
            y=box.bottom_y + 16,
            text_anchor="middle",
            fill="#666",
        )
        for i, label in enumerate(labels)
        if label and i % label_every == 0
    ]


def _empty_text(text: str, *, box: _Box) -> str:
    return _el(
        "text",
        escape(text),
        class_="empty",
        x=box.left + box.plot_w / 2,
        y=box.top + box.plot_h / 2 + 5,
        text_anchor="middle",
        font_size=15,
        fill="#888",
    )


@dataclass(frozen=True)
class _Box:
    """The plot area inside the chart's margins, and where bucket i sits in it."""

    width: int
    height: int
    right: int
    buckets: int
    left: int = 52
    top: int = 34
    bottom: int = 30

    @property
    def plot_w(self) -> float:
        return self.width - self.left - self.right

    @property
    def plot_h(self) -> float:
        return self.height - self.top - self.bottom

    @property
    def right_x(self) -> float:
        return self.left + self.plot_w

    @property
    def bottom_y(self) -> float:
        return self.top + self.plot_h

    @property
    def slot(self) -> float:
        return self.plot_w / max(self.buckets, 1)

    def centre(self, i: int) -> float:
        return self.left + i * self.slot + self.slot / 2

    def y(self, value: float, y_max: float) -> float:
        return self.bottom_y - value / y_max * self.plot_h


def _line(line: Line, *, titles: Sequence[str], box: _Box) -> list[str]:
    ticks = nice_ticks(max(v for v in line.values if v is not None), integer=False)
    y_max = ticks[-1] or 1.0
    tick_format = line.tick_format or line.format
    out = [
        _el(
            "text",
            escape(tick_format(tick)),
            class_="tick tick-right",
            x=box.right_x + 6,
            y=box.y(tick, y_max) + 4,
            fill=line.color,
        )
        for tick in ticks
    ]
    # Consecutive points form one polyline; a None (a minute with nothing) ends it.
    run: list[str] = []
    for i, value in enumerate([*line.values, None]):
        if value is not None:
            run.append(f"{round(box.centre(i), 2)},{round(box.y(value, y_max), 2)}")
            continue
        if len(run) > 1:
            out.append(
                _el(
                    "polyline",
                    class_="line",
                    points=" ".join(run),
                    fill="none",
                    stroke=line.color,
                    stroke_width=2,
                    stroke_linejoin="round",
                )
            )
        run = []
    for i, value in enumerate(line.values):
        if value is not None:
            tip = _tooltip(titles[i], f"{line.label}: {line.format(value)}")
            out.append(
                _el(
                    "circle",
                    tip,
                    class_="point",
                    cx=box.centre(i),
                    cy=box.y(value, y_max),
                    r=2.5,
                    fill=line.color,
                )
            )
    return out
