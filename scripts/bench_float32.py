"""float64 against float32 compute precision for one streaming shape, as a user gets it.

The matrix's marginal online pass (``streamgmm fit --algorithm online`` with ``--passes 2``
minus ``--passes 1``, best of 2 each) with ``--compute-dtype float64`` and ``float32``,
interleaved in each round with a bare decode, over a lake ``scripts/bench --matrix`` wrote.

Usage: ``.venv/bin/python scripts/bench_float32.py [--lake /tmp/f17/lakes/full-1000000]
[--covariance full] [--components 8] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_matrix import Shape, bench_worker, cli_fit  # noqa: E402

DTYPES = ("float64", "float32")


def pass_seconds(lake: Path, shape: Shape, work: Path, dtype: str) -> float:
    options = ["--algorithm", "online", "--compute-dtype", dtype]
    one = min((cli_fit(lake, shape, work / "one.npz", 0, *options, "--passes", "1") for _ in range(2)), key=seconds)
    two = min((cli_fit(lake, shape, work / "two.npz", 0, *options, "--passes", "2") for _ in range(2)), key=seconds)
    return two["seconds"] - one["seconds"]


def seconds(fit: dict) -> float:
    return fit["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lake", type=Path, default=Path("/tmp/f17/lakes/full-1000000"))
    parser.add_argument("--covariance", default="full")
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    shape = Shape(args.covariance, 0, 0, args.components, args.covariance, streaming=True)
    work = Path(tempfile.mkdtemp())
    decode, rates = [], {dtype: [] for dtype in DTYPES}
    for round_ in range(args.rounds):
        measured = bench_worker("decode", args.lake, shape, 0)
        records = measured["records_read"]
        decode.append(records / measured["seconds"])
        for dtype in DTYPES:
            rate = records / pass_seconds(args.lake, shape, work, dtype)
            rates[dtype].append(rate)
            print(f"round {round_}: {dtype}: pass {rate / 1e6:.2f} M records/s, / decode {rate / decode[-1]:.3f}")
    for dtype, values in rates.items():
        print(
            f"{dtype}: median pass {statistics.median(values) / 1e6:.2f} M records/s, "
            f"/ median decode {statistics.median(values) / statistics.median(decode):.3f}"
        )


if __name__ == "__main__":
    main()
