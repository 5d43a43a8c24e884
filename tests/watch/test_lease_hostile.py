"""The lease of a state prefix under hostile input: a lease length that cannot be renewed, and
a lease object that is unreadable or lasts for ever.

Oracles: the exit status and message the CLI promises for bad usage (2, naming the option) and
bad data (1, one line naming the object); the lease object left as found.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from streamgmm.cli.command import main
from streamgmm.watch.blob_store import ObjectStore
from streamgmm.watch.checkpoint import StateDirectoryBusy
from streamgmm.watch.lease import MAX_LEASE_SECONDS, Lease
from streamgmm.watch.store_state import StoreState
from streamgmm.watch.watcher import watch

OPTIONS = {"n_components": 2, "columns": ["x0", "x1"], "settle": 0, "once": True}


@pytest.mark.parametrize("seconds", ["inf", "1e300", "nan", str(MAX_LEASE_SECONDS * 2)])
def test_cli_lease_seconds_that_cannot_be_renewed_is_a_usage_error(seconds, tmp_path, capsys) -> None:
    (tmp_path / "landing").mkdir()
    argv = ["watch", str(tmp_path / "landing"), "--state", "s3://bucket/state", "-k", "2", "--once"]
    with pytest.raises(SystemExit) as stopped:
        main(argv + ["--lease-seconds", seconds])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert "--lease-seconds" in error and seconds in error, error


@pytest.mark.parametrize("seconds", [math.inf, 1e300, MAX_LEASE_SECONDS * 2, math.nan, 0.0])
def test_python_lease_seconds_out_of_range_is_refused_naming_it(seconds, tmp_path) -> None:
    with pytest.raises(ValueError, match="lease_seconds"):
        Lease(ObjectStore(f"file://{tmp_path}/state"), seconds)
    with pytest.raises(ValueError, match="lease_seconds"):
        StoreState(f"file://{tmp_path}/state", lease_seconds=seconds)
    assert not (tmp_path / "state").exists()


def test_the_longest_lease_is_renewed_and_released(tmp_path) -> None:
    lease = Lease(ObjectStore(f"file://{tmp_path}/state"), MAX_LEASE_SECONDS)
    lease.acquire()
    held = json.loads((tmp_path / "state" / "LEASE").read_bytes())
    assert time.time() < held["expires"] <= time.time() + MAX_LEASE_SECONDS
    lease.renew()
    lease.release()
    assert not (tmp_path / "state" / "LEASE").exists()


BAD_LEASES = {
    "for ever": b'{"owner": "x", "host": "h", "pid": 7, "expires": 1e300}',
    "infinite": b'{"owner": "x", "host": "h", "pid": 7, "expires": Infinity}',
    "years ahead": json.dumps({"owner": "x", "expires": time.time() + 10 * 365 * 86400}).encode(),
    "not a time": b'{"owner": "x", "expires": "soon"}',
    "no expiry": b'{"owner": "x"}',
    "not json": b"\xff\xfe\x00garbage",
    "a list": b"[1, 2]",
}


@pytest.mark.parametrize("kind", sorted(BAD_LEASES))
def test_an_unreadable_or_absurd_lease_is_an_error_naming_the_object(kind, tmp_path) -> None:
    store = ObjectStore(f"file://{tmp_path}/state")
    store.put("LEASE", BAD_LEASES[kind])
    with pytest.raises(StateDirectoryBusy) as refused:
        Lease(store, 30).acquire()
    message = str(refused.value)
    assert message.startswith(f"file://{tmp_path}/state/LEASE: ") and "\n" not in message, message
    assert "delete" in message, message  # how to break it
    assert (tmp_path / "state" / "LEASE").read_bytes() == BAD_LEASES[kind]  # left as found


def parquet_bytes() -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"x0": [float(i % 7) for i in range(200)], "x1": [float(i % 5) for i in range(200)]}), sink)
    return sink.getvalue().to_pybytes()


def test_cli_watch_on_a_prefix_locked_for_ever_exits_1_naming_the_lease(s3_bucket) -> None:
    s3 = pafs.FileSystem.from_uri("s3://any")[0]
    with s3.open_output_stream(f"{s3_bucket}/landing/part-0.parquet") as out:
        out.write(parquet_bytes())
    with s3.open_output_stream(f"{s3_bucket}/state/LEASE") as out:
        out.write(BAD_LEASES["for ever"])
    state = f"s3://{s3_bucket}/state/"
    result = subprocess.run(
        [sys.executable, "-m", "streamgmm", "watch", f"s3://{s3_bucket}/landing/", "--state", state]
        + ["-k", "2", "--settle", "0", "--once"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"streamgmm: error: s3://{s3_bucket}/state/LEASE: "), lines
    # Broken as documented (delete the object once no watcher runs), the prefix is usable again.
    s3.delete_file(f"{s3_bucket}/state/LEASE")
    assert watch(f"s3://{s3_bucket}/landing/", state, **OPTIONS).files_consumed == 1
