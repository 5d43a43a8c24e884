"""Births and merges in Dask online waves: each partition of a wave returns its novel records (at
most the moves' reservoir capacity, weighted to the partition's whole novel weight) and their
statistics; the client tracks them and proposes births once per wave. On the real two-process
cluster of ``conftest.py`` and on Dask's local thread pool. Oracles: the generating means of a
stream sorted by cluster, the E-step without novelty (bit for bit), and the waves replayed in
this process with :func:`~streamgmm.em.online.blend_step` and no novel records (moves off)."""

from __future__ import annotations

import functools
import operator

import numpy as np
import pytest

pytest.importorskip("dask.dataframe")
pytest.importorskip("distributed")

import dask.array as da  # noqa: E402
import dask.dataframe as dd  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402

from streamgmm import StreamingGaussianMixture  # noqa: E402
from streamgmm.dask.em import (  # noqa: E402
    NoveltyDraw,
    partition_statistics,
    partition_statistics_with_novelty,
    run_dask_online_em,
    wave_step_size,
)
from streamgmm.dask.source import dask_source  # noqa: E402
from streamgmm.em.novelty import novel_rows  # noqa: E402
from streamgmm.em.online import OnlineState, StepSchedule, blend_step  # noqa: E402
from streamgmm.io.sources.chunk_source import ArraySource  # noqa: E402
from streamgmm.kernels.chunk import chunk_statistics  # noqa: E402
from streamgmm.mixture.params import MixtureParams  # noqa: E402

CENTRES = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
PER_CLUSTER = 3000
PARTITION = 1000  # three partitions per cluster, in cluster order


@pytest.fixture(scope="module")
def sorted_clusters() -> np.ndarray:
    """Three well separated 2-D Gaussian clusters, one after the other."""
    rng = np.random.default_rng(3)
    return np.concatenate([rng.normal(centre, 1.0, (PER_CLUSTER, 2)) for centre in CENTRES])


def matched_error(means: np.ndarray) -> float:
    """The largest distance between a generating mean and its fitted mean, matched one to one."""
    cost = np.linalg.norm(means[:, None, :] - CENTRES[None, :, :], axis=2)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].max())


