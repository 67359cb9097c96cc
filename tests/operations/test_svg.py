"""The SVG helper: pure functions, no database."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest

from orders_project.operations.svg import (
    Line,
    Series,
    bar_chart,
    format_compact,
    format_duration,
    nice_ticks,
)

PAID = Series("paid", "Paid", "#009E73")
PENDING = Series("pending", "Pending", "#E69F00")
SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314 — our own markup: it must be well-formed XML


def rects(root: ET.Element, key: str) -> list[ET.Element]:
    return [r for r in root.iter(f"{SVG}rect") if f"bar-{key}" in r.get("class", "")]


def test_stacked_bars_one_segment_per_non_zero_value():
    svg = bar_chart(
        title="Orders",
        labels=["10:00", "11:00", "12:00"],
        series=[PAID, PENDING],
        values=[[2, 1], [0, 0], [4, 0]],
    )

    root = parse(svg)
    paid, pending = rects(root, "paid"), rects(root, "pending")
    assert (len(paid), len(pending)) == (2, 1)
    # stacked: the pending segment sits right on top of the paid one in the same column
    assert float(pending[0].get("y")) + float(pending[0].get("height")) == pytest.approx(
        float(paid[0].get("y"))
    )
    assert pending[0].get("x") == paid[0].get("x")
    # the 4-order column is twice the height of the 2-order segment
    assert float(paid[1].get("height")) == pytest.approx(2 * float(paid[0].get("height")))
    # a legend entry per series and a tooltip with the exact value
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "Paid" in texts and "Pending" in texts
    assert paid[1].find(f"{SVG}title").text == "12:00 · Paid: 4"
    assert "No data" not in svg


def test_all_zero_draws_axes_and_no_data():
    svg = bar_chart(
        title="Orders", labels=["a", "b"], series=[PAID], values=[[0], [0]], empty_text="Quiet"
    )

    root = parse(svg)
    assert rects(root, "paid") == []
    assert "Quiet" in [t.text for t in root.iter(f"{SVG}text")]


def test_empty_bucket_list_renders():
    svg = bar_chart(title="Nothing", labels=[], series=[PAID], values=[])

    assert "No data" in parse(svg).findtext(f".//{SVG}text[@class='empty']")


def test_line_is_split_at_gaps_and_has_its_own_axis():
    svg = bar_chart(
        title="Published",
        labels=["1", "2", "3", "4", "5"],
        series=[PAID],
        values=[[1], [2], [0], [3], [0]],
        line=Line(label="Delay", color="#CC79A7", values=[1.0, 2.0, None, 4.0, None]),
    )

    root = parse(svg)
    assert len(root.findall(f"{SVG}polyline")) == 1  # 1→2; 4 stands alone
    assert len(root.findall(f"{SVG}circle")) == 3
    right_ticks = [t.text for t in root.iter(f"{SVG}text") if "tick-right" in t.get("class")]
    assert right_ticks[0] == "0" and right_ticks[-1] == "4"


def test_text_is_escaped():
    svg = bar_chart(
        title='<script>"x"</script>',
        labels=["<b>"],
        series=[Series("s", "A & B", "#000")],
        values=[[1]],
    )

    assert "<script>" not in svg and "<b>" not in svg
    parse(svg)  # still well-formed


def test_mismatched_values_are_refused():
    with pytest.raises(ValueError, match="one row per label"):
        bar_chart(title="x", labels=["a"], series=[PAID], values=[[1, 2]])


@pytest.mark.parametrize(
    ("maximum", "integer", "expected"),
    [
        (0, True, [0]),
        (1, True, [0, 1]),
        (3, True, [0, 1, 2, 3]),
        (7, True, [0, 2, 4, 6, 8]),
        (23, True, [0, 10, 20, 30]),
        (95.5, False, [0, 25, 50, 75, 100]),
        (0.3, False, [0, 0.1, 0.2, 0.3]),
    ],
)
def test_nice_ticks(maximum, integer, expected):
    assert nice_ticks(maximum, integer=integer) == expected


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.25, "250 ms"),
        (2, "2.0 s"),
        (45, "45 s"),
        (60, "1 min"),
        (192, "3 min 12 s"),
        (7500, "2 h 5 min"),
        (3 * 86400 + 4 * 3600 + 5, "3 d 4 h"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(timedelta(seconds=seconds)) == text


def test_format_duration_of_nothing():
    assert format_duration(None) == "—"


@pytest.mark.parametrize(
    ("value", "text"), [(0, "0"), (950, "950"), (1500, "1.5k"), (12000, "12k"), (3.2e6, "3.2M")]
)
def test_format_compact(value, text):
    assert format_compact(value) == text


def test_bars_have_one_column_per_bucket():
    svg = bar_chart(title="t", labels=[str(i) for i in range(24)], series=[PAID], values=[[1]] * 24)

    xs = {r.get("x") for r in rects(parse(svg), "paid")}
    assert len(xs) == 24
    assert len(re.findall(r'class="bar bar-paid"', svg)) == 24
