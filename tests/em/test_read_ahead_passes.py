"""The EM passes read their mini-batches ahead (:func:`streamgmm.io.sources.read_ahead.batches_ahead`):
the records, their order and so the fitted parameters are those of reading in the caller's
thread; a reading error reaches the caller naming its chunk; no reading thread outlives a pass."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from shared_helpers import all_records

from streamgmm import make_mixture
from streamgmm.em.batch import full_pass_statistics, run_batch_em
from streamgmm.em.online import OnlineState, StepSchedule, run_online_em
from streamgmm.io.sources.chunk_source import ArraySource, IterableSource
from streamgmm.io.sources.read_ahead import batches_ahead

THREAD = "streamgmm-batches-ahead"


def reading_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == THREAD]


@pytest.fixture(scope="module")
def data():
    X, _, truth = make_mixture(12_000, 3, 3, random_state=2)
    return X, truth


def chunks_of(X: np.ndarray, size: int = 1700) -> list[np.ndarray]:
    return [X[start : start + size] for start in range(0, X.shape[0], size)]


def test_batches_come_in_order_from_the_reading_thread(data):
    X, _ = data
    readers = set()

    def chunks():
        for chunk in chunks_of(X):
            readers.add(threading.current_thread().name)
            yield chunk

    batches = list(batches_ahead(IterableSource(chunks), 1000))
    np.testing.assert_array_equal(all_records(batches), X)
    assert [b.n_records for b in batches] == [1000] * 12
    assert readers == {THREAD}
    assert reading_threads() == []


def test_an_array_is_read_in_place(data):
    X, _ = data
    batches = batches_ahead(ArraySource(X), 1000)
    first = next(batches)
    assert reading_threads() == []
    assert np.shares_memory(first.features, X)


def test_online_em_over_a_stream_equals_online_em_over_the_array(data):
    """The oracle: the same recursion over the in-memory array, read in the caller's thread."""
    X, truth = data
    start = OnlineState.start(truth, X.mean(axis=0))
    kwargs = dict(schedule=StepSchedule(0.7), burn_in=0, reg_covar=1e-6, batch_size=500, max_passes=2)
    streamed = run_online_em(IterableSource(lambda: iter(chunks_of(X))), start, **kwargs)
    in_place = run_online_em(ArraySource(X), start, **kwargs)
    for name in ("weights", "means", "covariances"):
        np.testing.assert_array_equal(getattr(streamed.state.params, name), getattr(in_place.state.params, name))
    assert streamed.pass_log_likelihoods == in_place.pass_log_likelihoods
    assert reading_threads() == []


def test_exact_em_over_a_stream_equals_exact_em_over_the_array(data):
    X, truth = data
    kwargs = dict(shift=X.mean(axis=0), reg_covar=1e-6, tol=0.0, max_iter=3, batch_size=700)
    streamed = run_batch_em(IterableSource(lambda: iter(chunks_of(X))), truth, **kwargs)
    in_place = run_batch_em(ArraySource(X), truth, **kwargs)
    np.testing.assert_allclose(streamed.params.means, in_place.params.means, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(streamed.history, in_place.history, rtol=1e-13)


def test_a_reading_error_reaches_the_pass_once_and_stops_the_thread(data):
    X, truth = data

    def chunks():
        yield X[:3000]
        yield np.full((10, 2), 1.0)  # wrong width: the source names the chunk

    with pytest.raises(ValueError, match="chunk 1"):
        full_pass_statistics(IterableSource(chunks), truth, X.mean(axis=0), 1000)
    assert reading_threads() == []


def test_a_failing_e_step_stops_the_reading_thread(data, monkeypatch):
    X, truth = data
    import streamgmm.em.online as online

    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise FloatingPointError("the E-step failed")
        return chunk_statistics(*args, **kwargs)

    chunk_statistics = online.chunk_statistics
    monkeypatch.setattr(online, "chunk_statistics", failing)
    endless = IterableSource(lambda: (X[:500] for _ in range(10**6)))
    start = OnlineState.start(truth, X.mean(axis=0))
    with pytest.raises(FloatingPointError):
        run_online_em(endless, start, schedule=StepSchedule(), burn_in=0, reg_covar=1e-6, batch_size=500)
    assert reading_threads() == []


def test_batches_are_handed_over_column_major(data):
    """The layout the E-step kernels read (each feature's records contiguous), same values."""
    X, _ = data
    rows = np.ascontiguousarray(X)
    batches = list(batches_ahead(IterableSource([rows[:2500], rows[2500:]]), 1000))
    assert all(batch.features.strides[0] == batch.features.itemsize for batch in batches)
    np.testing.assert_array_equal(all_records(batches), X)
