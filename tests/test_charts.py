"""The report's pictures: drawn from numbers, oriented so better is to the right, fitted axes that say so."""

import pytest

from mlflow_ci import charts


def test_allowed_change_of_relative_rules_only():
    assert charts.allowed_change("max_drop", 0.01, 0.9) == 0.01
    assert charts.allowed_change("max_drop_pct", 2, -50.0) == pytest.approx(1.0)
    assert charts.allowed_change("min", 0.8, 0.9) is None
    assert charts.allowed_change("max_drop", None, 0.9) is None


def test_delta_plot_puts_better_to_the_right_for_either_direction():
    worse_higher = charts.delta_plot(-0.02, -0.03, -0.01, 0.005, "higher")
    worse_lower = charts.delta_plot(+0.02, 0.01, 0.03, 0.005, "lower")
    assert worse_higher == worse_lower  # the same regression, whichever way the metric points
    assert len(worse_higher) == charts.PLOT_WIDTH
    # left to right: the interval with the change inside, then the limit, then "no change"
    assert worse_higher.index("├") < worse_higher.index("●") < worse_higher.index("┤") < worse_higher.index("┊") < worse_higher.index("│")
    better = charts.delta_plot(0.02, 0.01, 0.03, 0.01, "higher")
    assert better.index("┊") < better.index("│") < better.index("├") < better.index("●")


def test_delta_plot_without_interval_or_limit_and_with_nothing_to_draw():
    plot = charts.delta_plot(0.5, None, None, None, "higher")
    assert "├" not in plot and "┊" not in plot and plot.index("│") < plot.index("●")
    assert charts.delta_plot(None, None, None, None, "higher") == ""
    assert charts.delta_plot(float("nan"), None, None, None, "higher") == ""
    assert "●" in charts.delta_plot(0.0, None, None, None, "higher")  # no change: the point sits on zero


def test_sparkline_shares_one_scale_with_the_candidate():
    assert charts.sparkline([1.0, 2.0, 3.0], 0.0) == "▃▆█→▁"
    assert charts.sparkline([2.0, 2.0], 2.0) == "▄▄→▄"  # flat: no invented movement
    assert charts.sparkline([1.0, float("nan")], None) == "▄"
    assert charts.sparkline([], 1.0) == ""


def test_trend_chart_fits_the_axis_to_values_and_limit_and_says_where_it_starts():
    chart = charts.trend_chart("eval.auc", "main", ["a" * 40, "b" * 40], [0.95, 0.96], 0.90, 0.94)
    lines = chart.splitlines()
    assert lines[1] == "xychart-beta"
    assert 'title "eval.auc: last 2 gated runs on main, then this PR (y from 0.895)"' in chart
    assert 'x-axis ["aaaaaaa", "bbbbbbb", "this PR"]' in chart
    assert 'y-axis "eval.auc" 0.895 --> 0.965' in chart
    assert "line [0.95, 0.96, 0.9]" in chart and "line [0.94, 0.94, 0.94]" in chart


@pytest.mark.parametrize("name", ['a"b', "x\ny", "acc]", "a" * 61, "`x`", "é"])
def test_only_plain_names_enter_a_chart(name):
    assert charts.trend_chart(name, "main", ["a" * 40], [1.0], 2.0, None) is None


def test_an_odd_branch_name_is_not_written_into_the_chart():
    chart = charts.trend_chart("auc", 'main"]\nclick', [None], [1.0], 2.0, None)
    assert "the base branch" in chart and "click" not in chart and 'x-axis ["run", "this PR"]' in chart
