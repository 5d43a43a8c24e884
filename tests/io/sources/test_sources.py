"""Sources: re-batching, reservoir sampling, shuffling, one-shot iterators."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from shared_helpers import all_records

from streamgmm import StreamingGaussianMixture
from streamgmm.io.sources.chunk_source import ArraySource, IterableSource, rebatch, reservoir_sample


def positions(n: int, d: int = 1) -> np.ndarray:
    """Records whose first value is their position in the stream, so order can be checked."""
    X = np.zeros((n, d))
    X[:, 0] = np.arange(n)
    return X


def split(X: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    return np.split(X, np.cumsum(sizes)[:-1])


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 40), min_size=1, max_size=12), batch_size=st.integers(1, 17))
def test_rebatch_gives_exact_batches_in_order(sizes: list[int], batch_size: int) -> None:
    X = positions(sum(sizes), d=2)
    batches = list(rebatch(split(X, sizes), batch_size))
    assert all(b.shape == (batch_size, 2) for b in batches[:-1])
    if batches:
        assert 0 < batches[-1].shape[0] <= batch_size
    assert len(batches) == math.ceil(X.shape[0] / batch_size)
    np.testing.assert_array_equal(np.concatenate(batches) if batches else X[:0], X)


def test_rebatch_passes_right_sized_chunks_through_without_copying() -> None:
    X = positions(30)
    chunks = split(X, [10, 10, 10])
    batches = list(rebatch(chunks, 10))
    assert all(np.shares_memory(b, X) for b in batches)


def inclusion_p_value(hits: np.ndarray, trials: int, size: int) -> float:
    """p-value of "every position is kept with probability size / n".

    Over independent trials each position's count is Binomial(trials, p), p = size / n. Within a
    trial the indicators are negatively correlated (exactly ``size`` are kept), which makes
    sum (hits - T p)^2 / (T p (1 - p)) distributed as n / (n - 1) * chi2(n - 1)."""
    n = hits.size
    p = size / n
    q = ((hits - trials * p) ** 2).sum() / (trials * p * (1 - p))
    return float(stats.chi2.sf(q * (n - 1) / n, n - 1))


def algorithm_r(records: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """The textbook sequential reservoir (Vitter's Algorithm R), one record at a time."""
    reservoir = list(records[:size])
    for i in range(size, records.shape[0]):
        j = rng.integers(0, i + 1)
        if j < size:
            reservoir[j] = records[i]
    return np.array(reservoir).reshape(-1, records.shape[1])


@pytest.mark.parametrize("sizes", [[7, 1, 22, 1, 14, 15], [60], [1] * 60, [3, 40, 17], [0, 10, 0, 50]])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reservoir_sample_is_algorithm_r_whatever_the_chunking(sizes: list[int], seed: int) -> None:
    # Vectorised per chunk, it draws the same slots as the sequential algorithm (numpy draws an
    # array of bounded integers element by element) and a later record in a chunk wins a slot
    # over an earlier one, as in the sequence; so the samples must be identical.
    X = positions(sum(sizes), d=2)
    expected = algorithm_r(X, 10, np.random.default_rng(seed))
    np.testing.assert_array_equal(reservoir_sample(split(X, sizes), 10, np.random.default_rng(seed)), expected)


def test_reservoir_sample_is_uniform_over_positions() -> None:
    sizes = [7, 1, 22, 1, 14, 15]  # the reservoir fills mid-chunk, then chunks of every kind
    n, size, trials = sum(sizes), 10, 4000
    rng = np.random.default_rng(2024)  # fixed: the test is deterministic, not flaky
    chunks = split(positions(n, d=2), sizes)
    hits = np.zeros(n)
    for _ in range(trials):
        sample = reservoir_sample(chunks, size, rng)
        assert sample.shape == (size, 2)
        kept = sample[:, 0].astype(int)
        assert np.unique(kept).size == size  # distinct positions, never a record twice
        hits[kept] += 1
    assert hits.sum() == trials * size
    p_value = inclusion_p_value(hits, trials, size)
    assert p_value > 1e-3, (p_value, hits)


def test_inclusion_test_rejects_a_biased_sampler() -> None:
    """The statistic has power: a sampler that slightly favours the head of the stream fails."""
    n, size, trials = 60, 10, 3000
    rng = np.random.default_rng(12345)
    weights = np.linspace(1.3, 0.7, n)
    hits = np.zeros(n)
    for _ in range(trials):
        hits[rng.choice(n, size, replace=False, p=weights / weights.sum())] += 1
    assert inclusion_p_value(hits, trials, size) < 1e-6


def test_reservoir_of_a_short_stream_is_the_stream() -> None:
    X = np.arange(12.0).reshape(-1, 2)
    np.testing.assert_array_equal(reservoir_sample([X[:2], X[2:]], 100, np.random.default_rng(0)), X)
    np.testing.assert_array_equal(reservoir_sample([X], 6, np.random.default_rng(0)), X)


@pytest.mark.parametrize("batch_size", [1, 128, 1000, 5000])
def test_shuffled_array_batches_cover_every_row_once(batch_size: int) -> None:
    X = positions(1000, d=3)
    batches = list(ArraySource(X).batches(batch_size, np.random.default_rng(3)))
    assert [b.n_records for b in batches] == [min(batch_size, 1000 - s) for s in range(0, 1000, batch_size)]
    seen = all_records(batches)[:, 0]
    np.testing.assert_array_equal(np.sort(seen), np.arange(1000))  # every row exactly once
    if batch_size < 1000:
        assert not np.array_equal(seen, np.arange(1000))  # really shuffled
    # Rows are whole records, not mixed-up values.
    np.testing.assert_array_equal(all_records(batches)[:, 1:], 0.0)


def test_unshuffled_array_batches_are_in_order() -> None:
    X = positions(1000)
    np.testing.assert_array_equal(all_records(ArraySource(X).batches(333)), X)


class CountingChunks:
    """A one-shot iterator of chunks that records how many chunks were pulled."""

    def __init__(self, chunks: list[np.ndarray]):
        self._chunks = iter(chunks)
        self.pulled = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        return self

    def __next__(self) -> np.ndarray:
        chunk = next(self._chunks)
        self.pulled += 1
        return chunk


def test_one_shot_iterator_replays_the_buffered_head() -> None:
    X = positions(100, d=2)
    chunks = CountingChunks(split(X, [10] * 10))
    source = IterableSource(chunks)
    assert not source.reiterable
    head = source.sample(25, np.random.default_rng(0))
    np.testing.assert_array_equal(head.features, X[:25])
    assert chunks.pulled == 3  # only as much of the stream as the sample needs
    np.testing.assert_array_equal(all_records(source.batches(7)), X)  # each record once, in order
    assert chunks.pulled == 10
    with pytest.raises(ValueError, match="already been streamed once"):
        list(source.batches(7))


def test_one_shot_iterator_error_names_the_right_chunk_after_an_empty_head_chunk() -> None:
    # Empty chunks are skipped but still count: the NaN is in the fourth chunk yielded (index 3).
    X = positions(40, d=2)
    bad = X[20:].copy()
    bad[5, 1] = np.nan
    source = IterableSource(iter([X[:0], X[:10], X[10:20], bad]))
    source.sample(5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="chunk 3: Input contains NaN at row 5, column 1"):
        list(source.batches(8))


@pytest.mark.parametrize("init_size", [50, 1000, 1234, 10_000])
def test_fit_on_a_generator_uses_each_record_once(init_size: int) -> None:
    rng = np.random.default_rng(1)
    X = np.vstack([rng.normal(-4, 1, (3000, 2)), rng.normal(4, 1, (3000, 2))])[rng.permutation(6000)]
    chunks = CountingChunks([X[i : i + 300] for i in range(0, 6000, 300)])
    model = StreamingGaussianMixture(2, init_size=init_size, batch_size=500, random_state=0).fit(chunks)
    # The head buffered for the initialisation sample is replayed, not skipped or repeated.
    assert model.records_seen_ == 6000
    assert model.n_steps_ == 12
    assert chunks.pulled == 20
    np.testing.assert_allclose(np.sort(model.means_[:, 0]), [-4, 4], atol=0.1)


def test_hostile_an_object_with_batches_and_sample_but_not_the_rest_is_refused_naming_it() -> None:
    """A user's object is taken as a source only when it has all of the protocol, not as far as
    the first attribute the fit happens to read."""
    from streamgmm import StreamingGaussianMixture

    class Partial:
        def batches(self, batch_size, rng=None):
            yield np.ones((4, 2))

        def sample(self, size, rng):
            return np.ones((4, 2))

    with pytest.raises(TypeError, match=r"Partial is not a source: it has no reiterable, n_features, feature_names"):
        StreamingGaussianMixture(2).fit(Partial())
    # The same object with every attribute of the protocol is a source.
    whole = ArraySource(np.random.default_rng(0).normal(size=(400, 2)))
    assert StreamingGaussianMixture(2, random_state=0).fit(whole).means_.shape == (2, 2)
