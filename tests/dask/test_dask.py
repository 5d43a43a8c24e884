"""Fitting and assigning on Dask: a real ``distributed.LocalCluster`` of two worker processes
(``cluster`` and ``client``, in conftest.py), and Dask's local thread pool. Oracles: the
single-process batch EM from the same start (to 1e-10), the single-process online fit and the
generating parameters (held-out log-likelihood), and the local responsibilities pass (same
files, values, metadata)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from shared_helpers import assert_same_fit, unit_matrices

pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

import cloudpickle  # noqa: E402 (distributed's dependency)
import dask  # noqa: E402
import dask.array as da  # noqa: E402
import dask.dataframe as dd  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from streamgmm import DataError, StreamingGaussianMixture, assign  # noqa: E402
from streamgmm.cli.command import main  # noqa: E402
from streamgmm.dask.em import run_dask_batch_em, wave_step_size  # noqa: E402
from streamgmm.dask.source import dask_source, merge_samples  # noqa: E402
from streamgmm.datasets.mixtures import make_mixture  # noqa: E402
from streamgmm.datasets.synthetic_lake import read_truth  # noqa: E402
from streamgmm.em.batch import run_batch_em  # noqa: E402
from streamgmm.em.online import StepSchedule  # noqa: E402
from streamgmm.em.settings import FitSettings, WeightUnit  # noqa: E402
from streamgmm.em.trainer import start_fit  # noqa: E402
from streamgmm.io.sources.chunk_source import ArraySource  # noqa: E402
from streamgmm.io.sources.parquet import ParquetSource  # noqa: E402

# The test module is not importable on the workers (pytest imports it by path): its helper
# functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def lake(make_lake):
    return make_lake(
        "dask",
        n_records=24_000,
        n_components=3,
        n_features=3,
        n_files=6,
        partitions=2,
        row_group_size=2000,
        held_out=20_000,
        seed=7,
    )


@pytest.fixture(scope="module")
def data():
    X, _, truth = make_mixture(12_000, 3, 2, random_state=4)
    return X, truth


def start_of(X: np.ndarray, k: int, covariance_type: str = "full", seed: int = 0) -> dict[str, np.ndarray]:
    """A fixed, deliberately rough start (a few records as means), as *_init arguments."""
    rng = np.random.default_rng(seed)
    return {
        "weights_init": np.full(k, 1.0 / k),
        "means_init": X[rng.choice(X.shape[0], k, replace=False)],
        "precisions_init": unit_matrices(covariance_type, k, X.shape[1]),
    }


def lake_frame(lake) -> dd.DataFrame:
    # The lake's files by name: dask's read_parquet would also read _held_out/ in the lake.
    return dd.read_parquet([str(lake.path / name) for name in lake.files])


# ---------------------------------------------------------------------- batch EM: equal to one process


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_batch_em_on_the_cluster_equals_single_process_batch_em(client, data, covariance_type) -> None:
    X, _ = data
    init = start_of(X, 3, covariance_type)
    params = dict(
        n_components=3,
        covariance_type=covariance_type,
        algorithm="batch",
        tol=1e-7,
        max_iter=30,
        batch_size=1000,
        **init,
    )
    frame = dd.from_pandas(pd.DataFrame(X, columns=["a", "b"]), npartitions=7)
    on_cluster = StreamingGaussianMixture(**params).fit(frame, client=client)
    reference = StreamingGaussianMixture(**params).fit(X)
    assert on_cluster.n_iter_ > 3  # a real run of EM, not the start
    assert_same_fit(on_cluster, reference, atol=1e-10)
    assert list(on_cluster.feature_names_in_) == ["a", "b"]
    assert on_cluster.records_seen_ == X.shape[0]
    # warm_start continues from the fitted model, reading the frame by its column names.
    means = on_cluster.means_.copy()
    on_cluster.set_params(warm_start=True).fit(frame.assign(c=frame["a"] * 0)[["c", "b", "a"]], client=client)
    assert on_cluster.n_iter_ <= 2 and np.abs(on_cluster.means_ - means).max() < 1e-3


def test_batch_em_on_dask_array_with_local_threads_equals_run_batch_em(data) -> None:
    X, _ = data
    model = StreamingGaussianMixture(
        3, algorithm="batch", tol=1e-9, max_iter=30, batch_size=700, **start_of(X, 3, seed=2)
    )
    array = da.from_array(X, chunks=(2500, 1))  # columns in two blocks: re-chunked per row block
    model.fit(array)  # no client: Dask's local thread pool
    reference = StreamingGaussianMixture(**model.get_params()).fit(X)
    assert_same_fit(model, reference, atol=1e-10)
    assert not hasattr(model, "feature_names_in_")


def test_batch_em_over_a_lake_with_a_client_equals_the_local_lake_fit(client, lake) -> None:
    X = pq.read_table(lake.path, columns=lake.feature_names).to_pandas().to_numpy()
    init = start_of(X, 3, seed=1)
    params = dict(n_components=3, algorithm="batch", tol=1e-9, max_iter=40, batch_size=3000, **init)
    source = ParquetSource(lake.path, columns=lake.feature_names)
    on_cluster = StreamingGaussianMixture(**params).fit(source, client=client)
    local = StreamingGaussianMixture(**params).fit(source)
    assert_same_fit(on_cluster, local, atol=1e-10)
    # engine="dask" without a client: the same, on the local thread pool.
    threads = StreamingGaussianMixture(**params).fit(source, engine="dask")
    assert_same_fit(threads, local, atol=1e-10)


def test_nan_policy_skip_on_the_workers_skips_what_the_local_lake_skips(client, data, tmp_path) -> None:
    import pyarrow as pa

    X, _ = data
    X = X.copy()
    X[[5, 700, 8000], [0, 1, 0]] = np.nan
    for i, rows in enumerate(np.array_split(np.arange(X.shape[0]), 3)):
        pq.write_table(
            pa.table({"a": X[rows, 0], "b": X[rows, 1]}), tmp_path / f"part-{i}.parquet", row_group_size=1500
        )
    source = ParquetSource(tmp_path, nan_policy="skip")
    rough = StreamingGaussianMixture(3, random_state=0).fit(source)  # a start near the optimum
    params = dict(
        n_components=3,
        algorithm="batch",
        tol=1e-8,
        max_iter=50,
        weights_init=rough.weights_,
        means_init=rough.means_ + 0.3,
        precisions_init=rough.precisions_,
    )
    on_cluster = StreamingGaussianMixture(**params).fit(source, client=client)
    local = StreamingGaussianMixture(**params).fit(source)
    assert on_cluster.n_skipped_ == local.n_skipped_ == 3
    assert on_cluster.records_seen_ == X.shape[0] - 3 and on_cluster.n_iter_ > 2
    assert_same_fit(on_cluster, local, atol=1e-10)


def test_reseeding_from_the_worst_records_matches_single_process(client, data) -> None:
    """A start with a component far from every record collapses; both re-seed it onto the
    pass's worst-explained records (merged per partition on the cluster)."""
    X, _ = data
    init = start_of(X, 3)
    init["means_init"] = init["means_init"].copy()
    init["means_init"][2] = [1e3, 1e3]
    params = dict(n_components=3, algorithm="batch", tol=1e-9, max_iter=30, batch_size=1000, **init)
    rng = np.random.default_rng(0)
    shift = X.mean(axis=0)
    start = start_fit(ArraySource(X), FitSettings(**params), rng, WeightUnit()).params
    reference = run_batch_em(ArraySource(X), start, shift=shift, reg_covar=1e-6, tol=1e-9, max_iter=30, batch_size=1000)
    source = dask_source(da.from_array(X, chunks=(1500, 2)), client=client)
    on_cluster = run_dask_batch_em(source, start, shift=shift, reg_covar=1e-6, tol=1e-9, max_iter=30, batch_size=1000)
    assert reference.reseeded and [i for i, _ in on_cluster.reseeded] == [i for i, _ in reference.reseeded]
    np.testing.assert_allclose(on_cluster.params.means, reference.params.means, rtol=0, atol=1e-10)


