"""The pure parts of ``scripts/bench --matrix``: targets, medians over runs, the baseline
comparison of quality and the printed table. No measuring here, so tests can check it cheaply.

A row is a dict: ``what`` (what is measured), ``measured`` (the ratio the target is about, or
None when it could not be measured), ``target`` (``"<= 0.5"``, ``">= 0.5"`` or None when the row
has none), ``detail`` (the two sides of the ratio, in words), and for fits the held-out mean
log-likelihoods ``held_out`` (the fit's), ``truth`` (the generating parameters') and
``sklearn`` (scikit-learn's default fit's), in nats per record.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

# Quality: the fit may trail scikit-learn's default, or its own gap in a baseline run, by this
# much (nats/record) and still pass (the quality criterion, and "no regression" against a baseline).
QUALITY_SLACK = 0.005


def met(measured: float | None, target: str | None) -> bool | None:
    """Whether ``measured`` meets ``target`` ("<= x" or ">= x"); None when either is missing.

    >>> met(0.4, "<= 0.5"), met(0.4, ">= 0.5"), met(None, "<= 0.5"), met(0.4, None)
    (True, False, None, None)
    """
    if measured is None or target is None:
        return None
    op, value = target.split()
    if op == "<=":
        return measured <= float(value)
    if op == ">=":
        return measured >= float(value)
    raise ValueError(f"target must be '<= x' or '>= x', got {target!r}")


def gaps(row: dict) -> dict:
    """The row's held-out gaps (positive: the fit is worse): to the generating parameters, to
    scikit-learn, and scikit-learn's own to the generating parameters.

    >>> gaps({"held_out": -10.0, "truth": -9.9, "sklearn": -10.01})
    {'gap_truth': 0.09999999999999964, 'gap_sklearn': -0.009999999999999787, 'sklearn_gap_truth': 0.10999999999999943}
    """
    out = {"gap_truth": None, "gap_sklearn": None, "sklearn_gap_truth": None}
    fit, truth, sk = row.get("held_out"), row.get("truth"), row.get("sklearn")
    if fit is not None and truth is not None:
        out["gap_truth"] = truth - fit
    if fit is not None and sk is not None:
        out["gap_sklearn"] = sk - fit
    if sk is not None and truth is not None:
        out["sklearn_gap_truth"] = truth - sk
    return out


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def combine(runs: Sequence[Sequence[dict]]) -> list[dict]:
    """One row per ``what``, in the first run's order: the median over the runs of ``measured``
    and of the held-out log-likelihoods (each over the runs that have it), the other fields
    from the run whose ``measured`` is nearest that median; ``runs_measured`` lists every run's.

    >>> a = [{"what": "x", "measured": 1.0, "target": "<= 2", "detail": "a"}]
    >>> b = [{"what": "x", "measured": 3.0, "target": "<= 2", "detail": "b"}]
    >>> c = [{"what": "x", "measured": 2.0, "target": "<= 2", "detail": "c"}]
    >>> row = combine([a, b, c])[0]
    >>> row["measured"], row["detail"], row["runs_measured"], row["met"]
    (2.0, 'c', [1.0, 3.0, 2.0], True)
    """
    order: list[str] = []
    by_what: dict[str, list[dict]] = {}
    for rows in runs:
        for row in rows:
            if row["what"] not in by_what:
                order.append(row["what"])
            by_what.setdefault(row["what"], []).append(row)
    combined = []
    for what in order:
        rows = by_what[what]
        measured = _median([r.get("measured") for r in rows])
        nearest = min(
            rows,
            key=lambda r: abs(r["measured"] - measured) if r.get("measured") is not None else float("inf"),
        )
        row = {**nearest, "measured": measured, "runs_measured": [r.get("measured") for r in rows]}
        for name in ("held_out", "truth", "sklearn"):
            if any(name in r for r in rows):
                row[name] = _median([r.get(name) for r in rows])
        row.update(gaps(row))
        row["met"] = met(measured, row.get("target"))
        combined.append(row)
    return combined


def quality(row: dict, baseline: dict[str, dict] | None = None) -> str | None:
    """ "ok" or what is wrong with a fit row's held-out quality; None for rows without a fit.
    Wrong: trailing scikit-learn's default by more than ``QUALITY_SLACK``, or (given a
    ``baseline``, rows by ``what`` from an earlier ``--json``) a gap to the generating
    parameters more than ``QUALITY_SLACK`` above the baseline's.

    >>> quality({"what": "x", "gap_sklearn": 0.001, "gap_truth": 0.002})
    'ok'
    >>> quality({"what": "x", "gap_sklearn": 0.02, "gap_truth": 0.03}, {"x": {"gap_truth": 0.0}})
    'trails sklearn; +0.030 vs baseline'
    """
    if row.get("gap_truth") is None and row.get("gap_sklearn") is None:
        return None
    problems = []
    if row.get("gap_sklearn") is not None and row["gap_sklearn"] > QUALITY_SLACK:
        problems.append("trails sklearn")
    before = (baseline or {}).get(row["what"], {}).get("gap_truth")
    if before is not None and row.get("gap_truth") is not None and row["gap_truth"] > before + QUALITY_SLACK:
        problems.append(f"{row['gap_truth'] - before:+.3f} vs baseline")
    return "; ".join(problems) or "ok"


def format_table(rows: Sequence[dict], baseline: dict[str, dict] | None = None) -> str:
    """The matrix as text: one line per row, the ratio with its target and verdict, then the
    held-out gaps (nats/record; positive: the fit is worse) and the ratio's two sides.

    >>> print(format_table([{"what": "a fit", "measured": 0.25, "target": "<= 0.5", "met": True,
    ...                      "detail": "1 s / 4 s", "gap_truth": 0.001, "gap_sklearn": 0.0,
    ...                      "sklearn_gap_truth": 0.001}]))  # doctest: +NORMALIZE_WHITESPACE
    what    measured   target  met  gap truth  gap sk  sk gap truth  quality  detail
    a fit      0.250   <= 0.5  yes     0.0010  0.0000        0.0010  ok       1 s / 4 s
    """
    width = max([len("what")] + [len(r["what"]) for r in rows])

    def number(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = [
        f"{'what':<{width}} {'measured':>8} {'target':>8} {'met':>4} {'gap truth':>10} {'gap sk':>7} "
        f"{'sk gap truth':>13}  {'quality':<8} detail"
    ]
    for r in rows:
        verdict = {True: "yes", False: "NO", None: "-"}[r.get("met")]
        lines.append(
            f"{r['what']:<{width}} {number(r.get('measured'), '.3f'):>8} {r.get('target') or '-':>8} {verdict:>4} "
            f"{number(r.get('gap_truth'), '.4f'):>10} {number(r.get('gap_sklearn'), '.4f'):>7} "
            f"{number(r.get('sklearn_gap_truth'), '.4f'):>13}  {quality(r, baseline) or '-':<8} {r.get('detail', '')}"
        )
    return "\n".join(line.rstrip() for line in lines)
