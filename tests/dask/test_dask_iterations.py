"""Batch EM iterations on a ``distributed`` cluster (:mod:`streamgmm.dask.on_workers`): the
parameters travel once per iteration, one task per worker reads that worker's files, decoded
partitions persist on the workers when asked. Oracle: the single-process batch EM from the same
start over the same lake (to 1e-10), on 1 and 2 worker processes, with and without persist."""

from __future__ import annotations

import gc
import re
import shutil
import sys
import time
import weakref

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

import cloudpickle  # noqa: E402 (distributed's dependency)
import dask.dataframe as dd  # noqa: E402
from distributed.diagnostics.plugin import SchedulerPlugin  # noqa: E402

from streamgmm import DataError, StreamingGaussianMixture  # noqa: E402
from streamgmm.dask.em import run_dask_batch_em  # noqa: E402
from streamgmm.dask.on_workers import WorkerPlan, naming  # noqa: E402
from streamgmm.dask.source import dask_source  # noqa: E402
from streamgmm.datasets.synthetic_lake import read_truth  # noqa: E402
from streamgmm.em.batch import run_batch_em  # noqa: E402
from streamgmm.io.sources.parquet import ParquetSource  # noqa: E402
from streamgmm.mixture.params import MixtureParams  # noqa: E402

# The scheduler plugin below is defined here, a module the scheduler cannot import by name.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

ITERATIONS = 4


@pytest.fixture(scope="module")
def one_worker():
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def lake(make_lake):
    return make_lake(
        "dask-iterations", n_records=12_000, n_components=3, n_features=3, n_files=6, row_group_size=1000, seed=11
    )


def lake_source(lake) -> ParquetSource:
    return ParquetSource(lake.path, columns=lake.feature_names)


def start_near(lake) -> tuple[MixtureParams, np.ndarray]:
    """The generating parameters with their means moved: EM has work to do in every iteration."""
    truth, _ = read_truth(lake.path)
    means = truth.means + np.random.default_rng(0).normal(0, 0.5, truth.means.shape)
    start = MixtureParams.from_covariances(truth.weights, means, truth.covariances, truth.covariance_type)
    return start, truth.weights @ truth.means


def batch_em(run, source, lake, on_iteration=None):
    start, shift = start_near(lake)
    return run(
        source,
        start,
        shift=shift,
        reg_covar=1e-6,
        tol=0.0,
        max_iter=ITERATIONS,
        batch_size=1000,
        on_iteration=on_iteration,
    )


def assert_same_result(a, b) -> None:
    assert a.n_iter == b.n_iter == ITERATIONS
    for name in ("weights", "means", "covariances"):
        np.testing.assert_allclose(getattr(a.params, name), getattr(b.params, name), rtol=0, atol=1e-10)
    np.testing.assert_allclose(a.history, b.history, rtol=0, atol=1e-10)
    assert a.statistics.n_records == b.statistics.n_records


class TaskLog(SchedulerPlugin):
    """Every task the scheduler starts: its key and its dependencies' keys."""

    name = "streamgmm-task-log"

    def __init__(self):
        self.started: list[tuple[str, list[str]]] = []

    async def start(self, scheduler) -> None:
        self.scheduler = scheduler

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        if finish == "processing":
            task = self.scheduler.tasks[key]
            self.started.append((str(key), sorted(str(dep.key) for dep in task.dependencies)))


def started_tasks(client) -> list[tuple[str, list[str]]]:
    return client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.plugins[TaskLog.name].started))


