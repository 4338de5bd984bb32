"""The server-side SVG charts (harness_site/svg.py)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from harness_site.svg import Series, bar_chart, line_chart, nice_max

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314 (our own output, checked to be well-formed)


def test_nice_maxima_round_up_to_1_2_5():
    assert [nice_max(v) for v in (0, 0.3, 1, 3, 7, 12, 250, 501)] == [1, 0.5, 1, 5, 10, 20, 500, 1000]


def test_a_stacked_bar_chart_draws_one_rect_per_non_zero_value_with_a_tooltip():
    svg = bar_chart(
        ["09:00", "10:00", "11:00"],
        [Series("ok", [3, 0, 1], "#2e7d32"), Series("failed <x>", [1, 2, 0])],
        title="Runs & more",
    )
    root = parse(svg)
    assert root.get("aria-label") == "Runs & more"
    bars = [rect for rect in root.iter(f"{SVG}rect") if rect.find(f"{SVG}title") is not None]
    assert [rect.find(f"{SVG}title").text for rect in bars] == [
        "09:00 · ok: 3",
        "09:00 · failed <x>: 1",
        "10:00 · failed <x>: 2",
        "11:00 · ok: 1",
    ]
    # Stacked: the 09:00 column is 4 high, the axis tops at 5, so its two segments fill 4/5 of the plot.
    first, second = bars[0], bars[1]
    assert float(first.get("height")) == pytest.approx(3 * float(second.get("height")))
    assert float(second.get("y")) + float(second.get("height")) == pytest.approx(float(first.get("y")))
    assert "<x>" not in svg  # names are escaped
    assert "5" in [t.text for t in root.iter(f"{SVG}text")]  # the y axis's top


def test_side_by_side_bars_and_a_fixed_axis():
    root = parse(bar_chart(["a"], [Series("x", [1]), Series("y", [2])], stacked=False, y_max=4))
    bars = [rect for rect in root.iter(f"{SVG}rect") if rect.find(f"{SVG}title") is not None]
    assert bars[0].get("y") != bars[1].get("y") and bars[0].get("x") != bars[1].get("x")
    assert "4" in [t.text for t in root.iter(f"{SVG}text")]


def test_a_line_breaks_where_a_value_is_missing():
    svg = line_chart(
        ["r1", "r2", "r3", "r4"],
        [Series("pass rate", [0.5, None, 1.0, 0.75])],
        y_max=1,
        value_format=lambda v: f"{v:.0%}",
    )
    root = parse(svg)
    path = root.find(f"{SVG}path").get("d")
    assert path.count("M") == 2 and path.count("L") == 1
    assert [c.find(f"{SVG}title").text for c in root.iter(f"{SVG}circle")] == [
        "r1 · pass rate: 50%",
        "r3 · pass rate: 100%",
        "r4 · pass rate: 75%",
    ]


def test_many_labels_are_thinned_and_bad_input_is_refused():
    labels = [f"{h:02}:00" for h in range(24)]
    root = parse(bar_chart(labels, [Series("n", [1] * 24)], max_labels=6))
    shown = [t.text for t in root.iter(f"{SVG}text") if t.text and t.text.endswith(":00")]
    assert shown == ["00:00", "04:00", "08:00", "12:00", "16:00", "20:00"]
    with pytest.raises(ValueError, match="2 values for 3 labels"):
        bar_chart(["a", "b", "c"], [Series("n", [1, 2])])
    with pytest.raises(ValueError, match="y_max"):
        line_chart(["a"], [Series("n", [1])], y_max=0)
    assert parse(line_chart([], [])).tag == f"{SVG}svg"  # nothing to draw is still a chart