# ---------------------------------------------------------------------- online EM in waves


def test_wave_step_is_the_weight_of_its_mini_batches() -> None:
    schedule = StepSchedule(1.0, 2.0)
    # Three full batches after 4 steps: 1 - (1 - 1/7)(1 - 1/8)(1 - 1/9) = 3/9.
    eta, steps = wave_step_size(schedule, 4, 3 * 100, 100)
    assert steps == 3 and eta == pytest.approx(3 / 9)
    # A short tail batch counts as online_update counts it: a step scaled by its size.
    eta, steps = wave_step_size(schedule, 0, 150, 100)
    assert steps == 2 and eta == pytest.approx(1 - (1 - 1 / 3) * (1 - 0.5 / 4))


@pytest.mark.parametrize("partitions_per_step", [2, 6])
def test_online_em_in_waves_reaches_single_process_online_quality(client, lake, partitions_per_step) -> None:
    truth, names = read_truth(lake.path)
    held_out = pq.read_table(lake.held_out_path, columns=names).to_pandas().to_numpy()
    best = truth.log_likelihood(held_out).mean()
    params = dict(n_components=3, algorithm="online", batch_size=2000, random_state=0)
    source = ParquetSource(lake.path, columns=names)
    local = StreamingGaussianMixture(**params).fit(source)
    frame = lake_frame(lake)[names]
    waves = StreamingGaussianMixture(**params).fit(frame, client=client, partitions_per_step=partitions_per_step)
    assert waves.records_seen_ == 24_000 and waves.n_iter_ == 1
    local_gap = best - local.score(held_out)
    wave_gap = best - waves.score(held_out)
    assert local_gap < 0.01, local_gap
    assert wave_gap < local_gap + 0.005, (wave_gap, local_gap)
    # Steps are counted in mini-batches of batch_size, as in one process.
    assert waves.n_steps_ == pytest.approx(24_000 / 2000, abs=frame.npartitions)