@pytest.mark.parametrize("workers", ["one_worker", "client"])
@pytest.mark.parametrize("persist", [True, False])
def test_batch_em_on_the_workers_equals_local_batch_em(request, lake, workers, persist) -> None:
    client = request.getfixturevalue(workers)
    client.wait_for_workers(1 if workers == "one_worker" else 2)
    local = batch_em(run_batch_em, lake_source(lake), lake)
    source = dask_source(lake_source(lake), client=client, persist=persist)
    on_cluster = batch_em(run_dask_batch_em, source, lake)
    assert_same_result(on_cluster, local)
    # Partitions are cached only when asked for, and then every file's records are on the workers.
    assert source.plan.persist == persist and bool(source.plan.futures) == persist
    if persist:
        held = client.who_has(list(source.plan.futures.values()))
        assert len(held) == len(lake.files) and all(held.values())
        # Dropping the source frees it, and so its futures, at once (no reference cycle waits
        # for the collector), and the workers then release the records.
        keys, dropped = list(held), weakref.ref(source)
        gc.disable()
        try:
            del source
            assert dropped() is None
        finally:
            gc.enable()
        deadline = time.monotonic() + 10
        while any(client.who_has(keys).values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(client.who_has(keys).values())


def events(client, topic, action: str) -> list[dict]:
    """The scheduler's log of ``action`` under ``topic``, with the fields used here (read on the
    scheduler: some events hold worker objects that do not serialize)."""

    def read(dask_scheduler) -> list[dict]:
        found = [message for _, message in dask_scheduler.get_events(topic) if message.get("action") == action]
        return [
            {"count": m.get("count"), "key-count": m.get("key-count"), "workers": len(m.get("workers", ()))}
            for m in found
        ]

    return client.run_on_scheduler(read)


@pytest.mark.parametrize("persist", [True, False])
def test_parameters_travel_once_per_iteration_to_one_task_per_worker(client, lake, persist) -> None:
    client.wait_for_workers(2)  # a worker killed by another test is back
    scattered, replicated = len(events(client, client.id, "scatter")), len(events(client, "all", "replicate"))
    client.register_plugin(TaskLog(), name=TaskLog.name)
    try:
        batch_em(run_dask_batch_em, dask_source(lake_source(lake), client=client, persist=persist), lake)
        started = started_tasks(client)
    finally:
        client.unregister_scheduler_plugin(TaskLog.name)
    n_workers = len(client.scheduler_info()["workers"])
    assert n_workers == 2
    # One scatter of one value per iteration, replicated to every worker (broadcast).
    assert [event["count"] for event in events(client, client.id, "scatter")[scattered:]] == [1] * ITERATIONS
    copies = events(client, "all", "replicate")[replicated:]
    assert [(event["key-count"], event["workers"]) for event in copies] == [(1, n_workers)] * ITERATIONS
    groups = [(key, deps) for key, deps in started if key.startswith("_run_group-")]
    decodes = [key for key, _ in started if key.startswith("decode_partition-")]
    assert len(groups) == ITERATIONS * n_workers  # one task per worker and iteration, not one per file
    assert len(decodes) == (len(lake.files) if persist else 0)  # each file decoded once, when persisted
    # Each task reads the parameters from the iteration's scattered value; none carries its own.
    shared = [[dep for dep in deps if dep.startswith("streamgmm-shared-")] for _, deps in groups]
    assert all(len(keys) == 1 for keys in shared)
    per_iteration = [{keys[0] for keys in shared[i : i + n_workers]} for i in range(0, len(shared), n_workers)]
    assert [len(keys) for keys in per_iteration] == [1] * ITERATIONS
    assert len(set.union(*per_iteration)) == ITERATIONS


@pytest.mark.parametrize("persist", [True, False])
def test_a_file_that_fails_on_a_worker_fails_the_fit_naming_it_unless_persisted(
    client, lake, tmp_path, persist
) -> None:
    local = batch_em(run_batch_em, lake_source(lake), lake)
    copy = tmp_path / "lake"
    shutil.copytree(lake.path, copy)
    bad = copy / lake.files[2]
    source = dask_source(ParquetSource(copy, columns=lake.feature_names), client=client, persist=persist)

    def corrupt(iteration: int, _: float) -> None:
        if iteration == 1:  # after the first pass read every file
            bad.write_bytes(b"not parquet at all")

    if persist:  # later passes read the workers' copies, not the file
        assert_same_result(batch_em(run_dask_batch_em, source, lake, corrupt), local)
    else:
        with pytest.raises(DataError, match=re.escape(str(bad))):
            batch_em(run_dask_batch_em, source, lake, corrupt)


def test_auto_persists_what_fits_in_the_workers_memory(client, lake) -> None:
    assert WorkerPlan(dask_source(lake_source(lake), client=client), client).persist
    frame = dd.read_parquet([str(lake.path / name) for name in lake.files])
    assert not WorkerPlan(dask_source(frame, client=client), client).persist  # size unknown before reading
    source = dask_source(lake_source(lake), client=client)
    memory = sum(info["memory_limit"] for info in client.scheduler_info()["workers"].values())
    assert source.decoded_bytes == 8 * 3 * 12_000 < memory
    with pytest.raises(ValueError, match="persist"):
        dask_source(lake_source(lake), client=client, persist="always")


def test_a_dask_source_with_persist_is_fitted_as_given(client, lake) -> None:
    start, _ = start_near(lake)
    options = dict(algorithm="batch", tol=0.0, max_iter=3, batch_size=1000)
    init = dict(weights_init=start.weights, means_init=start.means, precisions_init=start.precisions)
    source = dask_source(lake_source(lake), client=client, persist=True)
    with pytest.warns(Warning):  # max_iter stops it, as asked
        on_cluster = StreamingGaussianMixture(3, **options, **init).fit(source)
    assert len(source.plan.futures) == len(lake.files)
    with pytest.warns(Warning):
        local = StreamingGaussianMixture(3, **options, **init).fit(lake_source(lake))
    np.testing.assert_allclose(on_cluster.means_, local.means_, rtol=0, atol=1e-10)


def test_fit_takes_persist_for_a_lake_on_a_cluster_and_refuses_it_elsewhere(client, lake) -> None:
    start, _ = start_near(lake)
    options = dict(algorithm="batch", tol=0.0, max_iter=2, batch_size=1000)
    init = dict(weights_init=start.weights, means_init=start.means, precisions_init=start.precisions)
    fitted = {}
    for persist in (True, False):
        with pytest.warns(Warning):  # max_iter stops it, as asked
            fitted[persist] = StreamingGaussianMixture(3, **options, **init).fit(
                lake_source(lake), client=client, persist=persist
            )
    np.testing.assert_allclose(fitted[True].means_, fitted[False].means_, rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="persist applies to Dask inputs only"):
        StreamingGaussianMixture(3).fit(lake_source(lake), persist=True)


def test_a_cluster_pass_reports_its_records_as_workers_finish(client, lake) -> None:
    """What the CLI's progress bar counts: every pass reports each worker's share, so the
    reports add up to the lake's records once per pass."""
    start, _ = start_near(lake)
    init = dict(weights_init=start.weights, means_init=start.means, precisions_init=start.precisions)
    for persist in (True, False):
        source = dask_source(lake_source(lake), client=client, persist=persist)
        reports: list[int] = []
        source.progress = reports.append
        with pytest.warns(Warning):  # max_iter stops it, as asked
            model = StreamingGaussianMixture(3, algorithm="batch", tol=0.0, max_iter=2, **init).fit(source)
        assert sum(reports) == model.n_iter_ * lake.n_records and len(reports) >= model.n_iter_


def test_errors_on_a_worker_name_the_partition() -> None:
    with pytest.raises(DataError, match=r"^day=1/part-2\.parquet: cannot read \(FileNotFoundError: gone\)$"):
        with naming("day=1/part-2.parquet"):
            raise FileNotFoundError("gone")
    with pytest.raises(ZeroDivisionError) as raised:
        with naming("dask partition 4"):
            raise ZeroDivisionError("x")
    assert raised.value.__notes__ == ["while reading dask partition 4 on a Dask worker"]
    with pytest.raises(DataError, match=r"^f\.parquet: row group 3$"):  # already named: as it is
        with naming("f.parquet"):
            raise DataError("f.parquet: row group 3")
