"""``streamgmm watch``: files consumed exactly once into a model that survives kill -9.

The oracle for every model is an uninterrupted stream of ``partial_fit`` calls over the same
files in the same order, in this process. Crashes are real: the watcher runs as a subprocess and
is killed with SIGKILL, by its fault-injection hook at named points or from outside at random
times, then restarted.
"""

from __future__ import annotations

import datetime
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
import pytest
from shared_helpers import run_streamgmm_here

from streamgmm import ModelFileError, ParquetSource, StreamingGaussianMixture
from streamgmm.datasets.mixtures import match_components, random_mixture, sample_mixture
from streamgmm.watch.checkpoint import StateDirectory, state_summary
from streamgmm.watch.watcher import watch

K = 3
FEATURES = ["x0", "x1"]
BATCH = 500
N_FILES = 6
PER_FILE = 2000
PARAMETERS = ("weights_", "means_", "covariances_", "precisions_cholesky_")
BASE_TIME = 1_700_000_000


def write_file(path: Path, X: np.ndarray, mtime: float, **extra: pa.Array) -> Path:
    """A Parquet file of features x0.. (plus ``extra`` columns) written under a hidden name and
    renamed, with a chosen modification time (the watcher's order)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.writing")
    columns = {f"x{j}": X[:, j] for j in range(X.shape[1])} | extra
    pq.write_table(pa.table(columns), tmp, row_group_size=700)
    os.utime(tmp, (mtime, mtime))
    os.replace(tmp, path)
    return path


def landing_of(directory: Path, params, n_files: int = N_FILES, seed: int = 0, start: int = 0) -> list[Path]:
    files = []
    for i in range(n_files):
        X, _ = sample_mixture(params, PER_FILE, random_state=seed * 1000 + i)
        files.append(write_file(directory / f"part-{start + i:03d}.parquet", X, BASE_TIME + start + i))
    return files


def oracle(files: list[Path], step_floor: float = 0.0, seed: int = 0) -> StreamingGaussianMixture:
    """The model an uninterrupted stream of partial_fit calls over ``files`` gives."""
    model = StreamingGaussianMixture(K, random_state=seed, batch_size=BATCH, step_floor=step_floor, shuffle=False)
    for path in files:
        model.partial_fit(ParquetSource(path, columns=FEATURES))
    return model


def assert_same_model(a: StreamingGaussianMixture, b: StreamingGaussianMixture) -> None:
    for name in PARAMETERS:
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12, atol=1e-12, err_msg=name)
    assert (a.n_steps_, a.records_seen_, a.n_iter_) == (b.n_steps_, b.records_seen_, b.n_iter_)
    np.testing.assert_allclose(a.lower_bounds_, b.lower_bounds_, rtol=1e-12)
    # The fit history is continued across files, checkpoints and restarts as by partial_fit.
    ta, tb = a.fit_history_, b.fit_history_
    assert (ta.n_batches, ta.stride, ta.records.tolist(), ta.reseeded) == (
        tb.n_batches,
        tb.stride,
        tb.records.tolist(),
        tb.reseeded,
    )
    np.testing.assert_allclose(ta.mean_log_likelihood, tb.mean_log_likelihood, rtol=1e-12)
    np.testing.assert_allclose(ta.step_size, tb.step_size, rtol=1e-12)


# ``streamgmm watch`` with the watcher's on_step hook killing the process (a real kill -9) at
# POINT of the file whose ledger entry is number N: the crash points live here, not in the package.
CRASHING_WATCH = """
import os, signal, sys
from streamgmm.cli.command import main
from streamgmm.watch import watcher
point, sequence = sys.argv[1].rsplit(":", 1)

def kill_at(at, number):
    if (at, number) == (point, int(sequence)):
        os.kill(os.getpid(), signal.SIGKILL)