def test_partial_fit_on_dask_continues_the_running_state(client, data) -> None:
    X, _ = data
    model = StreamingGaussianMixture(3, batch_size=1000, random_state=0)
    model.partial_fit(X[:4000])
    steps = model.n_steps_
    model.partial_fit(da.from_array(X[4000:], chunks=(2000, 2)), client=client, partitions_per_step=2)
    assert model.records_seen_ == X.shape[0] and model.n_steps_ == steps + 8
    # Saved and loaded, it continues on one machine.
    local = StreamingGaussianMixture(3, batch_size=1000, random_state=0).fit(X)
    assert model.score(X) == pytest.approx(local.score(X), abs=0.01)


# ---------------------------------------------------------------------- initialisation sample


def test_merged_reservoirs_are_uniform_over_partitions_of_unequal_size() -> None:
    rng = np.random.default_rng(0)
    small, large = np.zeros((100, 1)), np.ones((900, 1))
    from_small = []
    for _ in range(400):
        a = (small[rng.choice(100, 100, replace=False)], 100)
        b = (large[rng.choice(900, 200, replace=False)], 900)
        merged, n = merge_samples(a, b, 200, rng)
        assert n == 1000 and merged.shape == (200, 1)
        from_small.append(np.count_nonzero(merged == 0))
    # Hypergeometric: mean 20, standard deviation ~3.8 per draw, ~0.19 for the mean of 400.
    assert np.mean(from_small) == pytest.approx(20, abs=1.0)


