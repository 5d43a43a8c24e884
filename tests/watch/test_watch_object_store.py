"""The watcher with its landing prefix and its state on an S3-compatible server (moto's, a real
process on loopback).

Oracles: the same files watched in a local directory into a local state directory, and an
uninterrupted stream of ``partial_fit`` calls over the files in order. Crashes are real: the
watcher runs in a subprocess killed with SIGKILL by its ``on_step`` hook.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from shared_helpers import run_streamgmm_here

from streamgmm import ModelFileError, ParquetSource, StreamingGaussianMixture
from streamgmm.datasets.mixtures import random_mixture, sample_mixture
from streamgmm.watch.blob_store import Conflict, ObjectStore
from streamgmm.watch.checkpoint import StateDirectory, StateDirectoryBusy
from streamgmm.watch.store_landing import StoreLanding
from streamgmm.watch.store_state import StoreState, is_store_state, store_state_summary
from streamgmm.watch.watcher import Watcher, watch

K = 2
FEATURES = ["x0", "x1"]
BATCH = 250
PER_FILE = 600
PARAMETERS = ("weights_", "means_", "covariances_", "precisions_cholesky_")
OPTIONS = {"n_components": K, "columns": FEATURES, "batch_size": BATCH, "settle": 0, "once": True}


@pytest.fixture(scope="module")
def truth():
    return random_mixture(K, 2, separation=6.0, random_state=3)


def parquet_bytes(X: np.ndarray) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({f"x{j}": X[:, j] for j in range(X.shape[1])}), sink, row_group_size=400)
    return sink.getvalue().to_pybytes()


def files_of(truth, n: int, seed: int = 0) -> dict[str, bytes]:
    return {
        f"part-{i:03d}.parquet": parquet_bytes(sample_mixture(truth, PER_FILE, random_state=seed + i)[0])
        for i in range(n)
    }


def s3() -> pafs.FileSystem:
    return pafs.FileSystem.from_uri("s3://any")[0]  # from AWS_ENDPOINT_URL and the credential variables


def upload(bucket: str, prefix: str, files: dict[str, bytes]) -> str:
    fs = s3()
    for name, data in files.items():
        with fs.open_output_stream(f"{bucket}/{prefix}/{name}") as out:
            out.write(data)
    return f"s3://{bucket}/{prefix}/"


def write_local(directory: Path, files: dict[str, bytes]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (name, data) in enumerate(files.items()):
        path = directory / name
        path.write_bytes(data)
        os.utime(path, (1_700_000_000 + i, 1_700_000_000 + i))
        paths.append(path)
    return paths


def oracle(paths: list[Path]) -> StreamingGaussianMixture:
    model = StreamingGaussianMixture(K, random_state=0, batch_size=BATCH, shuffle=False)
    for path in paths:
        model.partial_fit(ParquetSource(path, columns=FEATURES))
    return model


def assert_same_model(a: StreamingGaussianMixture, b: StreamingGaussianMixture) -> None:
    for name in PARAMETERS:
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12, atol=1e-12, err_msg=name)
    assert (a.n_steps_, a.records_seen_, a.n_iter_) == (b.n_steps_, b.records_seen_, b.n_iter_)


def keys(bucket: str, prefix: str) -> list[str]:
    selector = pafs.FileSelector(f"{bucket}/{prefix}", recursive=True, allow_not_found=True)
    infos = s3().get_file_info(selector)
    return sorted(i.path[len(bucket) + len(prefix) + 2 :] for i in infos if i.type == pafs.FileType.File)


def test_s3_landing_is_consumed_once_into_the_model_of_the_same_files_watched_locally(
    truth, s3_bucket, tmp_path
) -> None:
    files = files_of(truth, 3)
    url = upload(s3_bucket, "landing", files)
    paths = write_local(tmp_path / "landing", files)

    remote = watch(url, tmp_path / "state", **OPTIONS)
    local = watch(tmp_path / "landing", tmp_path / "local-state", **OPTIONS)
    assert (remote.files_consumed, remote.records_used) == (local.files_consumed, local.records_used) == (3, 1800)
    model = StreamingGaussianMixture.load(tmp_path / "state" / "current.model")
    assert_same_model(model, StreamingGaussianMixture.load(tmp_path / "local-state" / "current.model"))
    assert_same_model(model, oracle(paths))

    ledger = StateDirectory(tmp_path / "state").load().ledger
    assert [e["path"] for e in ledger] == list(files)
    assert [e["size"] for e in ledger] == [len(data) for data in files.values()]
    assert all(e["etag"] for e in ledger)  # s3fs is in the test extra: objects are keyed by ETag too
    assert [e["sha256"] for e in ledger] == [
        e["sha256"] for e in StateDirectory(tmp_path / "local-state").load().ledger
    ]

    again = watch(url, tmp_path / "state", **OPTIONS)
    assert (again.files_consumed, again.sequence) == (0, 3)


def test_an_object_replaced_under_its_key_is_new_data_and_the_same_bytes_again_a_duplicate(
    truth, s3_bucket, tmp_path
) -> None:
    first, second = files_of(truth, 1, seed=0), files_of(truth, 1, seed=50)
    url = upload(s3_bucket, "landing", first)
    watch(url, tmp_path / "state", **OPTIONS)
    time.sleep(1.1)  # S3 modification times are in seconds: the replacement's differs
    upload(s3_bucket, "landing", second)
    replaced = watch(url, tmp_path / "state", **OPTIONS)
    time.sleep(1.1)
    upload(s3_bucket, "landing", first)
    again = watch(url, tmp_path / "state", **OPTIONS)

    assert (replaced.files_consumed, again.files_consumed, again.files_duplicate) == (1, 0, 1)
    ledger = StateDirectory(tmp_path / "state").load().ledger
    assert [e["status"] for e in ledger] == ["consumed", "consumed", "duplicate"]
    assert ledger[0]["etag"] != ledger[1]["etag"] and ledger[0]["etag"] == ledger[2]["etag"]
    assert ledger[2]["reason"] == "same content as part-000.parquet (ledger entry 1)"
    local = write_local(tmp_path / "a", first) + write_local(tmp_path / "b", second)
    assert_same_model(StreamingGaussianMixture.load(tmp_path / "state" / "current.model"), oracle(local))


def test_bad_objects_are_quarantined_in_the_state_and_left_where_they_are(truth, s3_bucket, tmp_path) -> None:
    files = {"a-bad.parquet": b"not parquet at all", **files_of(truth, 1), "_SUCCESS": b"", ".hidden": b"x"}
    url = upload(s3_bucket, "landing", files)
    state = f"s3://{s3_bucket}/state/"
    summary = watch(url, state, **OPTIONS)
    assert (summary.files_consumed, summary.files_quarantined) == (1, 1)
    ledger = StoreState(state).load().ledger
    bad = next(e for e in ledger if e["status"] == "quarantined")
    assert bad["path"] == "a-bad.parquet"
    assert bad["reason"].startswith(f"s3://{s3_bucket}/landing/a-bad.parquet: not a Parquet file, or truncated")
    assert "a-bad.parquet" in keys(s3_bucket, "landing")  # the landing prefix is not the watcher's
    assert [k for k in keys(s3_bucket, "state") if k.startswith("quarantine/")] == [
        f"quarantine/a-bad.parquet.{bad['sha256'][:12]}.json"
    ]


def test_s3_state_commits_a_pointer_to_new_objects_and_equals_a_local_state(truth, s3_bucket, tmp_path) -> None:
    files = files_of(truth, 4)
    url = upload(s3_bucket, "landing", files)
    state = f"s3://{s3_bucket}/state/"
    summary = watch(url, state, keep_models=2, **OPTIONS)
    assert (summary.files_consumed, summary.sequence) == (4, 4)
    assert ObjectStore(state).atomic  # botocore is there: conditional writes checked by the server

    checkpoint = StoreState(state).load()
    assert checkpoint.sequence == 4 and [e["path"] for e in checkpoint.ledger] == list(files)
    assert_same_model(checkpoint.model, oracle(write_local(tmp_path / "landing", files)))
    names = keys(s3_bucket, "state")
    pointer = json.loads(s3().open_input_file(f"{s3_bucket}/state/CURRENT").read())
    assert pointer["sequence"] == 4 and pointer["checkpoint"] in names
    assert "LEASE" not in names  # released on exit
    summary, model = store_state_summary(state)
    assert (summary["files_consumed"], summary["records_used"], summary["model"]) == (
        4,
        4 * PER_FILE,
        f"s3://{s3_bucket}/state/{pointer['checkpoint']}",
    )
    assert summary["models"] == [n.split("/")[1] for n in names if n.startswith("checkpoints/")]
    assert is_store_state(state) and not is_store_state(f"s3://{s3_bucket}/landing/")
    # keep_models=2: the last two checkpoints and their ledgers, nothing else
    assert [n.split("/")[0] + "/" + n.split("/")[1][:8] for n in names if "/" in n] == [
        "checkpoints/00000003",
        "checkpoints/00000004",
        "ledgers/00000003",
        "ledgers/00000004",
    ]


# The watcher in a process of its own whose on_step hook kills it (a real kill -9) at POINT of
# ledger entry N; lease of LEASE seconds.
CRASHING = """
import os, signal, sys
from streamgmm.watch.watcher import Watcher, watch
point, number = sys.argv[1].rsplit(":", 1)