plain = watcher.Watcher.__init__
watcher.Watcher.__init__ = lambda self, *args, **kwargs: plain(self, *args, on_step=kill_at, **kwargs)
sys.exit(main(sys.argv[2:]))
"""


def watch_cli(landing: Path, state: Path, *args: str, crash: str | None = None, **popen) -> subprocess.Popen:
    """``streamgmm watch`` in a process of its own; ``crash="POINT:N"`` kills it there."""
    command = [sys.executable, "-c", CRASHING_WATCH, crash] if crash else [sys.executable, "-m", "streamgmm"]
    argv = [
        *command,
        "watch",
        str(landing),
        "--state",
        str(state),
        "-k",
        str(K),
        "--columns",
        ",".join(FEATURES),
        "--batch-size",
        str(BATCH),
        "--settle",
        "0",
        "--interval",
        "0.05",
        *args,
    ]
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, **popen
    )


def finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def ledger(state: Path) -> list[dict]:
    checkpoint = StateDirectory(state).load()
    return [] if checkpoint is None else checkpoint.ledger


def temporaries(directory: Path) -> list[str]:
    return [p.name for p in directory.rglob(".*") if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def truth():
    return random_mixture(K, 2, random_state=5)


@pytest.fixture(scope="module")
def landing(tmp_path_factory, truth) -> tuple[Path, list[Path]]:
    directory = tmp_path_factory.mktemp("watch") / "landing"
    files = landing_of(directory, truth)
    (directory / "_SUCCESS").write_text("not data")  # ignored: leading underscore
    write_file(directory / ".hidden.parquet", np.ones((10, 2)), BASE_TIME)  # ignored: leading dot
    return directory, files


@pytest.fixture(scope="module")
def reference(landing, tmp_path_factory) -> tuple[Path, Path]:
    """An uninterrupted CLI run with --assign-out: (state, output directory)."""
    directory, _ = landing
    work = tmp_path_factory.mktemp("reference")
    code, out, err = finish(watch_cli(directory, work / "state", "--once", "--json", "--assign-out", str(work / "out")))
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["files_consumed"], summary["records_used"], summary["stopped_by"]) == (
        N_FILES,
        N_FILES * PER_FILE,
        None,
    )
    return work / "state", work / "out"


def test_uninterrupted_run_equals_partial_fit_over_the_files_in_order(landing, reference) -> None:
    _, files = landing
    state, out = reference
    assert_same_model(StreamingGaussianMixture.load(state / "current.model"), oracle(files))
    entries = ledger(state)
    assert [e["path"] for e in entries] == [f.name for f in files]
    assert all(e["status"] == "consumed" and e["records_used"] == PER_FILE for e in entries)
    # Each output holds its file's responsibilities under the model after that file.
    for i, path in enumerate(files):
        table = pq.read_table(out / path.name)
        after = oracle(files[: i + 1])
        X = np.column_stack([pq.read_table(path)[name].to_numpy() for name in FEATURES])
        np.testing.assert_allclose(table["log_likelihood"].to_numpy(), after.score_samples(X), rtol=1e-12)
    assert temporaries(state) == temporaries(out) == []


def test_killed_at_every_crash_point_then_restarted_ends_with_the_uninterrupted_model(
    landing, reference, tmp_path
) -> None:
    directory, files = landing
    state, out = tmp_path / "state", tmp_path / "out"
    # One run per crash point, each restart resuming the previous one's checkpoint.
    crashes = [("mid_file", 1), ("before_temp", 2), ("before_rename", 3), ("mid_file", 4), ("after_rename", 4)]
    for point, sequence in crashes:
        code, _, err = finish(
            watch_cli(
                directory, state, "--once", "--assign-out", str(out), "--keep-models", "3", crash=f"{point}:{sequence}"
            )
        )
        assert code == -signal.SIGKILL, err
        committed = len(ledger(state))
        assert committed == (sequence if point == "after_rename" else sequence - 1), (point, sequence)
        if point == "before_rename":
            # Killed between the fsynced temporary file and its rename: the temporary is there.
            assert len(temporaries(state)) == 1
    code, out_text, err = finish(
        watch_cli(directory, state, "--once", "--json", "--assign-out", str(out), "--keep-models", "3")
    )
    assert code == 0, err
    assert json.loads(out_text)["files_consumed"] == N_FILES - 4  # the rest, after the last crash

    ref_state, ref_out = reference
    assert_same_model(
        StreamingGaussianMixture.load(state / "current.model"),
        StreamingGaussianMixture.load(ref_state / "current.model"),
    )
    entries = ledger(state)
    assert [e["path"] for e in entries] == [f.name for f in files]  # each exactly once, in order
    assert [e["sha256"] for e in entries] == [e["sha256"] for e in ledger(ref_state)]
    for path in files:
        assert pq.read_table(out / path.name).equals(pq.read_table(ref_out / path.name))
    assert temporaries(state) == temporaries(out) == []
    # Entries appended by the commits killed before their rename were cut on restart.
    assert len((state / "ledger.jsonl").read_text().splitlines()) == N_FILES
    assert sorted(p.name for p in (state / "models").iterdir()) == [f"{n:08d}.model" for n in (4, 5, 6)]

    info = run_streamgmm_here("info", state, "--json")
    summary = json.loads(info.stdout)
    assert summary["kind"] == "watch state"
    assert (summary["files_consumed"], summary["records_used"], summary["records_skipped"]) == (
        N_FILES,
        N_FILES * PER_FILE,
        0,
    )
    assert summary["last_update"] and len(summary["recent"]) == N_FILES and summary["means"]


def assert_exactly_the_same_model(a: StreamingGaussianMixture, b: StreamingGaussianMixture) -> None:
    """Bit for bit: the parameters, the running statistics, the births' and merges' state
    (seed, reservoir, novel share) and the moves taken."""
    assert_same_model(a, b)
    for name in PARAMETERS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    for name, value in a.online_state_.statistics.arrays().items():
        assert np.array_equal(b.online_state_.statistics.arrays()[name], value), f"statistics.{name}"
    ma, mb = a.online_state_.moves, b.online_state_.moves
    assert ma is not None and mb is not None
    assert (ma.seed, ma.log_scale, ma.clock) == (mb.seed, mb.log_scale, mb.clock)
    for which in ("reservoir", "sample"):
        ra, rb = getattr(ma, which).merged(), getattr(mb, which).merged()
        assert (ra.offered_weight, ra.tried_at, ra.sampled) == (rb.offered_weight, rb.tried_at, rb.sampled), which
        for name in ("records", "log_weights", "keys"):
            assert np.array_equal(getattr(ra, name), getattr(rb, name), equal_nan=True), f"{which}.{name}"
    for name, value in ma.novel.arrays().items():
        assert np.array_equal(mb.novel.arrays()[name], value), f"novel.{name}"
    assert a.fit_history_.moves == b.fit_history_.moves


CLUSTER_CENTRES = ((0.0, 0.0), (12.0, 0.0), (0.0, 12.0))


def test_killed_over_files_sorted_by_cluster_ends_with_the_uninterrupted_model_and_births(tmp_path) -> None:
    """Two files per cluster, in cluster order: the first files show one cluster, so the others
    get components by births (``moves="auto"``, the default), decided on the reservoir of novel
    records. The kill falls in the file whose first mini-batch takes the first birth, once the
    reservoir has records: the restart must take the same births from the seed and reservoir
    its checkpoint carries. (One kill: each run is a new interpreter, seconds to start.)"""
    rng = np.random.default_rng(0)
    directory = tmp_path / "landing"
    files = [
        write_file(
            directory / f"part-{i:03d}.parquet", rng.normal(CLUSTER_CENTRES[i // 2], 1.0, (PER_FILE, 2)), BASE_TIME + i
        )
        for i in range(N_FILES)
    ]
    expected = oracle(files)
    births = [move for move in expected.fit_history_.moves if move["kind"] == "birth"]
    assert births, "no birth: the test would show nothing"
    # Each cluster got a component of its own.
    centres = np.array(CLUSTER_CENTRES)
    nearest = np.linalg.norm(expected.means_[:, None] - centres[None], axis=2).argmin(axis=1)
    assert sorted(nearest) == [0, 1, 2]

    watch(directory, tmp_path / "reference", n_components=K, columns=FEATURES, batch_size=BATCH, settle=0, once=True)
    uninterrupted = StreamingGaussianMixture.load(tmp_path / "reference" / "current.model")
    assert_exactly_the_same_model(uninterrupted, expected)

    state = tmp_path / "state"
    code, _, err = finish(watch_cli(directory, state, "--once", crash="mid_file:3"))
    assert code == -signal.SIGKILL, err
    checkpoint = StateDirectory(state).load()
    assert len(checkpoint.ledger) == 2
    # The births are still to come, from novel records the checkpoint holds.
    assert len(checkpoint.model.online_state_.moves.reservoir) > 0 and not checkpoint.model.fit_history_.moves
    assert births[0]["step"] > checkpoint.model.n_steps_
    code, _, err = finish(watch_cli(directory, state, "--once"))
    assert code == 0, err
    assert [e["path"] for e in ledger(state)] == [f.name for f in files]
    restarted = StreamingGaussianMixture.load(state / "current.model")
    assert_exactly_the_same_model(restarted, uninterrupted)
    assert restarted.fit_history_.moves == expected.fit_history_.moves and restarted.fit_history_.moves


def test_external_kill_at_random_times_loses_and_repeats_nothing(landing, reference, tmp_path) -> None:
    directory, files = landing
    rng = np.random.default_rng(2)
    # A kill drawn too late finds every file done; then start over, with kills drawn sooner (a
    # fast machine can take the six small files within the first draw's 0.1 s).
    for attempt in range(6):
        state = tmp_path / f"state-{attempt}"
        killed_at = []
        while len(killed_at) < 3 and len(ledger(state)) < N_FILES:
            process = watch_cli(directory, state)  # polling: it never exits by itself
            deadline = time.monotonic() + 60
            before = len(ledger(state))
            while len(ledger(state)) == before and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.1 / 2**attempt))  # somewhere in the next files
            process.kill()
            assert finish(process)[0] == -signal.SIGKILL
            killed_at.append(len(ledger(state)))
        if any(0 < n < N_FILES for n in killed_at):
            break
    assert any(0 < n < N_FILES for n in killed_at), killed_at
    code, _, err = finish(watch_cli(directory, state, "--once"))
    assert code == 0, err
    assert [e["path"] for e in ledger(state)] == [f.name for f in files]
    assert_same_model(
        StreamingGaussianMixture.load(state / "current.model"),
        StreamingGaussianMixture.load(reference[0] / "current.model"),
    )


def test_polling_watcher_takes_new_files_refuses_a_second_watcher_and_stops_on_sigterm(truth, tmp_path) -> None:
    directory, state = tmp_path / "landing", tmp_path / "state"
    files = landing_of(directory, truth, n_files=2)
    process = watch_cli(directory, state, "--json")
    deadline = time.monotonic() + 60
    while len(ledger(state)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    files += landing_of(directory, truth, n_files=2, seed=1, start=2)  # arriving while it runs
    while len(ledger(state)) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)

    second = run_streamgmm_here("watch", directory, "--state", state, "-k", K, "--once")
    assert second.returncode == 1 and second.stdout == ""
    assert second.stderr.strip() == f"streamgmm: error: {state} is in use by another watcher (pid {process.pid})"

    process.send_signal(signal.SIGTERM)
    code, out, err = finish(process)
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["files_consumed"], summary["stopped_by"]) == (4, "SIGTERM")
    assert_same_model(StreamingGaussianMixture.load(state / "current.model"), oracle(files))


def test_sigterm_while_consuming_finishes_the_file_and_commits_it(truth, tmp_path) -> None:
    directory, state = tmp_path / "landing", tmp_path / "state"
    files = landing_of(directory, truth, n_files=N_FILES)
    process = watch_cli(directory, state, "--once", "--json")
    line = process.stderr.readline()  # the first file's log line: now at the next files
    assert "checkpoint 1" in line, line
    process.send_signal(signal.SIGTERM)
    code, out, err = finish(process)
    assert code == 0, err
    assert json.loads(out)["stopped_by"] == "SIGTERM"
    consumed = [e["path"] for e in ledger(state)]
    assert consumed == [f.name for f in files[: len(consumed)]] and len(consumed) >= 1
    assert_same_model(StreamingGaussianMixture.load(state / "current.model"), oracle(files[: len(consumed)]))
    assert temporaries(state) == []


def test_bad_files_are_quarantined_and_the_watcher_goes_on(truth, tmp_path) -> None:
    directory, state = tmp_path / "landing", tmp_path / "state"
    good = landing_of(directory, truth, n_files=4)
    X = np.ones((100, 2))
    (directory / "garbage.parquet").write_bytes(b"PAR1 this is not parquet")
    os.utime(directory / "garbage.parquet", (BASE_TIME + 0.5,) * 2)
    (directory / "truncated.parquet").write_bytes(good[0].read_bytes()[:-100])
    os.utime(directory / "truncated.parquet", (BASE_TIME + 1.5,) * 2)
    write_file(directory / "drifted.parquet", X[:, :1], BASE_TIME + 2.5, y=pa.array(np.ones(100)))
    write_file(directory / "text.parquet", X[:, :1], BASE_TIME + 2.6, x1=pa.array(["a"] * 100))
    write_file(directory / "nan.parquet", np.where(np.arange(100)[:, None] == 50, np.nan, X), BASE_TIME + 2.7)
    shutil.copy(good[1], directory / "copy-of-1.parquet")
    os.utime(directory / "copy-of-1.parquet", (BASE_TIME + 3.5,) * 2)

    summary = watch(directory, state, n_components=K, columns=FEATURES, batch_size=BATCH, settle=0, once=True)
    assert (summary.files_consumed, summary.files_quarantined, summary.files_duplicate) == (4, 5, 1)
    assert_same_model(StreamingGaussianMixture.load(state / "current.model"), oracle(good))
    reasons = {e["path"]: e["reason"] for e in ledger(state) if e["status"] == "quarantined"}
    assert "not a Parquet file" in reasons["garbage.parquet"] and "not a Parquet file" in reasons["truncated.parquet"]
    assert "'x1'" in reasons["drifted.parquet"] and "not numeric" in reasons["text.parquet"]
    assert "row 50" in reasons["nan.parquet"]
    assert len(list((state / "quarantine").glob("*.json"))) == 5

    # A restart sees nothing new; a rewritten file is new data; a touched copy is a duplicate.
    assert watch(directory, state, settle=0, once=True).sequence == 10
    X, _ = sample_mixture(truth, PER_FILE, random_state=99)
    write_file(good[2], X, BASE_TIME + 10)
    os.utime(good[3], (BASE_TIME + 11,) * 2)
    summary = watch(directory, state, settle=0, once=True)
    assert (summary.files_consumed, summary.files_duplicate, summary.sequence) == (1, 1, 12)
    entries = ledger(state)
    assert [e["path"] for e in entries].count(good[2].name) == 2 and entries[-1]["status"] == "duplicate"


def test_a_file_is_read_only_once_it_has_settled(truth, tmp_path) -> None:
    directory, state = tmp_path / "landing", tmp_path / "state"
    landing_of(directory, truth, n_files=1)
    X, _ = sample_mixture(truth, PER_FILE, random_state=7)
    fresh = write_file(directory / "fresh.parquet", X, time.time())
    summary = watch(directory, state, n_components=K, columns=FEATURES, settle=0.5, interval=0.05, once=True)
    assert summary.files_consumed == 2
    entry = ledger(state)[-1]
    assert entry["path"] == fresh.name
    assert datetime.datetime.fromisoformat(entry["at"]).timestamp() >= os.stat(fresh).st_mtime + 0.5


@pytest.mark.parametrize("step_floor, follows", [(0.05, True), (0.0, False)])
def test_step_floor_follows_drift(truth, tmp_path, step_floor: float, follows: bool) -> None:
    directory, state = tmp_path / "landing", tmp_path / "state"
    landing_of(directory, truth, n_files=5)
    shifted = type(truth).from_covariances(truth.weights, truth.means + 2.0, truth.covariances, truth.covariance_type)
    landing_of(directory, shifted, n_files=5, seed=1, start=5)
    watch(
        directory, state, n_components=K, columns=FEATURES, batch_size=200, step_floor=step_floor, settle=0, once=True
    )
    model = StreamingGaussianMixture.load(state / "current.model")
    order = match_components(shifted.means, model.means_)
    distance = np.linalg.norm(model.means_[order] - shifted.means, axis=1).max()
    assert bool(distance < 0.5) == follows, distance


def test_init_model_is_continued_and_a_checkpoint_is_not_restarted_with_other_settings(
    landing, truth, tmp_path
) -> None:
    _, files = landing
    X, _ = sample_mixture(truth, 3000, random_state=42)
    start = StreamingGaussianMixture(K, random_state=1, batch_size=BATCH, shuffle=False).fit(
        pa.table({"x0": X[:, 0], "x1": X[:, 1]})
    )
    start.save(tmp_path / "start.model")
    state = tmp_path / "state"
    watch(files[0].parent, state, init_model=tmp_path / "start.model", step_floor=0.02, settle=0, once=True)
    expected = StreamingGaussianMixture.load(tmp_path / "start.model").set_params(step_floor=0.02)
    for path in files:
        expected.partial_fit(ParquetSource(path, columns=FEATURES))
    assert_same_model(StreamingGaussianMixture.load(state / "current.model"), expected)
    with pytest.raises(ValueError, match="holds a model of 3 components, not 4"):
        watch(files[0].parent, state, n_components=4, settle=0, once=True)
    with pytest.raises(ValueError, match="holds no model yet"):
        watch(files[0].parent, tmp_path / "empty-state", settle=0, once=True)
    # Bad settings are refused up front, not found file by file (which would quarantine them all).
    with pytest.raises(ValueError, match="step_floor"):
        watch(files[0].parent, state, step_floor=2.0, settle=0, once=True)
    with pytest.raises(ValueError, match="covariance_type"):
        watch(files[0].parent, tmp_path / "other", n_components=2, covariance_type="bad", once=True)
    assert len(ledger(state)) == N_FILES


def test_continuous_update_pipeline_runs_a_watcher_while_feeding_it(tmp_path) -> None:
    script = Path(__file__).resolve().parents[2] / "pipelines" / "continuous_update.py"
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            "--files",
            "4",
            "--records",
            "2000",
            "--pause",
            "0.05",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert (summary["files_consumed"], summary["records"], summary["outputs"]) == (4, 8000, 4)
    assert "watcher state, 4 file(s) consumed" in result.stdout


def test_files_quarantined_before_any_model_are_kept_in_the_ledger(truth, tmp_path) -> None:
    directory, state = tmp_path / "landing", tmp_path / "state"
    directory.mkdir()
    (directory / "garbage.parquet").write_bytes(b"not parquet at all")
    os.utime(directory / "garbage.parquet", (BASE_TIME - 1,) * 2)
    summary = watch(directory, state, n_components=K, columns=FEATURES, batch_size=BATCH, settle=0, once=True)
    assert (summary.files_quarantined, summary.sequence) == (1, 1) and not (state / "current.model").exists()
    info = run_streamgmm_here("info", state, "--json")
    described = json.loads(info.stdout)
    assert (described["files_quarantined"], described["files_consumed"], described["model"]) == (1, 0, None)
    assert "not a Parquet file" in described["quarantined"][0]["reason"]

    files = landing_of(directory, truth, n_files=2)
    summary = watch(directory, state, n_components=K, columns=FEATURES, batch_size=BATCH, settle=0, once=True)
    assert (summary.files_consumed, summary.files_quarantined, summary.sequence) == (2, 0, 3)
    assert [e["status"] for e in ledger(state)] == ["quarantined", "consumed", "consumed"]
    assert not (state / "ledger-before-model.json").exists()
    assert_same_model(StreamingGaussianMixture.load(state / "current.model"), oracle(files))
    # A ledger damaged after its commit is an error naming it, not a silent re-consumption.
    ledger_file = state / "ledger.jsonl"
    ledger_file.write_text(ledger_file.read_text().replace('"quarantined"', '"consumed"   '))
    with pytest.raises(ModelFileError, match="ledger.jsonl: its first .* bytes are not those the checkpoint committed"):
        watch(directory, state, settle=0, once=True)


def test_passthrough_ids_are_not_features_and_keep_copies_them(tmp_path):
    """An id column next to the features: ``--passthrough id`` leaves it out of a new model (the
    oracle is the same files read by the feature names), ``--keep id`` copies it into each output
    row for row."""
    params = random_mixture(K, len(FEATURES), random_state=4)
    files = []
    for i in range(2):
        X, _ = sample_mixture(params, PER_FILE, random_state=40 + i)
        ids = pa.array(np.arange(PER_FILE, dtype=np.int64) + i * PER_FILE)
        files.append(write_file(tmp_path / "landing" / f"part-{i}.parquet", X, BASE_TIME + i, id=ids))
    out = tmp_path / "scored"
    run = run_streamgmm_here(
        *["watch", tmp_path / "landing", "--state", tmp_path / "state", "-k", K, "--passthrough", "id"],
        *["--batch-size", BATCH, "--settle", "0", "--once", "-q", "--assign-out", out, "--keep", "id"],
    )
    assert run.returncode == 0, run.stderr
    model = StreamingGaussianMixture.load(tmp_path / "state" / "current.model")
    assert list(model.feature_names_in_) == FEATURES
    assert_same_model(model, oracle(files))
    for i, path in enumerate(files):
        table = pq.read_table(out / path.name)
        assert table.column_names[0] == "id"
        np.testing.assert_array_equal(table["id"].to_numpy(), np.arange(PER_FILE) + i * PER_FILE)
        X = np.column_stack([pq.read_table(path)[name].to_numpy() for name in FEATURES])
        after_file = oracle(files[: i + 1])  # each output is scored by the model right after its file
        np.testing.assert_allclose(table["log_likelihood"].to_numpy(), after_file.score_samples(X), rtol=1e-12)


def sorted_by_cluster(directory: Path) -> list[Path]:
    """Landing files in stored order: three well separated clusters, two files each, cluster by
    cluster (the first file shows only the first cluster)."""
    rng = np.random.default_rng(3)
    centres = [(0.0, 0.0), (12.0, 0.0), (24.0, 12.0)]
    return [
        write_file(
            directory / f"part-{2 * c + i}.parquet", rng.normal(centre, 1.0, (PER_FILE, 2)), BASE_TIME + 2 * c + i
        )
        for c, centre in enumerate(centres)
        for i in range(2)
    ]


WAYS = (("off", ("--moves", "off")), ("auto", ()))


def test_moves_off_is_partial_fit_without_moves_and_the_default_takes_births(tmp_path) -> None:
    files = sorted_by_cluster(tmp_path / "landing")
    # Both runs at once: each is a process of its own.
    running = [watch_cli(files[0].parent, tmp_path / name, "--once", "-q", *extra) for name, extra in WAYS]
    off, default = (finish(process) for process in running)
    assert off[0] == 0 and default[0] == 0, (off[2], default[2])
    plain = StreamingGaussianMixture.load(tmp_path / "off" / "current.model")
    assert plain.get_params()["moves"] == "off" and plain.fit_history_.moves == []
    expected = StreamingGaussianMixture(K, random_state=0, batch_size=BATCH, shuffle=False, moves="off")
    for path in files:
        expected.partial_fit(ParquetSource(path, columns=FEATURES))
    assert np.array_equal(plain.means_, expected.means_)
    assert_same_model(plain, expected)
    assert all(entry["moves"] == [] for entry in ledger(tmp_path / "off"))
    moved = StreamingGaussianMixture.load(tmp_path / "auto" / "current.model")
    assert moved.get_params()["moves"] == "auto"
    assert any(move["kind"] == "birth" for move in moved.fit_history_.moves)
    assert any(move["kind"] == "birth" for entry in ledger(tmp_path / "auto") for move in entry["moves"])
    assert [state_summary(tmp_path / name)[0]["moves"] for name, _ in WAYS] == ["off", "auto"]
    # A resumed model (here --model) is given the setting as step_floor is; not given, it keeps its own.
    watch(
        files[0].parent,
        tmp_path / "resumed",
        init_model=tmp_path / "auto" / "current.model",
        moves="off",
        settle=0,
        once=True,
    )
    assert StreamingGaussianMixture.load(tmp_path / "resumed" / "current.model").moves == "off"
    watch(files[0].parent, tmp_path / "kept", init_model=tmp_path / "off" / "current.model", settle=0, once=True)
    assert StreamingGaussianMixture.load(tmp_path / "kept" / "current.model").moves == "off"
