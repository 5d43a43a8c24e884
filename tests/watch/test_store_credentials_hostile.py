"""The watcher given object-store credentials on its URLs (``s3://KEY:SECRET@bucket/...``, as
``fit`` and ``assign`` take them), on moto's S3 server (a real process on loopback).

Oracles: the same files watched with the credentials in the standard variables instead (the
same model, bit for bit); the secret searched for in every output and every state object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from streamgmm.watch.blob_store import ObjectStore
from streamgmm.watch.store_landing import StoreLanding
from streamgmm.watch.store_state import StoreState

KEY, SECRET = "streamgmm-url-key", "s3cr3t/never+echoed"
QUOTED = "s3cr3t%2Fnever%2Bechoed"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def parquet_bytes(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(0, 1, (300, 2)), rng.normal(6, 1, (300, 2))])
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"x0": X[:, 0], "x1": X[:, 1]}), sink, row_group_size=200)
    return sink.getvalue().to_pybytes()


def watch_cli(landing: str, state: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streamgmm", "watch", landing, "--state", state, "-k", "2", "--columns", "x0,x1"]
        + ["--batch-size", "200", "--settle", "0", "--once", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )


def test_cli_watch_takes_credentials_on_its_urls_and_never_shows_them(s3_bucket) -> None:
    s3 = pafs.FileSystem.from_uri("s3://any")[0]  # the fixture's endpoint and credential variables
    for i in range(2):
        with s3.open_output_stream(f"{s3_bucket}/landing/part-{i}.parquet") as out:
            out.write(parquet_bytes(i))
    plain = dict(os.environ)
    no_keys = {k: v for k, v in plain.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}

    oracle = watch_cli(f"s3://{s3_bucket}/landing/", f"s3://{s3_bucket}/oracle/", plain)
    assert oracle.returncode == 0, oracle.stderr
    on_url = f"s3://{KEY}:{QUOTED}@{s3_bucket}"
    result = watch_cli(f"{on_url}/landing/", f"{on_url}/state/", no_keys)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["files_consumed"] == 2 and summary["state"] == f"s3://{s3_bucket}/state"
    for shown in (result.stdout, result.stderr):
        assert SECRET not in shown and QUOTED not in shown and KEY not in shown

    a, b = StoreState(f"s3://{s3_bucket}/state/").load(), StoreState(f"s3://{s3_bucket}/oracle/").load()
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_array_equal(getattr(a.model, name), getattr(b.model, name))
    assert [e["path"] for e in a.ledger] == [e["path"] for e in b.ledger] == ["part-0.parquet", "part-1.parquet"]
    infos = s3.get_file_info(pafs.FileSelector(f"{s3_bucket}/state", recursive=True))
    for info in infos:
        if info.type == pafs.FileType.File:
            data = s3.open_input_file(info.path).read()
            assert SECRET.encode() not in data and QUOTED.encode() not in data and KEY.encode() not in data, info.path


def test_names_and_messages_of_a_url_with_credentials_hold_no_secret(s3_bucket) -> None:
    on_url = f"s3://{KEY}:{QUOTED}@{s3_bucket}"
    landing = StoreLanding(f"{on_url}/landing/")
    assert str(landing) == f"s3://{s3_bucket}/landing/" and landing.base == f"s3://{s3_bucket}/landing"
    store = ObjectStore(f"{on_url}/state/")
    assert store.base == f"s3://{s3_bucket}/state" and store.name_url("LEASE") == f"s3://{s3_bucket}/state/LEASE"
    assert store.atomic  # the conditional writes' own client took the URL's credentials
    version = store.put_if("probe", b"1", None)
    assert store.get("probe") == (b"1", version)


def test_operations_guide_says_the_cli_takes_an_object_store_state() -> None:
    text = " ".join(DOCS.read_text().split())
    assert "is refused by the CLI" not in text
    assert "--state s3://bucket/state/" in text