def kill_at(at, sequence):
    if (at, sequence) == (point, int(number)):
        os.kill(os.getpid(), signal.SIGKILL)

watch(sys.argv[2], sys.argv[3], n_components=2, columns=["x0", "x1"], batch_size=250, settle=0, once=True,
      lease_seconds=float(sys.argv[4]), on_step=kill_at)
"""


def expire_lease(bucket: str) -> None:
    """Time passing for a killed watcher's lease: its expiry moved into the past."""
    fs = s3()
    holder = json.loads(fs.open_input_file(f"{bucket}/state/LEASE").read())
    with fs.open_output_stream(f"{bucket}/state/LEASE") as out:
        out.write(json.dumps({**holder, "expires": time.time() - 1}).encode())


@pytest.mark.parametrize("point", ["before_rename", "mid_file", "after_rename"])
def test_killed_before_the_pointer_leaves_the_last_state_and_the_next_run_finishes(
    truth, s3_bucket, tmp_path, point
) -> None:
    files = files_of(truth, 3)
    url = upload(s3_bucket, "landing", files)
    state = f"s3://{s3_bucket}/state/"
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING, f"{point}:2", url, state, "60"], capture_output=True, text=True, timeout=120
    )
    assert crashed.returncode == -9, crashed.stderr

    checkpoint = StoreState(state).load()  # the previous commit, whole
    committed = 2 if point == "after_rename" else 1
    assert checkpoint.sequence == committed and len(checkpoint.ledger) == committed
    paths = write_local(tmp_path / "landing", files)
    assert_same_model(checkpoint.model, oracle(paths[:committed]))
    if point == "before_rename":  # the objects of the cut commit are there, referenced by nothing
        assert len([k for k in keys(s3_bucket, "state") if k.startswith("checkpoints/")]) == 2

    with pytest.raises(StateDirectoryBusy, match=r"is in use by another watcher \(pid \d+ on .*, lease until"):
        watch(url, state, **OPTIONS)  # the killed watcher's lease is still live
    expire_lease(s3_bucket)
    summary = watch(url, state, **OPTIONS)  # expired: taken over
    assert (summary.files_consumed, summary.sequence) == (3 - committed, 3)
    final = StoreState(state).load()
    assert [e["path"] for e in final.ledger] == list(files)
    assert_same_model(final.model, oracle(paths))
    assert len([k for k in keys(s3_bucket, "state") if k.startswith("checkpoints/")]) == 3  # none left over


