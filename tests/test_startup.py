"""Start-up: importing streamgmm, and ``streamgmm --help``, load none of the heavy optional
modules; the commands that need them import them when they run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = [
    "scipy",
    "scipy.linalg",
    "scipy.special",
    "scipy.stats",
    "scipy.optimize",
    "pandas",
    "pyarrow.dataset",
    "dask",
    "distributed",
    "matplotlib",
    "tqdm",
]

LOADED = """
import json, sys
{code}
print(json.dumps(sorted(name for name in {heavy} if name in sys.modules)))
"""


def loaded_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after running ``code``."""
    script = LOADED.format(code=code, heavy=HEAVY)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "code",
    [
        "import streamgmm",
        "from streamgmm.cli.command import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
        "from streamgmm.cli.command import main\ntry:\n    main(['fit', '--help'])\nexcept SystemExit:\n    pass",
    ],
    ids=["import", "help", "fit-help"],
)
def test_start_up_loads_no_heavy_module(code: str) -> None:
    assert loaded_after(code) == []


def test_the_check_sees_a_heavy_module_when_one_is_loaded() -> None:
    """Not vacuous: making data (scipy.stats) loads it, and the check says so."""
    assert "scipy.stats" in loaded_after("import streamgmm\nstreamgmm.make_mixture(10, 2, 2, random_state=0)")
