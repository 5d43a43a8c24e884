"""How long one watcher checkpoint commit takes, and how big it is, as the ledger grows.

Each commit appends one ledger line and rewrites the checkpoint (the model and the ledger's
committed length and hash), so its cost should not grow with the ledger: this measures it.

    .venv/bin/python scripts/bench_watch_checkpoint.py [--components 8] [--features 16]
"""

from __future__ import annotations

import tempfile

import bench_common
import numpy as np

from streamgmm import StreamingGaussianMixture
from streamgmm.watch.checkpoint import StateDirectory


def main() -> None:
    parser = bench_common.parser(__doc__, components=8, features=16, repeats=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, args.features))
    model = StreamingGaussianMixture(args.components, random_state=0).partial_fit(X)
    print("ledger entries  commit ms (median)  checkpoint MB  ledger MB")
    for n in (10, 1_000, 10_000, 100_000):
        ledger = [
            {
                "sequence": i + 1,
                "path": f"day={i // 1000}/part-{i:08d}.parquet",
                "size": 12_345_678,
                "mtime_ns": 1_700_000_000_000_000_000 + i,
                "sha256": f"{i:064x}",
                "status": "consumed",
                "reason": None,
                "records_used": 1_000_000,
                "records_skipped": 0,
                "step": i * 122,
                "mean_shift": 0.0123,
                "weight_shift": 0.00123,
                "output": None,
                "at": "2026-01-01T00:00:00.000+00:00",
            }
            for i in range(n + args.repeats)
        ]
        with tempfile.TemporaryDirectory() as tmp:
            state = StateDirectory(tmp, keep_models=2)
            with state.locked():
                state.commit(model, ledger[:n], {})  # the ledger so far
                seconds = []
                for r in range(args.repeats):  # then one more file each
                    seconds.append(bench_common.timed(lambda: state.commit(model, ledger[: n + r + 1], {}))[0])
            checkpoint = state.current.stat().st_size / 1e6
            ledger_size = (state.path / "ledger.jsonl").stat().st_size / 1e6
        print(f"{n:>14,}  {1000 * float(np.median(seconds)):>18.1f}  {checkpoint:>13.2f}  {ledger_size:>9.2f}")


if __name__ == "__main__":
    main()
