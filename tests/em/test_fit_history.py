"""The fit history: bounded, exact summaries of the batches it covers, kept and continued.

Oracle: the per-batch updates online EM reports (``on_batch``), aggregated independently here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import streamgmm
from streamgmm import StreamingGaussianMixture
from streamgmm.em.fit_history import FitHistory
from streamgmm.em.online import OnlineState, run_online_em
from streamgmm.em.settings import FitSettings, WeightUnit
from streamgmm.em.trainer import start_fit
from streamgmm.estimator.persistence import model_document, model_from_document
from streamgmm.io.sources.chunk_source import ArraySource


def random_updates(n: int, seed: int = 0) -> list[tuple[float, int, float, list[int]]]:
    """``n`` batch reports: (mean log-likelihood, records, step size, none or one of 5
    components reseeded), drawn at once: a draw per batch took seconds for the long stream."""
    rng = np.random.default_rng(seed)
    log_likelihoods, sizes = rng.normal(-3, 1, n), rng.integers(1, 100, n)
    reseeded, any_reseeded = rng.integers(0, 5, n), rng.integers(0, 2, n).astype(bool)
    return [
        (float(log_likelihoods[t]), int(sizes[t]), 1.0 / (t + 2), [int(reseeded[t])] if any_reseeded[t] else [])
        for t in range(n)
    ]


@pytest.mark.parametrize("n_batches", [1, 7, 8, 9, 100, 1000, 5000])
def test_points_summarise_their_batches_exactly_and_stay_bounded(n_batches):
    updates = random_updates(n_batches, seed=n_batches)
    history = FitHistory(capacity=8)
    for update in updates:
        history.record(*update)
    assert len(history) <= 8 and history.n_batches == n_batches
    stride = history.stride
    # Every point but the last holds exactly ``stride`` consecutive batches.
    assert stride == 1 or len(history) > 8 // 2
    n = np.array([u[1] for u in updates])
    ll = np.array([u[0] for u in updates])
    ends = np.append(np.arange(stride, n_batches, stride), n_batches)
    starts = np.concatenate([[0], ends[:-1]])
    np.testing.assert_array_equal(history.records, np.cumsum(n)[ends - 1])
    expected_ll = [np.dot(ll[a:b], n[a:b]) / n[a:b].sum() for a, b in zip(starts, ends)]
    np.testing.assert_allclose(history.mean_log_likelihood, expected_ll, rtol=1e-12)
    np.testing.assert_array_equal(history.step_size, [updates[b - 1][2] for b in ends])
    assert history.reseeded == [sorted({k for u in updates[a:b] for k in u[3]}) for a, b in zip(starts, ends)]


def test_a_long_stream_keeps_at_most_capacity_points():
    history = FitHistory()
    for update in random_updates(100_000):
        history.record(*update)
    assert 128 < len(history) <= 256 and history.stride == 512
    assert len(json.dumps(history.to_dict())) < 30_000  # compact in the model file, however long the stream


def test_the_estimator_records_what_online_em_reports():
    X, _, _ = streamgmm.make_mixture(5000, n_components=2, n_features=2, random_state=0)
    model = StreamingGaussianMixture(
        2, algorithm="online", random_state=0, batch_size=400, shuffle=False, max_passes=2, tol=0, moves="off"
    ).fit(X)
    # Oracle: the same start and batches through run_online_em, with its own callback.
    settings = FitSettings(2, random_state=0, batch_size=400, tol=0)
    begun = start_fit(ArraySource(X), settings, np.random.default_rng(0), WeightUnit())
    params, shift = begun.params, begun.shift
    seen = []
    run_online_em(
        ArraySource(X),
        OnlineState.start(params, shift),
        schedule=settings.schedule,
        burn_in=0,
        reg_covar=model.reg_covar,
        batch_size=400,
        max_passes=2,
        on_batch=lambda state, update: seen.append(update),
    )
    trace = model.fit_history_
    assert trace.n_batches == len(seen) == 26 and trace.stride == 1
    np.testing.assert_array_equal(trace.mean_log_likelihood, [u.mean_log_likelihood for u in seen])
    np.testing.assert_array_equal(trace.step_size, [u.step_size for u in seen])
    np.testing.assert_array_equal(trace.records, np.cumsum([u.n_records for u in seen]))
    assert trace.records[-1] == model.records_seen_


def test_saved_loaded_and_continued_by_partial_fit_as_one_stream(tmp_path):
    X, _, _ = streamgmm.make_mixture(6000, n_components=3, n_features=2, random_state=1)
    chunks = np.array_split(X, 6)
    whole = StreamingGaussianMixture(3, random_state=0, batch_size=250)
    for chunk in chunks:
        whole.partial_fit(chunk)
    pieces = StreamingGaussianMixture(3, random_state=0, batch_size=250)
    for i, chunk in enumerate(chunks):
        pieces.partial_fit(chunk)
        pieces.save(tmp_path / "m.sgmm")
        pieces = StreamingGaussianMixture.load(tmp_path / "m.sgmm")
        assert pieces.fit_history_.n_batches == 4 * (i + 1)
    assert pieces.fit_history_.to_dict() == whole.fit_history_.to_dict()
    assert "24 mini-batches, 6,000 records" in pieces.fit_history_.summary()


def test_fresh_fit_starts_a_new_trace_and_warm_start_continues_it():
    X, _, _ = streamgmm.make_mixture(2000, n_components=2, n_features=2, random_state=2)
    model = StreamingGaussianMixture(2, algorithm="online", random_state=0, batch_size=500).fit(X)
    assert model.fit_history_.n_batches == 4
    model.fit(X)
    assert model.fit_history_.n_batches == 4
    model.set_params(warm_start=True).fit(X)
    assert model.fit_history_.n_batches == 8
    batch = StreamingGaussianMixture(2, algorithm="batch", random_state=0).fit(X)
    assert len(batch.fit_history_) == 0 and "empty" in batch.fit_history_.summary()


def test_model_files_without_a_trace_still_load(tmp_path):
    X, _, _ = streamgmm.make_mixture(1000, n_components=2, n_features=2, random_state=3)
    model = StreamingGaussianMixture(2, random_state=0, batch_size=500).fit(X)
    document, arrays = model_document(model)
    del document["fit_history"]
    old = model_from_document(StreamingGaussianMixture, document, arrays)
    assert len(old.fit_history_) == 0
    old.partial_fit(X)
    assert old.fit_history_.n_batches == 2


def test_bad_capacity_and_corrupt_documents():
    for capacity in (0, 3, 2.0):
        with pytest.raises(ValueError, match="capacity"):
            FitHistory(capacity)
    history = FitHistory(4)
    history.record(-1.0, 10, 0.5, [])
    document = history.to_dict()
    document["step_size"] = []
    with pytest.raises(ValueError, match="different lengths"):
        FitHistory.from_dict(document)