def test_a_second_watcher_is_refused_while_the_lease_is_live(truth, s3_bucket) -> None:
    url = upload(s3_bucket, "landing", files_of(truth, 1))
    state = f"s3://{s3_bucket}/state/"
    holder = StoreState(state, lease_seconds=30)
    with holder.locked():
        with pytest.raises(StateDirectoryBusy) as refused:
            watch(url, state, **OPTIONS)
        assert str(refused.value).startswith(f"s3://{s3_bucket}/state is in use by another watcher (pid {os.getpid()}")
        holder.lease.renew()
    assert watch(url, state, **OPTIONS).files_consumed == 1  # released on exit


def test_a_watcher_whose_lease_was_taken_over_cannot_commit(truth, s3_bucket) -> None:
    state = f"s3://{s3_bucket}/state/"
    store = ObjectStore(state)
    version = store.put_if("x", b"1", None)
    with pytest.raises(Conflict):
        store.put_if("x", b"2", None)  # If-None-Match: * on an existing object
    with pytest.raises(Conflict):
        store.put_if("x", b"2", "0" * 32)  # If-Match on another version
    assert store.put_if("x", b"3", version) != version

    stale = StoreState(state, lease_seconds=30)
    with stale.locked():
        store.put("LEASE", b'{"owner": "someone else", "expires": 1e12}')  # taken over meanwhile
        with pytest.raises(StateDirectoryBusy, match="lease was taken over"):
            stale.lease.renew()