def test_initialisation_sample_is_drawn_on_the_workers(client, data) -> None:
    X, _ = data
    frame = dd.from_pandas(pd.DataFrame(X, columns=["a", "b"]), npartitions=5)
    source = dask_source(frame, client=client)
    sample = source.sample(500, np.random.default_rng(1)).features
    assert sample.shape == (500, 2)
    rows = {tuple(r) for r in X}
    assert all(tuple(r) in rows for r in sample) and len({tuple(r) for r in sample}) == 500
    again = dask_source(frame, client=client).sample(500, np.random.default_rng(1)).features
    np.testing.assert_array_equal(sample, again)  # reproducible from the seed
    everything = source.sample(50_000, np.random.default_rng(2)).features
    np.testing.assert_array_equal(np.sort(everything, axis=0), np.sort(X, axis=0))


# ---------------------------------------------------------------------- responsibilities pass


def read_sorted(path: Path | str):
    return pq.read_table(path).sort_by("id")


def test_assign_a_lake_on_the_cluster_writes_what_the_local_pass_writes(client, lake, tmp_path) -> None:
    model = StreamingGaussianMixture(3, random_state=0).fit(ParquetSource(lake.path, columns=lake.feature_names))
    local = assign(model, lake.path, tmp_path / "local", keep=["id"])
    remote = assign(model, lake.path, tmp_path / "remote", keep=["id"], client=client)
    assert remote.files == local.files  # same inputs, outputs (relative paths), rows
    for entry in local.files:
        a = pq.read_table(tmp_path / "local" / entry["output"])
        b = pq.read_table(tmp_path / "remote" / entry["output"])
        assert a.equals(b) and a.schema.metadata == b.schema.metadata
    manifest = json.loads((tmp_path / "remote" / "_SUCCESS").read_text())
    assert manifest["rows"] == 24_000 and manifest["model_fingerprint"] == model.params_.fingerprint()
    assert sorted(p.name for p in (tmp_path / "remote").rglob("*") if p.name.startswith(".")) == []


def test_assign_a_dask_dataframe_writes_one_file_per_partition(client, lake, tmp_path) -> None:
    names = lake.feature_names
    frame = lake_frame(lake)[["id", *names]]
    model = StreamingGaussianMixture(3, random_state=0).fit(frame[names], client=client)
    summary = assign(model, frame, tmp_path / "out", keep=["id"], dtype="float32", client=client)
    assert [entry["output"] for entry in summary.files] == [f"part-{i:05d}.parquet" for i in range(frame.npartitions)]
    table = read_sorted(tmp_path / "out")
    inputs = read_sorted(lake.path)
    assert table["id"].equals(inputs["id"])
    X = inputs.select(names).to_pandas().to_numpy()
    np.testing.assert_allclose(table["log_likelihood"].to_numpy(), model.score_samples(X), rtol=1e-12)
    np.testing.assert_allclose(
        np.column_stack([table[f"resp_{k}"].to_numpy() for k in range(3)]), model.predict_proba(X), atol=1e-6
    )
    local = assign(
        model, pq.read_table(lake.path, columns=["id", *names]), tmp_path / "local", keep=["id"], dtype="float32"
    )
    expected = read_sorted(local.outputs[0])
    assert table.equals(expected.select(table.column_names))
    assert table.schema.metadata == pq.read_schema(local.outputs[0]).metadata
    assert summary.rows == 24_000 and (tmp_path / "out" / "_SUCCESS").exists()


def test_assign_fails_whole_when_one_partition_is_bad(client, data, tmp_path) -> None:
    X, _ = data
    model = StreamingGaussianMixture(3, random_state=0).fit(X)
    bad = X.copy()
    bad[9000, 1] = np.nan  # in the fourth of five partitions
    frame = dd.from_pandas(pd.DataFrame(bad, columns=["x0", "x1"]), npartitions=5)
    with pytest.raises(DataError, match=r"dask partition 3, row \d+, column 'x1'"):
        assign(model, frame, tmp_path / "out", client=client)
    assert list((tmp_path / "out").rglob("*")) == []  # nothing left: no partial result
    # nan_policy="skip" keeps the row's place with nulls, as locally.
    summary = assign(model, frame, tmp_path / "out", client=client, nan_policy="skip")
    assert summary.skipped == 1 and summary.rows == X.shape[0]


