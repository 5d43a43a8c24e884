"""The runner both pipeline jobs share: fit a mixture to a Parquet lake, save it, and write every
record's responsibilities, in this process or on a Dask cluster (``client``).

``run_job`` returns the model and one summary per step; ``main_of`` turns a job's steps into a
command that prints one JSON line per step and reports bad input in one line.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

from streamgmm import DataError, ModelFileError, ParquetSource, StreamingGaussianMixture, assign
from streamgmm.cli.command import combined_filter, records_fitted


def run_job(
    lake: str,
    *,
    components: int,
    model_path: str,
    out: str,
    covariance: str = "full",
    algorithm: str = "auto",
    passthrough: list[str] | None = None,
    keep: list[str] | None = None,
    nan_policy: str = "raise",
    filters: list[Any] | None = None,
    seed: int = 0,
    overwrite: bool = True,
    client: Any = None,
) -> tuple[StreamingGaussianMixture, dict[str, Any], dict[str, Any]]:
    """Fit and assign (on ``client``'s cluster when given); the model and the two step summaries."""
    source = ParquetSource(
        lake, passthrough=passthrough or [], filter=combined_filter(filters or []), nan_policy=nan_policy
    )
    model = StreamingGaussianMixture(components, covariance_type=covariance, algorithm=algorithm, random_state=seed)
    started = time.perf_counter()
    model.fit(source, client=client)
    fit_seconds = time.perf_counter() - started
    model.save(model_path)
    records = records_fitted(model)
    fitted = {
        "step": "fit",
        **({"scheduler": client.scheduler.address, "workers": len(client.nthreads())} if client else {}),
        "files": len(source.files),
        "records": int(records),
        # The default on a lake larger than its sample: one online pass, then exact EM until tol.
        "passes": model.n_iter_,
        "skipped": model.n_skipped_,
        "features": model.feature_names_in_.tolist() if hasattr(model, "feature_names_in_") else None,
        "lower_bound": model.lower_bound_,
        "seconds": round(fit_seconds, 3),
        "records_per_second": round(records / fit_seconds),
        "model": model_path,
    }
    summary = assign(model, source, out, keep=keep or [], overwrite=overwrite, client=client)
    scored = {
        "step": "assign",
        "files": len(summary.files),
        "records": summary.rows,
        "skipped": summary.skipped,
        "seconds": round(summary.seconds, 3),
        "records_per_second": round(summary.rows / summary.seconds) if summary.seconds else None,
        "out": summary.out,
        "model_fingerprint": summary.fingerprint,
    }
    return model, fitted, scored


def main_of(name: str, steps: Callable[[], tuple[Any, dict[str, Any], dict[str, Any]]]) -> int:
    """Run a job's ``steps``: one JSON line per step summary, or one error line and exit 1."""
    try:
        _, fitted, scored = steps()
    except (DataError, ModelFileError, ValueError, OSError) as exc:
        print(f"{name}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(json.dumps(fitted))
    print(json.dumps(scored))
    return 0