def collection(X: np.ndarray, kind: str):
    if kind == "array":  # known size: cached on the workers (persist="auto")
        return da.from_array(X, chunks=(PARTITION, 2))
    return dd.from_pandas(pd.DataFrame(X, columns=["a", "b"]), npartitions=X.shape[0] // PARTITION)


# ---------------------------------------------------------------------- one partition's novel records


def test_a_partition_returns_a_bounded_sample_of_its_novel_records_weighted_to_all_of_them() -> None:
    rng = np.random.default_rng(0)
    params = MixtureParams.from_covariances(np.ones(1), np.zeros((1, 2)), np.ones(1), "spherical")
    near = rng.normal(0.0, 1.0, (1000, 2))
    far = rng.normal(20.0, 1.0, (900, 2))  # outside the component's ellipsoid: novel
    X = np.concatenate([near, far])
    weights = np.concatenate([np.ones(1000), np.repeat([1.0, 9.0], 450)])
    order = rng.permutation(X.shape[0])  # the novel records spread over the mini-batches
    X, weights = X[order], weights[order]
    is_novel = novel_rows(X, params.log_likelihood(X), params)  # the far ones and a few near ones
    assert is_novel.sum() > 900
    matrix = np.column_stack([X, weights])
    shift = np.array([0.5, -0.5])

    def run(index: int, capacity: int):
        source = ArraySource.with_weight_column(matrix)
        draw = NoveltyDraw(seed=5, step=7, capacity=capacity)
        return partition_statistics_with_novelty(source, index, params, shift, 256, np.float64, draw)

    result = run(2, 100)
    # The wave's statistics and worst records are those of the E-step without novelty, bit for bit.
    plain = partition_statistics(ArraySource.with_weight_column(matrix), params, shift, 256)
    for name in ("counts", "sums", "second", "log_likelihood", "n_records"):
        np.testing.assert_array_equal(getattr(result.statistics, name), getattr(plain.statistics, name))
    np.testing.assert_array_equal(result.worst_records, plain.worst_records)
    novel = result.novel
    # At most the capacity, every one novel, weighing together what all novel records weigh.
    assert novel.records.shape == (100, 2) and np.isin(novel.records, X[is_novel]).all()
    assert novel.weights.sum() == pytest.approx(weights[is_novel].sum(), rel=1e-12)
    # Drawn in proportion to record weight: nine in ten from the records of weight 9.
    heavy = np.isin(novel.records, X[is_novel & (weights == 9)]).all(axis=1)
    assert heavy.mean() > 0.75
    # Drawn in proportion to weight already, each stands for an equal share of the total.
    np.testing.assert_allclose(novel.weights, novel.weights[0], rtol=1e-12)
    # The statistics are those of every novel record, not of the sample.
    expected = chunk_statistics(X[is_novel], params, shift, weights=weights[is_novel])[0]
    np.testing.assert_allclose(novel.statistics.counts, expected.counts, rtol=1e-12)
    np.testing.assert_allclose(novel.statistics.sums, expected.sums, rtol=1e-12)
    # The draw is seeded by (seed, step, partition): the same again, another for another partition.
    np.testing.assert_array_equal(run(2, 100).novel.records, novel.records)
    assert not np.array_equal(run(3, 100).novel.records, novel.records)
    # Within the capacity: all of them, in order, with their own weights.
    everything = run(2, 1000).novel
    np.testing.assert_array_equal(everything.records, X[is_novel])
    np.testing.assert_array_equal(everything.weights, weights[is_novel])


# ---------------------------------------------------------------------- births in waves


@pytest.mark.parametrize("kind", ["array", "frame", "threads"])
def test_waves_give_each_cluster_of_a_sorted_stream_a_component(client, sorted_clusters, kind) -> None:
    """A model that has seen only the first cluster continues over partitions sorted by cluster
    (a cold fit on Dask would not do: its initialisation sample is drawn from every partition).
    With moves, each later cluster is born a component; without, the three components stay
    spread between the clusters."""
    X = sorted_clusters
    data = collection(X, "frame" if kind == "threads" else kind)
    on = {} if kind == "threads" else {"client": client}
    fits = {}
    for moves in ("auto", "auto", "off"):
        model = StreamingGaussianMixture(
            3, algorithm="online", shuffle=False, moves=moves, batch_size=500, random_state=0
        ).fit(X[:PARTITION])
        model.set_params(warm_start=True).fit(data, partitions_per_step=2, **on)
        assert model.records_seen_ == PARTITION + X.shape[0]
        fits.setdefault(moves, []).append(model)
    found, again = fits["auto"]
    assert matched_error(found.means_) < 0.2, found.means_
    births = [move for move in found.fit_history_.moves if move["kind"] == "birth"]
    assert len(births) >= 1
    # Every draw is seeded: a second fit takes the same moves to the same model.
    assert again.fit_history_.moves == found.fit_history_.moves
    np.testing.assert_array_equal(again.means_, found.means_)
    (missed,) = fits["off"]
    assert matched_error(missed.means_) > 1.0 and missed.fit_history_.moves == []


# ---------------------------------------------------------------------- moves off: the waves as they were


def test_waves_without_moves_blend_the_partitions_statistics_alone(client, sorted_clusters) -> None:
    """Without moves a wave is its partitions' statistics summed and blended with one step, no
    novel records: replayed here partition by partition, it is the cluster's run bit for bit."""
    X = sorted_clusters
    start = MixtureParams.from_covariances(np.full(3, 1 / 3), X[:3], np.stack([np.eye(2)] * 3), "full")
    shift = X[:PARTITION].mean(axis=0)
    schedule, batch_size, per_wave = StepSchedule(), 500, 2
    state = OnlineState.start(start, shift)
    assert state.moves is None
    result = run_dask_online_em(
        dask_source(da.from_array(X, chunks=(PARTITION, 2)), client=client),
        state,
        schedule=schedule,
        burn_in=0,
        reg_covar=1e-6,
        batch_size=batch_size,
        partitions_per_step=per_wave,
    )
    n_partitions = X.shape[0] // PARTITION
    for first in range(0, n_partitions, per_wave):
        parts = [
            partition_statistics(ArraySource(X[i * PARTITION : (i + 1) * PARTITION]), state.params, shift, batch_size)
            for i in range(first, min(first + per_wave, n_partitions))
        ]
        wave = functools.reduce(operator.add, parts)
        eta, steps = wave_step_size(schedule, state.step, wave.statistics.n_records, batch_size)
        state, _ = blend_step(state, wave.statistics, wave.worst_records, eta, steps, 0, 1e-6)
    final = result.state
    assert final.moves is None and final.step == state.step == X.shape[0] // batch_size
    for name in ("weights", "means", "covariances"):
        np.testing.assert_array_equal(getattr(final.params, name), getattr(state.params, name))
    for name in ("counts", "sums", "second"):
        np.testing.assert_array_equal(getattr(final.statistics, name), getattr(state.statistics, name))