# ---------------------------------------------------------------------- a worker killed mid-fit


def slow_block(seed: int, n: int, delay: float) -> np.ndarray:
    """A block of records that takes ``delay`` seconds to produce (as reading would)."""
    time.sleep(delay)
    X, _, _ = make_mixture(n, 3, 2, random_state=seed)
    return X


def test_a_worker_killed_mid_fit_does_not_change_the_result(client) -> None:
    blocks, n = 6, 1500
    X = np.concatenate([slow_block(i, n, 0.0) for i in range(blocks)])
    array = da.concatenate(
        [
            da.from_delayed(dask.delayed(slow_block, pure=True)(i, n, 0.1), shape=(n, 2), dtype=float)
            for i in range(blocks)
        ]
    )
    init = start_of(X, 3, seed=3)
    rng = np.random.default_rng(0)
    begun = start_fit(ArraySource(X), FitSettings(3, algorithm="batch", **init), rng, WeightUnit())
    start, shift = begun.params, begun.shift
    iterations = 4
    reference = run_batch_em(
        ArraySource(X), start, shift=shift, reg_covar=1e-6, tol=0.0, max_iter=iterations, batch_size=1000
    )

    done: list[int] = []
    killed: dict[str, object] = {}

    pids = client.run(os.getpid)  # {worker address: process id}

    def kill_a_busy_worker() -> None:
        while not done:
            time.sleep(0.01)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            busy = [address for address, keys in client.processing().items() if keys]
            if busy:
                killed["iterations_done"] = len(done)
                killed["pid"] = pids[busy[0]]
                os.kill(pids[busy[0]], signal.SIGKILL)
                return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    source = dask_source(array, client=client)
    result = run_dask_batch_em(
        source,
        start,
        shift=shift,
        reg_covar=1e-6,
        tol=0.0,
        max_iter=iterations,
        batch_size=1000,
        on_iteration=lambda i, _: done.append(i),
    )
    killer.join()
    assert "pid" in killed, "no worker was busy to kill"
    assert 1 <= killed["iterations_done"] < iterations  # the kill came mid-fit, during a pass
    assert killed["pid"] not in client.run(os.getpid).values()  # that worker is gone
    assert result.n_iter == iterations
    np.testing.assert_allclose(result.params.means, reference.params.means, rtol=0, atol=1e-10)
    np.testing.assert_allclose(result.params.covariances, reference.params.covariances, rtol=0, atol=1e-10)
    np.testing.assert_allclose(result.history, reference.history, rtol=0, atol=1e-10)


# ---------------------------------------------------------------------- faces


def test_cli_fit_and_assign_on_a_scheduler_address(cluster, lake, tmp_path, capsys) -> None:
    address = cluster.scheduler_address
    model = tmp_path / "m.sgmm"
    assert (
        main(
            [
                "fit",
                str(lake.path),
                "-k",
                "3",
                "--model",
                str(model),
                "--columns",
                "x0,x1,x2",
                "--algorithm",
                "batch",
                "--scheduler",
                address,
                "--json",
                "-q",
            ]
        )
        == 0
    )
    fitted = json.loads(capsys.readouterr().out)
    assert fitted["records"] == 24_000 and fitted["files"] == 6
    assert (
        main(
            [
                "assign",
                str(lake.path),
                "--model",
                str(model),
                "--out",
                str(tmp_path / "out"),
                "--keep",
                "id",
                "--scheduler",
                address,
                "--json",
                "-q",
            ]
        )
        == 0
    )
    assigned = json.loads(capsys.readouterr().out)
    assert assigned["records"] == 24_000 and assigned["files"] == 6
    # The same model scores the same: the files equal a local pass's.
    assert (
        main(["assign", str(lake.path), "--model", str(model), "--out", str(tmp_path / "local"), "--keep", "id", "-q"])
        == 0
    )
    assert read_sorted(tmp_path / "out").equals(read_sorted(tmp_path / "local"))
    with pytest.raises(SystemExit) as usage:
        main(["fit", str(lake.path), "-k", "3", "--model", str(model), "--workers", "2", "--scheduler", address])
    assert usage.value.code == 2


