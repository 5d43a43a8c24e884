"""Large K: the default CLI fit against scikit-learn's default ``GaussianMixture``, same run.

On a synthetic lake (default 500k x 16, K=64, diagonal covariances, 8 files sorted by
component as ``scripts/bench --matrix`` writes it; written once to ``--lake`` if it does not
exist), times ``streamgmm fit`` as a user runs it (a fresh process,
start-up included) and scikit-learn's ``GaussianMixture(K, covariance_type=...)`` on the data
already in memory, and prints the wall-time ratio and each model's held-out mean
log-likelihood next to the generating parameters'. ``--repeats`` runs both several times and
reports the median ratio.

Usage: ``.venv/bin/python scripts/bench_large_k.py [--lake /tmp/lake64] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HELD_OUT_DIR = "_held_out"


def load(lake: Path, names: list[str]) -> np.ndarray:
    import pyarrow.parquet as pq

    return np.concatenate(
        [
            np.column_stack([t.column(n).to_numpy() for n in names]).astype(float)
            for t in (pq.read_table(p, columns=names) for p in sorted(lake.glob("*.parquet")))
        ]
    )


def make_lake(args: argparse.Namespace) -> None:
    subprocess.run(
        [
            str(ROOT / "scripts" / "make_lake"),
            "--records",
            str(args.records),
            "--features",
            str(args.features),
            "--components",
            str(args.components),
            "--covariance",
            args.covariance,
            "--held-out",
            str(args.held_out),
            "--seed",
            str(args.seed),
            "--files",
            str(args.files),
            "--sort-by",
            args.sort_by,
            str(args.lake),
        ],
        check=True,
    )


def cli_fit(args: argparse.Namespace, model_path: Path) -> tuple[float, float]:
    """Wall and CPU seconds of the default CLI fit, in a fresh process."""
    command = [
        str(ROOT / ".venv" / "bin" / "streamgmm"),
        "fit",
        str(args.lake),
        "--components",
        str(args.components),
        "--covariance",
        args.covariance,
        "--passthrough",
        "id",
        "--model",
        str(model_path),
        "--seed",
        str(args.seed),
        "--quiet",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lake", type=Path, default=Path(tempfile.gettempdir()) / "streamgmm-lake-k64")
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--components", type=int, default=64)
    parser.add_argument("--covariance", default="diag")
    parser.add_argument("--held-out", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    # As scripts/bench --matrix writes its lakes: 8 files, sorted by component.
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--sort-by", choices=["none", "component"], default="component")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    if not (args.lake / "_truth.json").exists():
        make_lake(args)
    from sklearn.mixture import GaussianMixture

    from streamgmm import StreamingGaussianMixture
    from streamgmm.datasets.synthetic_lake import read_truth

    truth, names = read_truth(args.lake)
    X = load(args.lake, names)
    held_out = load(args.lake / HELD_OUT_DIR, names)
    truth_ll = float(truth.log_likelihood(held_out).mean())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "model.json"
        for _ in range(args.repeats):
            ours, ours_cpu = cli_fit(args, model_path)
            ours_ll = float(StreamingGaussianMixture.load(model_path).score(held_out))
            sk = GaussianMixture(args.components, covariance_type=args.covariance, random_state=args.seed)
            start, cpu = time.perf_counter(), time.process_time()
            sk.fit(X)
            theirs, theirs_cpu = time.perf_counter() - start, time.process_time() - cpu
            sk_ll = float(sk.score(held_out))
            rows.append(
                {
                    "streamgmm_s": ours,
                    "sklearn_s": theirs,
                    "ratio": ours / theirs,
                    "cpu_ratio": ours_cpu / theirs_cpu,
                    "gap_to_truth": truth_ll - ours_ll,
                    "sklearn_gap_to_truth": truth_ll - sk_ll,
                }
            )
            print(
                f"streamgmm CLI {ours:7.2f} s ({ours_cpu:.2f} CPU)  sklearn {theirs:7.2f} s ({theirs_cpu:.2f} CPU, "
                f"{sk.n_iter_} iterations)  ratio {ours / theirs:5.2f} (CPU {ours_cpu / theirs_cpu:.2f})  "
                f"held-out gap to truth: streamgmm {truth_ll - ours_ll:.4f}, sklearn {truth_ll - sk_ll:.4f}",
                flush=True,
            )
    summary = {
        "records": args.records,
        "features": args.features,
        "components": args.components,
        "covariance": args.covariance,
        "median_ratio": statistics.median(r["ratio"] for r in rows),
        "runs": rows,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    sys.exit(main())
