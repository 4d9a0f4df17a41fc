"""`{% bar_chart points title=… unit=… %}`: a bar chart drawn on the server as inline SVG, with its data as a table.

No chart library and no script: the portal serves no third-party JavaScript, and a few bars are a handful of
rectangles. The SVG has no viewBox: bars are placed in percentages of its width, so they stretch to any
screen while the text keeps its size. Screen readers get the same numbers as a table in a <details>.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from django import template
from django.utils.formats import date_format

register = template.Library()

# The plot's share of the chart's height, in percent: the rest holds the axis labels below the bars.
_PLOT_TOP, _PLOT_BOTTOM = 6.0, 82.0
# At most this many axis labels: thirty dates side by side would not fit a phone.
_MAX_LABELS = 6


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    x: float  # percent of the width
    width: float
    y: float  # percent of the height
    height: float
    label_x: float
    show_label: bool


@dataclass(frozen=True)
class BarChart:
    chart_id: str
    title: str
    unit: str
    label_name: str  # what the labels are ("Day", "Status"): the table's first column
    bars: list[Bar]
    peak: int
    total: int
    plot_bottom: float = _PLOT_BOTTOM


def _label(point) -> str:
    return date_format(point, "j M") if isinstance(point, date) else str(point)


def bar_chart_for(
    points: Sequence[tuple[object, int]], *, chart_id: str, title: str, unit: str, label_name: str
) -> BarChart:
    """The geometry of a bar chart of (label, value) points, in order."""
    count = len(points) or 1
    peak = max((value for _, value in points), default=0)
    slot = 100 / count
    every = max(1, -(-count // _MAX_LABELS))  # ceiling division
    bars = []
    for index, (point, value) in enumerate(points):
        height = (_PLOT_BOTTOM - _PLOT_TOP) * value / peak if peak else 0
        bars.append(
            Bar(
                label=_label(point),
                value=value,
                x=round(index * slot + slot * 0.15, 3),
                width=round(slot * 0.7, 3),
                y=round(_PLOT_BOTTOM - height, 3),
                height=round(height, 3),
                label_x=round(index * slot + slot / 2, 3),
                # The last point always gets its label (today, on a chart of days), then every `every`-th before it.
                show_label=(count - 1 - index) % every == 0,
            )
        )
    return BarChart(
        chart_id=chart_id,
        title=title,
        unit=unit,
        label_name=label_name,
        bars=bars,
        peak=peak,
        total=sum(value for _, value in points),
    )


@register.inclusion_tag("portal/_bar_chart.html")
def bar_chart(points, *, chart_id: str, title: str, unit: str, label_name: str) -> dict:
    return {"chart": bar_chart_for(points, chart_id=chart_id, title=title, unit=unit, label_name=label_name)}
