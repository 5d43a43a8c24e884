"""The pure parts of ``scripts/bench --matrix`` (scripts/bench_matrix_table.py): targets, medians
over runs, held-out gaps and the quality verdict, checked against values worked out by hand and
against ``statistics.median``. The benchmark itself is not run here: it takes minutes."""

import importlib.util
import statistics
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_matrix_table.py"
spec = importlib.util.spec_from_file_location("bench_matrix_table", SCRIPT)
table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(table)


@pytest.mark.parametrize(
    ("measured", "target", "expected"),
    [
        (0.5, "<= 0.5", True),
        (0.5000001, "<= 0.5", False),
        (0.5, ">= 0.5", True),
        (0.4999999, ">= 0.5", False),
        (512.0, "<= 512", True),
        (None, "<= 1.5", None),
        (1.0, None, None),
    ],
)
def test_met_compares_with_the_targets_bound_inclusive(measured, target, expected):
    assert table.met(measured, target) is expected


def test_met_refuses_an_unknown_operator():
    with pytest.raises(ValueError, match="target must be"):
        table.met(1.0, "< 2")


def test_combine_takes_medians_per_row_and_keeps_the_middle_runs_detail():
    measured = {"a": [0.9, 0.3, 0.5], "b": [2.0, 4.0, 3.0]}
    held_out = [-10.0, -10.2, -10.1]
    runs = [
        [
            {"what": "a", "measured": measured["a"][i], "target": "<= 0.5", "detail": f"a{i}"},
            {
                "what": "b",
                "measured": measured["b"][i],
                "target": None,
                "detail": f"b{i}",
                "held_out": held_out[i],
                "truth": -10.0,
                "sklearn": -10.05,
            },
        ]
        for i in range(3)
    ]
    a, b = table.combine(runs)
    assert a["measured"] == statistics.median(measured["a"]) == 0.5
    assert a["detail"] == "a2" and a["met"] is True and a["runs_measured"] == measured["a"]
    assert b["measured"] == 3.0 and b["detail"] == "b2" and b["met"] is None
    assert b["held_out"] == pytest.approx(-10.1)
    assert b["gap_truth"] == pytest.approx(0.1)  # -10.0 - (-10.1)
    assert b["gap_sklearn"] == pytest.approx(0.05)  # -10.05 - (-10.1)
    assert b["sklearn_gap_truth"] == pytest.approx(0.05)


def test_combine_skips_unmeasured_runs_and_keeps_row_order_across_runs():
    runs = [
        [{"what": "x", "measured": None, "target": ">= 0.5"}],
        [{"what": "x", "measured": 0.2, "target": ">= 0.5"}, {"what": "y", "measured": 1.0, "target": None}],
        [{"what": "x", "measured": 0.4, "target": ">= 0.5"}],
    ]
    x, y = table.combine(runs)
    assert x["measured"] == pytest.approx(0.3) and x["met"] is False and x["runs_measured"] == [None, 0.2, 0.4]
    assert y["what"] == "y" and y["measured"] == 1.0
    assert table.combine([[{"what": "z", "measured": None, "target": "<= 1"}]])[0]["met"] is None


def test_quality_flags_trailing_sklearn_and_a_regression_against_the_baseline():
    slack = table.QUALITY_SLACK
    assert table.quality({"what": "x"}) is None
    assert table.quality({"what": "x", "gap_sklearn": slack, "gap_truth": 0.0}) == "ok"
    assert table.quality({"what": "x", "gap_sklearn": slack + 1e-4, "gap_truth": 0.0}) == "trails sklearn"
    baseline = {"x": {"gap_truth": 0.01}}
    assert table.quality({"what": "x", "gap_sklearn": 0.0, "gap_truth": 0.01 + slack}, baseline) == "ok"
    assert table.quality({"what": "x", "gap_sklearn": 0.0, "gap_truth": 0.02 + slack}, baseline) == "+0.015 vs baseline"


def test_format_table_prints_one_line_per_row_with_its_verdict():
    rows = [
        {"what": "fast", "measured": 0.25, "target": "<= 0.5", "met": True, "detail": "1 s / 4 s"},
        {"what": "slow", "measured": 2.0, "target": "<= 0.5", "met": False},
        {"what": "unmeasured", "measured": None, "target": None, "met": None, "detail": "see elsewhere"},
    ]
    lines = table.format_table(rows).splitlines()
    assert len(lines) == 4
    assert lines[1].split()[:4] == ["fast", "0.250", "<=", "0.5"] and " yes " in lines[1]
    assert lines[2].split()[:5] == ["slow", "2.000", "<=", "0.5", "NO"]
    assert lines[3].split()[:3] == ["unmeasured", "-", "-"] and lines[3].endswith("see elsewhere")
