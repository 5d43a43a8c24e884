"""Start-up: ``streamgmm --help`` against importing numpy and pyarrow.parquet, fresh interpreters.

Runs each command ``--repeats`` times (default 10), alternating the two so that a busy machine
slows both alike, and prints the median wall time of each and their ratio (the target is at
most 2: the CLI's own imports cost no more than the libraries every command needs).

numpy's and pyarrow's bytecode was compiled when they were installed; streamgmm's is too in a
user's install, but not in an editable checkout under ``PYTHONDONTWRITEBYTECODE=1``, where every
start compiles its modules again. So the children keep bytecode in a cache of their own
(``PYTHONPYCACHEPREFIX``, a temporary directory; the source tree is left alone), warmed by one
run first; ``--no-bytecode-cache`` measures with the environment as it is.

Usage: ``.venv/bin/python scripts/bench_startup.py [--repeats 10]``
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_common

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
COMMANDS = {
    "streamgmm --help": [str(ROOT / ".venv" / "bin" / "streamgmm"), "--help"],
    "import numpy, pyarrow.parquet": [PYTHON, "-c", "import numpy, pyarrow.parquet"],
}


def wall(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = bench_common.parser(__doc__, repeats=10)
    parser.add_argument("--no-bytecode-cache", action="store_true", help="the environment as it is")
    args = parser.parse_args()
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as cache:
        if not args.no_bytecode_cache:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = cache
        for command in COMMANDS.values():  # warm the file cache (and the bytecode cache) once
            wall(command, env)
        times: dict[str, list[float]] = {name: [] for name in COMMANDS}
        for _ in range(args.repeats):
            for name, command in COMMANDS.items():
                times[name].append(wall(command, env))
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, median in medians.items():
        print(f"{name:<32} median {median:.3f} s over {args.repeats}")
    ratio = medians["streamgmm --help"] / medians["import numpy, pyarrow.parquet"]
    print(f"ratio {ratio:.2f} (target <= 2)")
    print(json.dumps({"medians_s": medians, "ratio": ratio, "bytecode_cache": not args.no_bytecode_cache}))


if __name__ == "__main__":
    sys.exit(main())
