"""Sources: re-batching, reservoir sampling, shuffling, one-shot iterators."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from streamgmm import StreamingGaussianMixture
from streamgmm.sources import ArraySource, IterableSource, rebatch, reservoir_sample


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 40), min_size=1, max_size=12), batch_size=st.integers(1, 17))
def test_rebatch_gives_exact_batches_in_order(sizes: list[int], batch_size: int) -> None:
    total = sum(sizes)
    X = np.arange(total, dtype=float).reshape(-1, 1)
    chunks = np.split(X, np.cumsum(sizes)[:-1])
    batches = list(rebatch(chunks, batch_size))
    assert all(b.shape[0] == batch_size for b in batches[:-1])
    if batches:
        assert 0 < batches[-1].shape[0] <= batch_size
    np.testing.assert_array_equal(np.concatenate(batches) if batches else X[:0], X)


def test_reservoir_sample_is_uniform() -> None:
    n, size, trials = 60, 10, 4000
    rng = np.random.default_rng(12345)
    X = np.arange(n, dtype=float).reshape(-1, 1)
    chunks = np.split(X, [7, 8, 30, 31, 45])
    hits = np.zeros(n)
    for _ in range(trials):
        sample = reservoir_sample(chunks, size, rng)
        assert sample.shape == (size, 1)
        assert len(np.unique(sample)) == size  # distinct positions
        hits[sample[:, 0].astype(int)] += 1
    # Every record is kept with probability size / n; a chi-square test over positions.
    expected = np.full(n, trials * size / n)
    p_value = stats.chisquare(hits, expected).pvalue
    assert p_value > 1e-3, p_value


def test_reservoir_of_a_short_stream_is_the_stream() -> None:
    X = np.arange(12.0).reshape(-1, 2)
    np.testing.assert_array_equal(reservoir_sample([X[:2], X[2:]], 100, np.random.default_rng(0)), X)


def test_shuffled_array_batches_cover_every_row_once() -> None:
    X = np.arange(1000.0).reshape(-1, 1)
    batches = list(ArraySource(X).batches(128, np.random.default_rng(3)))
    seen = np.concatenate(batches)[:, 0]
    assert sorted(seen) == list(range(1000))
    assert not np.array_equal(seen, np.arange(1000))  # really shuffled


def test_one_shot_iterator_replays_the_buffered_head() -> None:
    X = np.arange(200.0).reshape(-1, 2)
    source = IterableSource(iter(np.split(X, 10)))
    head = source.sample(25, np.random.default_rng(0))
    np.testing.assert_array_equal(head, X[:25])
    np.testing.assert_array_equal(np.concatenate(list(source.batches(7))), X)


def test_fit_on_a_generator_uses_each_record_once() -> None:
    rng = np.random.default_rng(1)
    X = np.vstack([rng.normal(-4, 1, (3000, 2)), rng.normal(4, 1, (3000, 2))])[rng.permutation(6000)]
    model = StreamingGaussianMixture(2, init_size=1000, batch_size=500, random_state=0)
    model.fit(X[i : i + 300] for i in range(0, 6000, 300))
    assert model.records_seen_ == 6000
    np.testing.assert_allclose(np.sort(model.means_[:, 0]), [-4, 4], atol=0.1)
