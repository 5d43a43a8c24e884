"""Keep a model current while files arrive: ``streamgmm watch`` on a landing directory that this
script feeds, as a team's jobs would during the day.

Starts the watcher as its own process (``streamgmm watch LANDING --state STATE ...``), then drops
Parquet files into the landing directory one at a time, each written under a hidden name and
renamed (so the watcher never sees half a file). Halfway through, the data drift: every
component's mean moves. Once the watcher has consumed every file the script stops it with
SIGTERM and prints what it says about itself (``streamgmm info STATE``) and how close the model
is to the mixture the latest files came from. With ``--step-floor`` above zero the model forgets
old data and follows the drift; with 0 it averages everything it has seen.

    python pipelines/continuous_update.py [--files 10] [--records 5000] [--step-floor 0.05] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streamgmm import StreamingGaussianMixture
from streamgmm.datasets.mixtures import match_components, random_mixture, sample_mixture
from streamgmm.watch.checkpoint import StateDirectory


def drop_file(landing: Path, name: str, X: np.ndarray) -> None:
    """Write under a hidden name, then rename: the file appears complete or not at all."""
    tmp = landing / f".{name}.incoming"
    pq.write_table(pa.table({"x0": X[:, 0], "x1": X[:, 1]}), tmp)
    os.replace(tmp, landing / name)


def consumed(state: Path) -> int:
    checkpoint = StateDirectory(state).load()
    return 0 if checkpoint is None else len(checkpoint.ledger)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10, help="files to drop (default 10)")
    parser.add_argument("--records", type=int, default=5000, help="records per file (default 5000)")
    parser.add_argument("--components", type=int, default=3)
    parser.add_argument("--step-floor", type=float, default=0.05, help="the watcher's --step-floor (default 0.05)")
    parser.add_argument("--pause", type=float, default=0.3, help="seconds between files (default 0.3)")
    parser.add_argument("--out", default="out/continuous", help="working directory, replaced on each run")
    args = parser.parse_args()

    work = Path(args.out)
    if work.exists():
        shutil.rmtree(work)
    landing, state, scored = work / "landing", work / "state", work / "scored"
    landing.mkdir(parents=True)
    before = random_mixture(args.components, 2, random_state=1)
    after = type(before).from_covariances(before.weights, before.means + 2.0, before.covariances, "full")

    watcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamgmm",
            "watch",
            str(landing),
            "--state",
            str(state),
            "-k",
            str(args.components),
            "--columns",
            "x0,x1",
            "--seed",
            "0",
            "--batch-size",
            "500",
            "--step-floor",
            str(args.step_floor),
            "--settle",
            "0.2",
            "--interval",
            "0.1",
            "--assign-out",
            str(scored),
            "--json",
            "-q",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for i in range(args.files):
            truth = before if i < args.files // 2 else after
            X, _ = sample_mixture(truth, args.records, random_state=i)
            drop_file(landing, f"batch-{i:04d}.parquet", X)
            print(f"dropped batch-{i:04d}.parquet ({'drifted' if truth is after else 'original'} mixture)", flush=True)
            time.sleep(args.pause)
        deadline = time.monotonic() + 120
        while consumed(state) < args.files and watcher.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        watcher.send_signal(signal.SIGTERM)  # finishes the current file, commits, exits 0
        out, _ = watcher.communicate(timeout=60)
    if watcher.returncode != 0:
        sys.exit(f"continuous_update: the watcher exited with status {watcher.returncode}")
    summary = json.loads(out)
    print(
        f"watcher stopped by {summary['stopped_by']}: {summary['files_consumed']} files, "
        f"{summary['records_used']:,} records"
    )

    info = subprocess.run([sys.executable, "-m", "streamgmm", "info", str(state)], capture_output=True, text=True)
    print(info.stdout, end="")

    model = StreamingGaussianMixture.load(state / "current.model")
    order = match_components(after.means, model.means_)
    distance = np.linalg.norm(model.means_[order] - after.means, axis=1)
    print(f"distance of each fitted mean to the drifted mixture's: {np.round(distance, 3).tolist()}")
    print(
        json.dumps(
            {
                "files_consumed": summary["files_consumed"],
                "records": summary["records_used"],
                "max_distance_to_drifted_means": float(distance.max()),
                "outputs": len(list(scored.glob("*.parquet"))),
            }
        )
    )


if __name__ == "__main__":
    main()
