"""A Dask cluster over an object-store lake: the scheduler, a real process started without any
credentials, never opens the store; the workers, started with them, read it. The
store is moto's S3 server on loopback."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from streamgmm import DataError, ParquetSource, StreamingGaussianMixture
from streamgmm.dask.source import LakeFileRef, dask_source

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def lake(make_lake):
    return make_lake(
        "store_cluster", n_records=6_000, n_components=3, n_features=2, n_files=3, row_group_size=1000, seed=4
    )


def start(module: str, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", module, *args], env=env, stdout=out, stderr=out)


def wait_for(path: Path, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{process.args} did not start: {log.read_text()}")
        time.sleep(0.1)


@pytest.fixture
def cluster(s3_server, tmp_path) -> Iterator[tuple[str, dict[str, str], dict[str, str]]]:
    """A scheduler process without AWS_* variables; yields its scheduler file and the
    environments with and without credentials (workers are started by the tests)."""
    bare = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    # Nothing to find either: no ~/.aws files, no instance metadata to wait for.
    bare |= {
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    with_keys = bare | s3_server.env
    scheduler_file = tmp_path / "scheduler.json"
    args = ["--scheduler-file", str(scheduler_file), "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
    scheduler = start("distributed.cli.dask_scheduler", args, bare, tmp_path / "scheduler.log")
    processes = [scheduler]
    try:
        wait_for(scheduler_file, scheduler, tmp_path / "scheduler.log")
        yield str(scheduler_file), with_keys, bare, processes
    finally:
        # Workers first, while their scheduler still answers: a worker that loses it waits
        # seconds for it before exiting.
        for group in (processes[1:], processes[:1]):
            for process in group:
                process.terminate()
            for process in group:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()


def add_workers(cluster, env: dict[str, str], n: int, tmp_path: Path) -> None:
    scheduler_file, _, _, processes = cluster
    # No nanny: the worker is the process started with ``env``, one process rather than two.
    for i in range(n):
        args = ["--scheduler-file", scheduler_file, "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"]
        args.append("--no-nanny")
        processes.append(start("distributed.cli.dask_worker", args, env, tmp_path / f"worker-{i}.log"))


def test_a_scheduler_without_credentials_fits_an_s3_lake_through_workers_that_have_them(
    upload_to_s3, lake, s3_bucket, cluster, tmp_path
) -> None:
    url = upload_to_s3(lake.path, "lake")
    scheduler_file, with_keys, _, _ = cluster
    add_workers(cluster, with_keys, 2, tmp_path)
    start = StreamingGaussianMixture(3, random_state=0).fit(ParquetSource(url, columns=lake.feature_names))
    init = dict(weights_init=start.weights_, means_init=start.means_, precisions_init=start.precisions_)

    def exact(**fit_options) -> StreamingGaussianMixture:
        model = StreamingGaussianMixture(3, algorithm="batch", tol=0.0, max_iter=3, **init)
        with pytest.warns(Warning):  # max_iter stops it, as asked
            return model.fit(ParquetSource(url, columns=lake.feature_names), **fit_options)

    with distributed.Client(scheduler_file=scheduler_file, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
        on_cluster = exact(client=client)
    np.testing.assert_allclose(on_cluster.means_, exact().means_, rtol=0, atol=1e-10)
    # What the tasks carry: plain references, no filesystem object for the scheduler to unpickle.
    partitions = dask_source(ParquetSource(url, columns=lake.feature_names)).partitions
    assert all(isinstance(p.data, LakeFileRef) and p.data.url.startswith(f"s3://{s3_bucket}/") for p in partitions)
    assert b"S3FileSystem" not in pickle.dumps([p.data for p in partitions])
    assert "s3" not in (tmp_path / "scheduler.log").read_text().lower()  # it never touched the store


def test_workers_that_cannot_reach_the_store_fail_the_fit_naming_the_file(
    upload_to_s3, lake, s3_bucket, cluster, tmp_path
) -> None:
    """moto takes any request, signed or not, so a worker that cannot read is one pointed at a
    closed port: the client's error names the file, and comes without a hang."""
    url = upload_to_s3(lake.path, "lake")
    scheduler_file, with_keys, _, _ = cluster
    add_workers(cluster, with_keys | {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, 1, tmp_path)
    started = time.monotonic()
    with distributed.Client(scheduler_file=scheduler_file, timeout=60) as client:
        client.wait_for_workers(1, timeout=60)
        with pytest.raises((DataError, OSError)) as failed:
            StreamingGaussianMixture(3, algorithm="batch", max_iter=2).fit(
                ParquetSource(url, columns=lake.feature_names), client=client
            )
    assert f"{s3_bucket}/lake/" in str(failed.value)
    assert time.monotonic() - started < 120  # an error, never a hang


def test_assign_on_workers_writes_to_s3_what_the_local_pass_writes(
    upload_to_s3, lake, s3_bucket, cluster, tmp_path
) -> None:
    """Each worker writes its files straight to the store (hidden key, then the final one); the
    client writes _SUCCESS last."""
    from streamgmm import assign

    url = upload_to_s3(lake.path, "lake")
    scheduler_file, with_keys, _, _ = cluster
    add_workers(cluster, with_keys, 2, tmp_path)
    model = StreamingGaussianMixture(3, random_state=0).fit(ParquetSource(url, columns=lake.feature_names))
    local = assign(model, str(lake.path), tmp_path / "local", keep=["id"])
    with distributed.Client(scheduler_file=scheduler_file, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
        remote = assign(model, url, f"s3://{s3_bucket}/scored", keep=["id"], client=client)
    assert sorted((f["output"], f["rows"]) for f in remote.files) == sorted(
        (f["output"], f["rows"]) for f in local.files
    )
    fs, _ = pafs.FileSystem.from_uri(f"s3://{s3_bucket}")
    infos = fs.get_file_info(pafs.FileSelector(f"{s3_bucket}/scored", recursive=True))
    keys = sorted(i.path.split("/scored/", 1)[1] for i in infos if i.type == pafs.FileType.File)
    assert keys == sorted([f["output"] for f in local.files] + ["_SUCCESS"])
    for entry in local.files:
        written = pq.read_table(f"{s3_bucket}/scored/{entry['output']}", filesystem=fs)
        assert written.equals(pq.read_table(tmp_path / "local" / entry["output"]))
