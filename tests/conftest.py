"""Fixtures shared by every test folder."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamgmm.datasets.synthetic_lake import LakeInfo, write_lake


@pytest.fixture(scope="session")
def make_lake(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., LakeInfo]:
    """A factory of synthetic Parquet lakes: ``make_lake(name, **kwargs)`` writes
    ``write_lake(<new temporary directory named after name>/lake, **kwargs)`` and returns its
    :class:`~streamgmm.datasets.synthetic_lake.LakeInfo`.

    Each test module keeps its own ``lake`` fixture (their sizes, layouts and seeds differ), written
    through this factory; it is session-scoped so that module-scoped fixtures can use it.
    """

    def make(name: str, **kwargs) -> LakeInfo:
        return write_lake(tmp_path_factory.mktemp(name) / "lake", **kwargs)

    return make


@dataclass(frozen=True)
class S3Server:
    """An S3-compatible server on loopback (moto's, a subprocess) and the standard environment
    variables that point clients at it."""

    endpoint: str
    env: dict[str, str]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server started as a real process on 127.0.0.1 (a free port), stopped at the end."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's S3 server did not start: {log.read_text()}") from None
                time.sleep(0.1)
        env = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "streamgmm-test",
            "AWS_SECRET_ACCESS_KEY": "streamgmm-test-secret",
            "AWS_REGION": "us-east-1",
        }
        yield S3Server(endpoint, env)
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A new empty bucket on the test server, with the standard credential variables set for
    this test (and its subprocesses); yields the bucket's name."""
    import pyarrow.fs as pafs

    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    bucket = f"bucket-{uuid.uuid4().hex[:12]}"
    s3 = pafs.S3FileSystem(
        endpoint_override=s3_server.endpoint,
        access_key="streamgmm-test",
        secret_key="streamgmm-test-secret",
        region="us-east-1",
        allow_bucket_creation=True,
    )
    s3.create_dir(bucket)
    yield bucket


@pytest.fixture
def upload_to_s3(s3_bucket: str) -> Callable[[Path, str], str]:
    """``upload(folder, prefix)`` copies a local folder (a lake) to ``s3://<bucket>/<prefix>/``,
    keeping relative paths, and returns that URL."""
    import pyarrow.fs as pafs

    def upload(folder: Path, prefix: str) -> str:
        s3, _ = pafs.FileSystem.from_uri(f"s3://{s3_bucket}")  # from AWS_ENDPOINT_URL and the keys
        local = pafs.LocalFileSystem()
        for info in local.get_file_info(pafs.FileSelector(str(folder), recursive=True)):
            if info.type == pafs.FileType.File:
                relative = Path(info.path).relative_to(folder).as_posix()
                target = f"{s3_bucket}/{prefix}/{relative}"
                pafs.copy_files(info.path, target, source_filesystem=local, destination_filesystem=s3)
        return f"s3://{s3_bucket}/{prefix}/"

    return upload
