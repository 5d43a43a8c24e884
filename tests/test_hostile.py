"""Hostile and careless input: no data lost, no NaN result published, no hang.

One test (or a few) per hazard, each failing without its guard. Files, links, FIFOs and
processes are real; the command runs in this process (``streamgmm.cli.command.main``) except where a
hang must be bounded by a subprocess's timeout. Lakes are small so the module runs in seconds.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shared_helpers import cli, members, npy, one_error_line, write_zip

from streamgmm import ModelFileError, ParquetSource, StreamingGaussianMixture, assign
from streamgmm.estimator.persistence import model_document
from streamgmm.io.model.file import write_model
from streamgmm.watch.checkpoint import StateDirectory
from streamgmm.watch.watcher import Watcher, watch

K = 3
FEATURES = ["x0", "x1", "x2"]
PER_FILE = 600
BASE_TIME = 1_700_000_000


# ---------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def lake(make_lake) -> Path:
    return make_lake("hostile", n_records=3000, n_components=K, n_features=3, n_files=4, seed=0).path


@pytest.fixture(scope="module")
def model_path(lake, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "m.sgmm"
    StreamingGaussianMixture(K, random_state=0, batch_size=500).fit(ParquetSource(lake, columns=FEATURES)).save(path)
    return path


def edited_model(
    good: Path, target: Path, arrays: dict[str, np.ndarray] | None = None, fitted: dict | None = None
) -> Path:
    arrays, fitted = arrays or {}, fitted or {}
    contents = members(good)
    for name, value in arrays.items():
        contents[f"arrays/{name}.npy"] = npy(value)
    document = json.loads(contents["model.json"])
    document["fitted"].update(fitted)
    contents["model.json"] = json.dumps(document).encode()
    return write_zip(target, contents)


def parquet(path: Path, X: np.ndarray, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({name: X[:, j] for j, name in enumerate(FEATURES)}), path)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def records(seed: int, n: int = PER_FILE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)) + rng.integers(0, K, size=n)[:, None] * 6.0


def run_watch(landing: Path, state: Path, **options) -> object:
    return watch(landing, state, n_components=K, columns=FEATURES, batch_size=200, settle=0, once=True, **options)


def ledger(state: Path) -> list[dict]:
    checkpoint = StateDirectory(state).load()
    return [] if checkpoint is None else checkpoint.ledger


def assert_same_parameters(a: StreamingGaussianMixture, b: StreamingGaussianMixture) -> None:
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


# ---------------------------------------------------------------------- 1. long names in the watcher


def test_long_and_deep_landing_names_do_not_stop_the_watcher(tmp_path) -> None:
    landing, state, out = tmp_path / "landing", tmp_path / "state", tmp_path / "out"
    long_bad = landing / ("b" * 246 + ".parquet")  # 254 bytes: the quarantine name would pass 255
    long_bad.parent.mkdir(parents=True)
    long_bad.write_bytes(b"not parquet at all")
    os.utime(long_bad, (BASE_TIME, BASE_TIME))
    deep_bad = landing / ("d" * 120) / ("e" * 120) / "f.parquet"
    deep_bad.parent.mkdir(parents=True)
    deep_bad.write_bytes(b"nor this")
    os.utime(deep_bad, (BASE_TIME + 1, BASE_TIME + 1))
    long_good = parquet(landing / ("g" * 240 + ".parquet"), records(1), BASE_TIME + 2)  # its output's temp name too
    later = parquet(landing / "later.parquet", records(2), BASE_TIME + 3)
    summary = run_watch(landing, state, assign_out=out)
    assert (summary.files_quarantined, summary.files_consumed) == (2, 2)
    assert [e["path"] for e in ledger(state) if e["status"] == "consumed"] == [long_good.name, later.name]
    assert all(len(p.name.encode()) <= 255 for p in (state / "quarantine").iterdir())
    assert len(list((state / "quarantine").iterdir())) == 2
    assert (out / long_good.name).is_file() and (out / later.name).is_file()


# ---------------------------------------------------------------------- 2, 3. writing over inputs


def test_fit_model_over_an_input_or_into_the_lake_is_refused(lake, tmp_path, capsys) -> None:
    lake = Path(shutil.copytree(lake, tmp_path / "lake"))  # a failure must not destroy the shared lake
    victim = lake / "part-00000.parquet"
    before = victim.read_bytes()
    (tmp_path / "link.parquet").symlink_to(victim)
    for target in (victim, tmp_path / "link.parquet", lake / "model.sgmm"):
        code, out, err = cli(capsys, "fit", lake, "-k", K, "--columns", ",".join(FEATURES), "--model", target, "-q")
        assert code == 1
        one_error_line(err, "--model", "input")
    assert victim.read_bytes() == before
    assert not (lake / "model.sgmm").exists()


def test_assign_cannot_reach_its_input_through_links(lake, model_path, tmp_path) -> None:
    (tmp_path / "outlink").symlink_to(lake)
    with pytest.raises(ValueError, match="overlap"):
        assign(model_path, str(lake), tmp_path / "outlink" / "sub")
    (tmp_path / "lakelink").symlink_to(lake)
    with pytest.raises(ValueError, match="overlap"):
        assign(model_path, str(tmp_path / "lakelink"), lake / "scored")
    assert not (lake / "sub").exists() and not (lake / "scored").exists()


def test_watcher_state_reached_through_a_link_is_refused_or_never_read(tmp_path) -> None:
    landing = tmp_path / "landing"
    parquet(landing / "a.parquet", records(1), BASE_TIME)
    (tmp_path / "statelink").symlink_to(landing / "state", target_is_directory=True)
    (landing / "state").mkdir()
    with pytest.raises(ValueError, match="overlap"):
        run_watch(landing, tmp_path / "statelink")
    # The state outside, a link to it inside the landing directory: never consumed as input.
    (landing / "state").rmdir()
    (landing / "state").symlink_to(tmp_path / "state", target_is_directory=True)
    for _ in range(2):
        summary = run_watch(landing, tmp_path / "state")
        assert summary.files_quarantined == 0
    assert [e["path"] for e in ledger(tmp_path / "state")] == ["a.parquet"]


# ---------------------------------------------------------------------- 4. NaN and other unusable models


@pytest.mark.parametrize("case", ["nan_weights", "weights_sum", "nan_means", "not_pd", "string_names"])
def test_unusable_model_is_refused_wherever_it_enters(lake, model_path, tmp_path, capsys, case: str) -> None:
    good = StreamingGaussianMixture.load(model_path)
    arrays, fitted, message = {}, {}, ""
    if case == "nan_weights":
        arrays, message = {"weights": np.full(K, np.nan)}, "non-finite"
    elif case == "weights_sum":
        arrays, message = {"weights": good.weights_ * 0.5}, "sum to 1"
    elif case == "nan_means":
        arrays, message = {"means": np.where(np.eye(K, 3) > 0, np.nan, good.means_)}, "non-finite"
    elif case == "not_pd":
        factors = good.precisions_cholesky_.copy()
        factors[1, 2, 2] = -factors[1, 2, 2]
        arrays, message = {"precisions_cholesky": factors}, "positive"
    else:  # item 11: a string of d characters is not d column names
        fitted, message = {"feature_names_in": "abc"}, "feature_names_in"
    bad = edited_model(model_path, tmp_path / f"{case}.sgmm", arrays, fitted)
    with pytest.raises(ModelFileError, match=message) as info:
        StreamingGaussianMixture.load(bad)
    assert str(bad) in str(info.value)
    code, _, err = cli(capsys, "assign", lake, "--model", bad, "--out", tmp_path / "scored", "-q")
    assert code == 1
    one_error_line(err, str(bad), message)
    assert not (tmp_path / "scored").exists()
    code, _, err = cli(capsys, "info", bad)
    assert code == 1
    one_error_line(err, str(bad))
    with pytest.raises(ModelFileError, match=message):
        watch(lake, tmp_path / "state", init_model=bad, settle=0, once=True)


def test_write_model_refuses_non_finite_parameters(model_path, tmp_path) -> None:
    document, arrays = model_document(StreamingGaussianMixture.load(model_path))
    arrays = {**arrays, "means": np.full_like(arrays["means"], np.nan)}
    with pytest.raises(ModelFileError, match="not written.*non-finite"):
        write_model(tmp_path / "nan.sgmm", document, arrays)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("case", ["max_double", "huge_offset"])
def test_fit_on_overflowing_values_names_the_column_or_fits(case: str) -> None:
    # Needs no estimator change: the records are refused as they are read (validation.py).
    rng = np.random.default_rng(0)
    if case == "max_double":
        X = rng.normal(size=(3000, 3))
        X[::7, 1] = np.where(rng.random(X[::7].shape[0]) < 0.5, -1e308, 1e308)
    else:
        X = 1e200 + 1e190 * rng.normal(size=(3000, 3))
    try:
        model = StreamingGaussianMixture(K, random_state=0).fit(pa.table({n: X[:, j] for j, n in enumerate(FEATURES)}))
    except ValueError as exc:
        assert "column 'x1'" in str(exc) if case == "max_double" else "column 'x0'" in str(exc), exc
        assert "too large" in str(exc)
        return
    assert np.isfinite(model.means_).all() and np.isfinite(model.weights_).all()  # fitted about a shift and scale


def test_cli_fit_on_overflowing_values_writes_no_model(tmp_path, capsys) -> None:
    X = records(3)
    X[100, 2] = -1e308
    parquet(tmp_path / "lake" / "part-0.parquet", X)
    code, _, err = cli(capsys, "fit", tmp_path / "lake", "-k", K, "--model", tmp_path / "m.sgmm", "-q")
    assert code == 1
    one_error_line(err, "part-0.parquet", "'x2'", "too large")
    assert not (tmp_path / "m.sgmm").exists()


# ---------------------------------------------------------------------- 5. a lost current.model


def test_lost_current_model_is_restored_from_the_kept_history(tmp_path) -> None:
    landing, state = tmp_path / "landing", tmp_path / "state"
    for i in range(3):
        parquet(landing / f"p{i}.parquet", records(i), BASE_TIME + i)
    run_watch(landing, state)
    (state / "current.model").unlink()
    parquet(landing / "p3.parquet", records(3), BASE_TIME + 3)
    summary = run_watch(landing, state)
    assert summary.files_consumed == 1  # only the new file: nothing consumed again
    entries = ledger(state)
    assert [e["sequence"] for e in entries] == [1, 2, 3, 4]
    assert sorted(p.name for p in (state / "models").iterdir())[-1] == "00000004.model"
    run_watch(landing, tmp_path / "uninterrupted")
    assert_same_parameters(
        StreamingGaussianMixture.load(state / "current.model"),
        StreamingGaussianMixture.load(tmp_path / "uninterrupted" / "current.model"),
    )


def test_lost_current_model_without_a_matching_history_is_refused_and_the_ledger_kept(tmp_path) -> None:
    landing, state = tmp_path / "landing", tmp_path / "state"
    for i in range(3):
        parquet(landing / f"p{i}.parquet", records(i), BASE_TIME + i)
    run_watch(landing, state)
    (state / "current.model").unlink()
    (state / "models" / "00000003.model").unlink()
    before = (state / "ledger.jsonl").read_bytes()
    with pytest.raises(ModelFileError, match="current.model is missing.*copy 00000002.model"):
        run_watch(landing, state)
    assert (state / "ledger.jsonl").read_bytes() == before


# ---------------------------------------------------------------------- 6. link loops in a lake


def test_a_self_link_in_a_lake_reads_each_file_once(lake, tmp_path) -> None:
    copy = tmp_path / "lake"
    copy.mkdir()
    for path in lake.glob("*.parquet"):
        (copy / path.name).write_bytes(path.read_bytes())
    (copy / "self").symlink_to(".", target_is_directory=True)
    assert ParquetSource(copy, columns=FEATURES).n_records == 3000
    (copy / "alias.parquet").symlink_to(copy / "part-00000.parquet")
    assert ParquetSource(copy, columns=FEATURES).n_records == 3000


def test_two_loop_links_end_for_directories_and_globs(lake, tmp_path) -> None:
    copy = tmp_path / "lake"
    (copy / "sub").mkdir(parents=True)
    (copy / "sub" / "part.parquet").write_bytes((lake / "part-00000.parquet").read_bytes())
    (copy / "sub" / "up").symlink_to("..", target_is_directory=True)
    (copy / "loop").symlink_to(".", target_is_directory=True)
    code = (
        "from streamgmm.io.sources.parquet import ParquetSource as P; import sys; "
        "print(P(sys.argv[1]).n_records, P(sys.argv[1] + '/**/*.parquet').n_records)"
    )
    # A subprocess bounds the old behaviour (a listing growing without end) by its timeout.
    result = subprocess.run([sys.executable, "-c", code, str(copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["750", "750"]


# ---------------------------------------------------------------------- 7. model files that exhaust memory


def test_npy_header_declaring_a_huge_shape_is_refused_before_allocating(model_path, tmp_path) -> None:
    contents = members(model_path)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    contents["arrays/weights.npy"] = header.getvalue() + b"\0" * 64
    bad = write_zip(tmp_path / "huge.sgmm", contents)
    with pytest.raises(ModelFileError, match="declares shape"):
        StreamingGaussianMixture.load(bad)


def test_npy_member_larger_than_its_shape_needs_is_refused(model_path, tmp_path) -> None:
    contents = members(model_path)
    contents["arrays/weights.npy"] += b"\0" * 4096
    with pytest.raises(ModelFileError, match="needs"):
        StreamingGaussianMixture.load(write_zip(tmp_path / "padded.sgmm", contents))


def test_deeply_nested_json_is_refused_without_recursion_error(model_path, tmp_path, capsys) -> None:
    contents = members(model_path)
    contents["model.json"] = b"[" * 100_000 + b"]" * 100_000
    bad = write_zip(tmp_path / "deep.sgmm", contents)
    with pytest.raises(ModelFileError, match="nested"):
        StreamingGaussianMixture.load(bad)
    code, _, err = cli(capsys, "info", bad)
    assert code == 1
    one_error_line(err, str(bad), "nested")


def test_a_zip_bomb_document_is_refused_before_inflating(model_path, tmp_path) -> None:
    contents = members(model_path)
    contents["model.json"] = b" " * (64 << 20)  # 64 MiB of spaces: about 64 kB deflated
    bad = write_zip(tmp_path / "bomb.sgmm", contents, compression=zipfile.ZIP_DEFLATED)
    del contents
    assert bad.stat().st_size < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match="bytes, more than"):
            StreamingGaussianMixture.load(bad)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak


# ---------------------------------------------------------------------- 8. a file dated in the future


def test_watch_once_ends_on_a_file_dated_in_the_future(tmp_path) -> None:
    landing = tmp_path / "landing"
    parquet(landing / "future.parquet", records(1), time.time() + 86_400)
    lines: list[str] = []
    watcher = Watcher(
        landing,
        tmp_path / "state",
        n_components=K,
        columns=FEATURES,
        batch_size=200,
        settle=0,
        interval=0.05,
        log=lines.append,
    )
    result: list = []
    thread = threading.Thread(target=lambda: result.append(watcher.run(once=True)), daemon=True)
    thread.start()
    thread.join(20)
    if thread.is_alive():
        watcher.stop()
        thread.join(20)
        pytest.fail("watch --once did not end on a file dated in the future")
    assert result[0].files_consumed == 1
    assert any("future" in line for line in lines), lines


# ---------------------------------------------------------------------- 9. what is hashed is what is read


def test_a_file_replaced_while_being_read_is_consumed_once_as_what_was_read(tmp_path) -> None:
    landing, state = tmp_path / "landing", tmp_path / "state"
    target = parquet(landing / "data.parquet", records(1), BASE_TIME)
    replacement = parquet(tmp_path / "new.parquet", records(2, n=PER_FILE + 100), BASE_TIME + 5)
    new_digest = hashlib.sha256(replacement.read_bytes()).hexdigest()
    pending = [replacement]

    def replace_while_read(point: str, sequence: int) -> None:
        # A producer's os.replace landing while the watcher reads the file (after its first mini-batch).
        if point == "mid_file" and pending:
            os.replace(pending.pop(), target)

    watcher = Watcher(
        landing, state, n_components=K, columns=FEATURES, batch_size=200, settle=0, interval=0.01,
        on_step=replace_while_read,
    )  # fmt: skip
    watcher.run(once=True)
    consumed = [e for e in ledger(state) if e["status"] == "consumed"]
    assert [(e["sha256"], e["records_used"]) for e in consumed] == [(new_digest, PER_FILE + 100)]
    expected = StreamingGaussianMixture(K, random_state=0, batch_size=200, shuffle=False)
    expected.partial_fit(ParquetSource(target, columns=FEATURES))
    assert_same_parameters(StreamingGaussianMixture.load(state / "current.model"), expected)


# ---------------------------------------------------------------------- 10. filters


@pytest.mark.parametrize("expression", ["id >= 99999999999999999999999", "day >= ", "day => 3", "x0 =< 1"])
def test_unreadable_filters_are_usage_errors(lake, tmp_path, capsys, expression: str) -> None:
    code, out, err = cli(capsys, "fit", lake, "-k", K, "--model", tmp_path / "m.sgmm", "--filter", expression)
    assert code == 2, err
    assert "Traceback" not in err and "filter" in err.splitlines()[-1]


def test_a_filter_matching_no_rows_says_so(lake, tmp_path, capsys) -> None:
    code, _, err = cli(
        capsys,
        "fit",
        lake,
        "-k",
        K,
        "--columns",
        ",".join(FEATURES),
        "--model",
        tmp_path / "m.sgmm",
        "--filter",
        "x0 > 1e9",
        "-q",
    )
    assert code == 1
    one_error_line(err, "no records match the filter")


# ---------------------------------------------------------------------- 12. URL outputs


def test_an_output_url_no_filesystem_opens_is_one_error_line(lake, model_path, tmp_path, capsys, monkeypatch) -> None:
    """Object-store outputs are written (tests/assignment/test_store_output.py); a URL whose
    scheme no filesystem serves is one error line, and no local folder is named after it."""
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "assign", lake, "--model", model_path, "--out", "http://h/x")
    assert code == 1
    one_error_line(err, "http://h/x")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------- rough edges


def test_model_path_that_is_not_a_file_is_described(model_path, tmp_path, capsys, lake) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "dir.sgmm").mkdir()
    for name, message in (("fifo", "named pipe"), ("dangling", "dangling symbolic link"), ("dir.sgmm", "directory")):
        with pytest.raises(ModelFileError, match=message):
            StreamingGaussianMixture.load(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="no such model file"):
        StreamingGaussianMixture.load(tmp_path / "absent")
    # Written to: the message names the path given, never a temporary file.
    code, _, err = cli(capsys, "fit", lake, "-k", K, "--columns", ",".join(FEATURES), "--model", tmp_path / "dir.sgmm")
    assert code == 1
    one_error_line(err, "dir.sgmm", "directory")
    assert ".tmp" not in err
    with pytest.raises(IsADirectoryError) as info:
        StreamingGaussianMixture.load(model_path).save(tmp_path / "dir.sgmm")
    assert ".tmp" not in str(info.value) and "dir.sgmm" in str(info.value)


def test_assign_summary_has_no_placeholder_text(lake, model_path, tmp_path, capsys) -> None:
    code, out, err = cli(capsys, "assign", lake, "--model", model_path, "--out", tmp_path / "scored")
    assert code == 0, err
    assert out.startswith("wrote responsibilities of 3,000 records to 4 file(s)")
    assert "null)" not in out


def test_info_says_a_killed_runs_output_is_unfinished(lake, model_path, tmp_path, capsys) -> None:
    summary = assign(model_path, str(lake), tmp_path / "scored")
    killed = tmp_path / "killed"
    killed.mkdir()
    # What kill -9 leaves during the first file: its hidden temporary file, no _SUCCESS.
    (killed / ".part-00000.parquet.0123456789abcdef.tmp").write_bytes(Path(summary.outputs[0]).read_bytes()[:500])
    code, out, err = cli(capsys, "info", killed)
    assert code == 0, err
    assert "unfinished" in out


def test_quarantine_records_carry_the_time(tmp_path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "bad.parquet").write_bytes(b"garbage")
    started = datetime.datetime.now(datetime.UTC)
    run_watch(landing, tmp_path / "state")
    (record,) = (tmp_path / "state" / "quarantine").iterdir()
    at = json.loads(record.read_text())["at"]
    assert at is not None and datetime.datetime.fromisoformat(at) >= started - datetime.timedelta(seconds=1)


@pytest.mark.parametrize(
    "argv",
    [
        ["fit", "LAKE", "-k", "3", "--model", "m.sgmm", "--columns", "id", "--passthrough", "id"],
        ["select", "LAKE", "-k", "5..2"],
        ["watch", "LAKE", "--state", "STATE", "-k", "3", "--interval", "0"],
        ["watch", "LAKE", "--state", "STATE", "-k", "3", "--settle", "-1"],
    ],
)
def test_conflicting_or_impossible_options_are_usage_errors(lake, tmp_path, capsys, argv: list[str]) -> None:
    argv = [str(lake) if a == "LAKE" else str(tmp_path / "state") if a == "STATE" else a for a in argv]
    code, _, err = cli(capsys, *argv)
    assert code == 2, err
    assert not (tmp_path / "state").exists()
    with pytest.raises(ValueError, match="share a column"):
        Watcher(lake, tmp_path / "state", n_components=K, columns=["id"], passthrough=["id"])


def test_unreadable_landing_subdirectory_is_reported(tmp_path) -> None:
    # Root reads any directory: then the watcher runs as nobody, in a directory nobody can reach.
    base = tmp_path if os.geteuid() != 0 else Path(tempfile.mkdtemp(prefix="streamgmm-hostile-"))
    landing = base / "landing"
    parquet(landing / "a.parquet", records(1), BASE_TIME)
    parquet(landing / "locked" / "b.parquet", records(2), BASE_TIME + 1)
    os.chmod(landing / "locked", 0)
    try:
        lines = _watch_log_as_unprivileged(landing, base / "state")
    finally:
        os.chmod(landing / "locked", 0o755)
        if base != tmp_path:
            shutil.rmtree(base)
    assert any("locked" in line and "unreadable" in line for line in lines), lines
    assert any("a.parquet: consumed" in line for line in lines), lines


def _watch_log_as_unprivileged(landing: Path, state: Path) -> list[str]:
    """The watcher's log lines from one --once run, by a user permissions apply to (a forked
    child that drops root's privileges)."""
    if os.geteuid() != 0:
        lines: list[str] = []
        watch(landing, state, n_components=K, columns=FEATURES, settle=0, once=True, log=lines.append)
        return lines
    os.chmod(landing.parent, 0o755)
    state.mkdir()
    os.chmod(state, 0o777)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, run, report, exit without pytest's cleanup
        status = 1
        try:
            os.close(read)
            os.setgid(65534)
            os.setuid(65534)
            lines = []
            watch(landing, state, n_components=K, columns=FEATURES, settle=0, once=True, log=lines.append)
            os.write(write, json.dumps(lines).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read) as handle:
        data = handle.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0 and data, "the unprivileged watcher failed"
    return json.loads(data)