def test_a_damaged_pointer_or_checkpoint_is_a_one_line_error_naming_the_object(truth, s3_bucket) -> None:
    url = upload(s3_bucket, "landing", files_of(truth, 2))
    state = f"s3://{s3_bucket}/state/"
    watch(url, state, **OPTIONS)
    pointer = json.loads(s3().open_input_file(f"{s3_bucket}/state/CURRENT").read())
    checkpoint = f"{s3_bucket}/state/{pointer['checkpoint']}"
    good = s3().open_input_file(checkpoint).read()

    with s3().open_output_stream(checkpoint) as out:
        out.write(good[:-10])
    with pytest.raises(ModelFileError) as damaged:
        watch(url, state, **OPTIONS)
    assert str(damaged.value) == f"s3://{checkpoint}: not the bytes s3://{s3_bucket}/state/CURRENT committed (damaged?)"

    with s3().open_output_stream(f"{s3_bucket}/state/CURRENT") as out:
        out.write(b"{not json")
    with pytest.raises(ModelFileError) as damaged:
        StoreState(state).load()
    message = str(damaged.value)
    assert (
        message.startswith(f"s3://{s3_bucket}/state/CURRENT: not a watcher pointer, or damaged (")
        and "\n" not in message
    )


def test_cli_watch_of_an_s3_landing(truth, s3_bucket, tmp_path) -> None:
    files = files_of(truth, 2)
    url = upload(s3_bucket, "landing", files)
    result = run_streamgmm_here(
        *["watch", url, "--state", tmp_path / "state", "-k", K, "--columns", ",".join(FEATURES)],
        *["--batch-size", BATCH, "--settle", "0", "--once", "--json"],
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["files_consumed"] == 2
    model = StreamingGaussianMixture.load(tmp_path / "state" / "current.model")
    assert_same_model(model, oracle(write_local(tmp_path / "landing", files)))


def test_cli_watch_with_its_state_on_s3_and_info_of_that_state(truth, s3_bucket, tmp_path) -> None:
    files = files_of(truth, 2)
    url, state = upload(s3_bucket, "landing", files), f"s3://{s3_bucket}/state/"
    command = ["watch", url, "--state", state, "-k", K, "--lease-seconds", "30"]
    options = ["--columns", ",".join(FEATURES), "--batch-size", BATCH, "--settle", "0", "--once", "--json"]
    result = run_streamgmm_here(*command, *options)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["files_consumed"] == 2 and summary["model"].startswith(f"{state}checkpoints/")
    assert_same_model(StoreState(state).load().model, oracle(write_local(tmp_path / "landing", files)))
    info = run_streamgmm_here("info", state, "--json")
    assert info.returncode == 0, info.stderr
    described = json.loads(info.stdout)
    assert described["kind"] == "watch state" and described["files_consumed"] == 2
    assert described["model"] == summary["model"]


def test_a_commit_after_another_watcher_moved_the_pointer_is_refused(truth, s3_bucket) -> None:
    url = upload(s3_bucket, "landing", files_of(truth, 1))
    state = f"s3://{s3_bucket}/state/"
    watch(url, state, **OPTIONS)
    stale, other = StoreState(state), StoreState(state)
    checkpoint, _ = stale.load(), other.load()
    # Both past their lease checks, as two watchers could be where writes are not conditional.
    stale.lease.renew = other.lease.renew = lambda: None
    other.commit(checkpoint.model, checkpoint.ledger + [{"path": "x", "status": "duplicate"}], {})
    with pytest.raises(StateDirectoryBusy, match=r"CURRENT was changed by another watcher since this one read it"):
        stale.commit(checkpoint.model, checkpoint.ledger + [{"path": "y", "status": "duplicate"}], {})
    assert [e["path"] for e in StoreState(state).load().ledger] == ["part-000.parquet", "x"]


def test_a_lost_pointer_is_refused_not_taken_for_a_new_start(truth, s3_bucket) -> None:
    url = upload(s3_bucket, "landing", files_of(truth, 2))
    state = f"s3://{s3_bucket}/state/"
    watch(url, state, **OPTIONS)
    s3().delete_file(f"{s3_bucket}/state/CURRENT")
    with pytest.raises(
        ModelFileError,
        match=rf"^s3://{s3_bucket}/state/CURRENT is missing but s3://{s3_bucket}/state/checkpoints/00000002-",
    ):
        watch(url, state, **OPTIONS)


def test_endpoint_and_scheme_on_the_url_instead_of_the_environment(truth, s3_bucket, s3_server, monkeypatch) -> None:
    url = upload(s3_bucket, "landing", files_of(truth, 1))
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    query = f"?endpoint_override={s3_server.endpoint.removeprefix('http://')}&scheme=http"
    summary = watch(url + query, f"s3://{s3_bucket}/state/{query}", **OPTIONS)
    assert summary.files_consumed == 1 and summary.state == f"s3://{s3_bucket}/state"
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    assert StoreState(f"s3://{s3_bucket}/state/").load().ledger[0]["etag"]


def test_an_object_replaced_while_read_is_learnt_once_as_the_new_bytes(truth, s3_bucket, tmp_path) -> None:
    first, second = files_of(truth, 1, seed=0), files_of(truth, 1, seed=70)
    url = upload(s3_bucket, "landing", first)
    pending = [(s3_bucket, "landing", second)]

    def replace_while_read(point: str, sequence: int) -> None:
        # A producer's upload under the same key while the watcher learns from the object.
        if point == "mid_file" and pending:
            upload(*pending.pop())

    options = {k: v for k, v in OPTIONS.items() if k != "once"}
    watcher = Watcher(url, tmp_path / "state", **options, on_step=replace_while_read)
    watcher.run(once=True)
    ledger = StateDirectory(tmp_path / "state").load().ledger
    assert [(e["status"], e["sha256"]) for e in ledger] == [
        ("consumed", hashlib.sha256(second["part-000.parquet"]).hexdigest())
    ]
    assert_same_model(
        StreamingGaussianMixture.load(tmp_path / "state" / "current.model"),
        oracle(write_local(tmp_path / "new", second)),
    )


def test_a_replacement_of_the_same_size_within_the_same_second_is_told_by_its_etag(truth, s3_bucket) -> None:
    first, second = files_of(truth, 1, seed=0), files_of(truth, 1, seed=70)
    assert [len(v) for v in first.values()] == [len(v) for v in second.values()]
    landing = StoreLanding(f"s3://{s3_bucket}/landing/")
    for _ in range(20):  # until both uploads fall within one second (S3 times are whole seconds)
        upload(s3_bucket, "landing", first)
        [file] = landing.files()[0]
        held = landing.hold(file)
        upload(s3_bucket, "landing", second)
        now = landing.look(file)
        if now[:2] == held.before[:2]:
            break
    assert now[:2] == held.before[:2], "never two uploads within one second"
    assert now[2] != held.before[2] and not held.unchanged()
    assert held.sha256() == hashlib.sha256(first["part-000.parquet"]).hexdigest()


def test_a_running_watcher_renews_its_lease_and_a_dead_ones_expires(truth, s3_bucket) -> None:
    url = upload(s3_bucket, "landing", files_of(truth, 1))
    state = f"s3://{s3_bucket}/state/"
    holder = StoreState(state, lease_seconds=3.0)  # seconds, not less: the machine may be busy
    with holder.locked():
        time.sleep(4.0)  # past the first expiry: renewed meanwhile by the holder's thread
        with pytest.raises(StateDirectoryBusy, match="is in use by another watcher"):
            watch(url, state, **OPTIONS)
    # A watcher that died holding a lease: refused until its expiry, by the clock.
    dead = {"owner": "dead", "host": "elsewhere", "pid": 1, "expires": time.time() + 6.0}
    with s3().open_output_stream(f"{s3_bucket}/state/LEASE") as out:
        out.write(json.dumps(dead).encode())
    with pytest.raises(StateDirectoryBusy, match=r"\(pid 1 on elsewhere, lease until"):
        watch(url, state, **OPTIONS)
    time.sleep(max(0.0, dead["expires"] - time.time()) + 0.1)
    assert watch(url, state, **OPTIONS).files_consumed == 1


def test_without_s3fs_objects_are_keyed_by_size_and_time(truth, s3_bucket, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "s3fs", None)  # import s3fs fails
    files = files_of(truth, 2)
    url = upload(s3_bucket, "landing", files)
    assert not StoreLanding(url).keys_etags
    assert watch(url, tmp_path / "state", **OPTIONS).files_consumed == 2
    ledger = StateDirectory(tmp_path / "state").load().ledger
    assert ["etag" in e for e in ledger] == [False, False]
    assert_same_model(
        StreamingGaussianMixture.load(tmp_path / "state" / "current.model"),
        oracle(write_local(tmp_path / "landing", files)),
    )


def test_conditional_writes_without_the_store_checking_them(tmp_path) -> None:
    store = ObjectStore(f"file://{tmp_path}/state")  # no botocore client: read, compare, write
    assert not store.atomic
    version = store.put_if("x", b"1", None)
    with pytest.raises(Conflict):
        store.put_if("x", b"2", None)
    with pytest.raises(Conflict):
        store.put_if("x", b"2", "0" * 64)
    assert store.put_if("x", b"3", version) == hashlib.sha256(b"3").hexdigest()
    assert store.get("x") == (b"3", hashlib.sha256(b"3").hexdigest())
