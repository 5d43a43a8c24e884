"""What the benchmark scripts share: the common options, timing with repeats, BLAS thread
limits, peak memory, table printing and JSON output.

A script imports it as ``import bench_common`` (the scripts' folder is on ``sys.path`` when a
script runs, and the scripts that load another script put it there)::

    parser = bench_common.parser(__doc__, records=1_000_000, components=8, repeats=3, json=None)
    args = parser.parse_args()
    with bench_common.blas_threads(args.blas_threads):
        seconds = bench_common.best_of(lambda: model.fit(X), args.repeats)
    print(bench_common.table(["what", "s"], [["fit", seconds]], ["", ".2f"]))
    bench_common.write_json(args.json, {"machine": bench_common.machine(), "seconds": seconds})
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
MiB = 2**20

# The common options: (type, help). ``parser`` adds those it is given a default for.
OPTIONS: dict[str, tuple[Any, str]] = {
    "lake": (str, "an existing lake written by scripts/make_lake (default: write one)"),
    "records": (int, "records of the data written"),
    "features": (int, "features of the data written"),
    "components": (int, "mixture components (K)"),
    "covariance": (str, "covariance type"),
    "seed": (int, "seed of the data and of the models"),
    "repeats": (int, "runs of each measurement"),
    "tmp": (str, "where temporary lakes and outputs go (deleted after)"),
    "blas_threads": (int, "BLAS/OpenMP threads, 0 or none for the libraries' own"),
    "json": (str, "also write the results as JSON here"),
}


def parser(description: str | None, **defaults: Any) -> argparse.ArgumentParser:
    """An argument parser with ``description`` (a script's ``__doc__``) and the common options
    given a default here (``records=1_000_000``, ``json=None``, ...), spelled ``--records``,
    ``--blas-threads``; a script adds its own options to it."""
    unknown = set(defaults) - set(OPTIONS)
    if unknown:
        raise TypeError(f"not a common option: {sorted(unknown)}")
    made = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in defaults.items():
        kind, help_text = OPTIONS[name]
        choices = COVARIANCE_TYPES if name == "covariance" else None
        made.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=default,
            choices=choices,
            help=f"{help_text} (default: %(default)s)",
        )
    return made


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    """The wall seconds of ``run()`` and what it returned."""
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def seconds_of(run: Callable[[], Any], repeats: int) -> list[float]:
    """The wall seconds of ``repeats`` calls of ``run``, in order."""
    return [timed(run)[0] for _ in range(repeats)]


def best_of(run: Callable[[], Any], repeats: int) -> float:
    """The shortest wall time of ``repeats`` calls: the least disturbed by other load."""
    return min(seconds_of(run, repeats))


def median_of(run: Callable[[], Any], repeats: int) -> float:
    """The median wall time of ``repeats`` calls."""
    return statistics.median(seconds_of(run, repeats))


def blas_threads(threads: int | None) -> contextlib.AbstractContextManager:
    """Limit the BLAS/OpenMP thread pools to ``threads`` inside the block (none or 0: as they are)."""
    if not threads:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads)


def blas_environment(threads: int | None) -> dict[str, str]:
    """This process's environment for a child, its BLAS libraries limited to ``threads``."""
    env = dict(os.environ)
    if threads:
        env.update(dict.fromkeys(("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"), str(threads)))
    return env


def peak_rss() -> int:
    """This process's resident high-water mark in bytes (``ru_maxrss`` would include the
    parent's: Linux carries it over fork + exec)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))


def machine() -> dict:
    """The machine a result was measured on, for the JSON output."""
    return {
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }


def note(message: str) -> None:
    """Progress on stderr, so stdout holds only the results."""
    print(f"  {message}", file=sys.stderr, flush=True)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], formats: Sequence[str] | None = None) -> str:
    """Rows as aligned text: text left, numbers right, each number in its column's format
    (``".2f"``; ``""``: as it is), ``None`` as ``-``.

    >>> print(table(["what", "s"], [["fit", 1.234], ["score", None]], ["", ".2f"]))
    what     s
    fit   1.23
    score    -
    """
    formats = formats or [""] * len(header)

    def cell(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    cells = [[cell(v, f) for v, f in zip(row, formats)] for row in rows]
    widths = [max([len(h)] + [len(r[j]) for r in cells]) for j, h in enumerate(header)]
    numeric = [any(isinstance(row[j], (int, float)) for row in rows) for j in range(len(header))]

    def line(values: Sequence[str]) -> str:
        return " ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(header)] + [line(r) for r in cells])


def write_json(path: str | os.PathLike | None, document: Any) -> None:
    """Write ``document`` as indented JSON to ``path`` (nothing when it is None) and say so."""
    if path is None:
        return
    Path(path).write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {path}")


@contextlib.contextmanager
def lake(path: str | None, tmp: str | None = None, **write: Any) -> Iterator[str]:
    """``path``, or else a lake written by ``write_lake(**write)`` in a temporary directory
    under ``tmp`` that is removed afterwards."""
    if path is not None:
        yield path
        return
    import shutil
    import tempfile

    from streamgmm.datasets.synthetic_lake import write_lake

    root = tempfile.mkdtemp(prefix="streamgmm-bench-", dir=tmp)
    try:
        target = os.path.join(root, "lake")
        write_lake(target, **write)
        yield target
    finally:
        shutil.rmtree(root, ignore_errors=True)
