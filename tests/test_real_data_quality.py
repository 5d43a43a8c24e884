"""The acceptance suite of fit quality: streamgmm's default fit is never worse than scikit-learn's default fit.

Each light case of scripts/bench_quality.py is one test: scikit-learn's bundled sets (iris, wine,
breast_cancer, digits; raw and standardised; the four covariance types; three values of K) and the
synthetic stress sets (Student-t, skewed, two scales, 1% weights, overlap, units 1e6 apart, sorted
streams). Both sides are fitted with their defaults and ``random_state`` 0, 1, 2; the mean over the
seeds of ``score(X)`` on the data fitted must be at least scikit-learn's minus 0.005 nats/record.
The heavy cases (100k-300k records) and the wall-time ratios are in the script only:

    .venv/bin/python scripts/bench_quality.py
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_quality.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


bench = _load_bench()
CASES = bench.cases(heavy=False)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_default_fit_is_not_worse_than_sklearn_default(case) -> None:
    row = bench.compare(case, bench.SEEDS)
    assert row.gap <= bench.TOLERANCE, bench.describe(row)


def test_suite_covers_every_bundled_set_covariance_type_and_stress() -> None:
    bundled = [c for c in CASES if c.dataset.rpartition("-")[0] in bench.BUNDLED]
    assert len(bundled) == len(bench.BUNDLED) * 2 * 4 * 3
    assert {c.covariance_type for c in bundled} == set(bench.COVARIANCE_TYPES)
    synthetic = {(c.dataset, c.covariance_type) for c in CASES} - {(c.dataset, c.covariance_type) for c in bundled}
    stresses = ["student-t", "skewed", "two-scales", "rare-1pct", "overlap", "units-1e6-apart", "sorted-by-"]
    for stress in stresses:
        for t in ("full", "diag"):
            assert any(name.startswith(stress) and kind == t for name, kind in synthetic), (stress, t)
    assert not any(c.heavy for c in CASES)