def test_fit_options_are_checked(data) -> None:
    X, _ = data
    with pytest.raises(ValueError, match="engine"):
        StreamingGaussianMixture(2).fit(X, engine="spark")
    with pytest.raises(ValueError, match="Dask inputs only"):
        StreamingGaussianMixture(2).fit(X, partitions_per_step=2)
    with pytest.raises(ValueError, match="partitions_per_step"):
        StreamingGaussianMixture(2).fit(da.from_array(X, chunks=(5000, 2)), partitions_per_step=0)
    with pytest.raises(ValueError, match="shuffle"):
        StreamingGaussianMixture(2, shuffle="records").fit(da.from_array(X, chunks=(5000, 2)))
    with pytest.raises(TypeError, match="assign"):
        StreamingGaussianMixture(2).fit(X).predict(da.from_array(X, chunks=(5000, 2)))
    bad = X.copy()
    bad[7000, 0] = np.inf
    with pytest.raises(DataError, match=r"dask partition 1, row 1000, column 'a'"):
        StreamingGaussianMixture(2).fit(dd.from_pandas(pd.DataFrame(bad, columns=["a", "b"]), npartitions=2))
    with pytest.raises(TypeError, match="never streamed to the client"):
        next(iter(dask_source(da.from_array(X, chunks=(5000, 2))).batches(10)))


def test_dask_ml_incremental_uses_partial_fit(client, data) -> None:
    wrappers = pytest.importorskip("dask_ml.wrappers", reason="dask-ml is not installed")
    X, _ = data
    array = da.from_array(X, chunks=(3000, 2))
    incremental = wrappers.Incremental(
        StreamingGaussianMixture(3, batch_size=1000, random_state=0), shuffle_blocks=False
    )
    incremental.fit(array)
    fitted = incremental.estimator_
    assert fitted.records_seen_ == X.shape[0] and fitted.n_iter_ == 4  # one partial_fit per block
    # Equal to the same partial_fit calls in one process.
    local = StreamingGaussianMixture(3, batch_size=1000, random_state=0)
    for start in range(0, X.shape[0], 3000):
        local.partial_fit(X[start : start + 3000])
    np.testing.assert_allclose(fitted.means_, local.means_, rtol=0, atol=1e-12)
    labels = incremental.predict(array).compute()
    np.testing.assert_array_equal(labels, local.predict(X))


def test_dask_cluster_job_fits_and_scores_a_lake_on_a_local_cluster(lake, tmp_path) -> None:
    import subprocess

    script = Path(__file__).resolve().parents[2] / "pipelines" / "dask_cluster_job.py"
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            str(lake.path),
            "--out",
            "scored",
            "--workers",
            "2",
            "-k",
            "3",
            "--passthrough",
            "id",
            "--keep",
            "id",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    fitted, scored = (json.loads(line) for line in result.stdout.splitlines())
    assert fitted["workers"] == 2 and fitted["records"] == scored["records"] == 24_000
    assert fitted["features"] == lake.feature_names and scored["files"] == 6
    model = StreamingGaussianMixture.load(tmp_path / "scored.model.sgmm")
    truth, names = read_truth(lake.path)
    held_out = pq.read_table(lake.held_out_path, columns=names).to_pandas().to_numpy()
    assert truth.log_likelihood(held_out).mean() - model.score(held_out) < 0.01
    assert (
        sorted(p.relative_to(tmp_path / "scored").as_posix() for p in (tmp_path / "scored").rglob("*.parquet"))
        == lake.files
    )
    assert (tmp_path / "scored" / "_SUCCESS").exists()
