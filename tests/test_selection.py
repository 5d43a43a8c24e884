"""``streamgmm.select``: every candidate fitted in the same stream, scored by BIC/AIC.

Oracles: the generating K of synthetic lakes; a lone ``StreamingGaussianMixture`` fitted on the
same batches; the estimator's own ``bic``/``aic`` on the same data; counts of reads.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from threadpoolctl import ThreadpoolController, threadpool_limits

import streamgmm
from streamgmm import StreamingGaussianMixture, select
from streamgmm.datasets.synthetic_lake import write_lake
from streamgmm.em import start as start_module
from streamgmm.io.sources.chunk_source import Batch
from streamgmm.io.sources.parquet import ParquetSource
from streamgmm.mixture.params import MixtureParams
from streamgmm.selection import parse_candidates
from streamgmm.selection import search as search_module
from streamgmm.selection.held_out import HeldOutReservoir


class CountingSource:
    """A source that counts its reads: sample() calls, batches() passes and records decoded."""

    def __init__(self, source):
        self.source = source
        self.samples = 0
        self.passes = 0
        self.records = 0

    def __getattr__(self, name):
        return getattr(self.source, name)

    def sample(self, size, rng):
        self.samples += 1
        return self.source.sample(size, rng)

    def batches(self, batch_size, rng=None):
        self.passes += 1
        for batch in self.source.batches(batch_size, rng):
            self.records += batch.n_records
            yield batch


@pytest.mark.parametrize(
    "true_k, covariance_type, seed",
    [(2, "full", 1), (4, "full", 2), (6, "diag", 3), (4, "spherical", 4), (5, "tied", 5)],
)
def test_select_picks_the_generating_k_of_a_lake(tmp_path, true_k, covariance_type, seed):
    info = write_lake(
        tmp_path / "lake",
        n_records=12_000,
        n_components=true_k,
        n_features=3,
        n_files=3,
        row_group_size=2000,
        covariance_type=covariance_type,
        separation=7.0,
        seed=seed,
    )
    source = CountingSource(ParquetSource(info.path, columns=info.feature_names))
    result = select(
        source,
        n_components=range(max(1, true_k - 2), true_k + 3),
        covariance_types=[covariance_type],
        random_state=0,
        batch_size=1000,
        init_size=4000,
        n_init=2,
    )
    assert result.best.n_components == true_k
    assert result.best.covariance_type == covariance_type
    assert result.n_scored == 12_000 and result.scored_on == "full pass"
    # One sample read, then the training passes (one online, then exact EM until every candidate's
    # tol) and one scoring pass: each decoded once for all candidates.
    assert result.n_passes >= 3
    assert (source.samples, source.passes) == (1, result.n_passes + 1)
    assert source.records == 12_000 * (result.n_passes + 1)
    best = result.best_model_
    assert best.n_components == true_k and list(best.feature_names_in_) == info.feature_names


@pytest.mark.parametrize("compute_dtype", ["float64", "float32"])
def test_candidate_equals_a_lone_fit_and_its_criteria_equal_the_estimators(compute_dtype):
    X, _, _ = streamgmm.make_mixture(6000, n_components=3, n_features=2, random_state=5)
    options = dict(
        batch_size=500, init_size=2000, n_init=2, shuffle=False, max_passes=3, tol=1e-3, compute_dtype=compute_dtype
    )
    result = select(X, n_components=[2, 3], covariance_types="full,diag", random_state=7, **options)
    assert [(c.n_components, c.covariance_type) for c in result.candidates] == [
        (2, "full"),
        (3, "full"),
        (2, "diag"),
        (3, "diag"),
    ]
    for candidate in result.candidates:
        lone = StreamingGaussianMixture(
            candidate.n_components, covariance_type=candidate.covariance_type, random_state=7, **options
        ).fit(X)
        model = candidate.model
        for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
            np.testing.assert_array_equal(getattr(model, name), getattr(lone, name))
        assert (model.n_iter_, model.converged_, model.n_steps_, model.records_seen_) == (
            lone.n_iter_,
            lone.converged_,
            lone.n_steps_,
            lone.records_seen_,
        )
        assert model.lower_bounds_ == lone.lower_bounds_
        assert model.fit_history_.to_dict() == lone.fit_history_.to_dict()
        assert candidate.bic == pytest.approx(lone.bic(X), rel=1e-12)
        assert candidate.aic == pytest.approx(lone.aic(X), rel=1e-12)
        assert candidate.n_parameters == lone.params_.n_parameters()


def test_shuffled_selection_reads_once_per_pass_and_fits_well():
    X, _, truth = streamgmm.make_mixture(8000, n_components=3, n_features=2, random_state=2)
    source = CountingSource(streamgmm.inputs.as_source(X))
    result = select(
        source, n_components="1..5", random_state=0, batch_size=500, init_size=2000, n_init=2, criterion="aic"
    )
    assert source.passes == result.n_passes + 1 and source.samples == 1
    assert result.best.n_components == 3
    assert result.best is min(result.candidates, key=lambda c: c.aic)
    best = result.best_model_
    # The shuffled one-pass fit of K=3 is close to the truth: its score is within 0.05 nats.
    assert best.score(X) > truth.log_likelihood(X).mean() - 0.05


def test_held_out_reservoir_scores_records_no_candidate_trained_on():
    X, _, _ = streamgmm.make_mixture(10_000, n_components=4, n_features=2, random_state=3)
    source = CountingSource(streamgmm.inputs.as_source(X))
    result = select(
        source,
        n_components=[2, 3, 4, 5, 6],
        held_out=1500,
        random_state=1,
        batch_size=500,
        init_size=3000,
        n_init=2,
        shuffle=False,
    )
    assert source.passes == 1 and source.records == 10_000  # no scoring pass
    assert result.scored_on == "held-out reservoir" and result.n_scored == 1500
    assert result.best.n_components == 4
    returned = result.extra["returned_from_reservoir"]
    # Every record was trained on or held out, never both: records evicted from the reservoir
    # went back to training (about size * ln(N / size) of them, Algorithm R).
    for candidate in result.candidates:
        assert candidate.model.records_seen_ + 1500 == 10_000
    assert 0 < returned < 1500 * (math.log(10_000 / 1500) + 1)


def test_reservoir_holds_a_uniform_sample_and_returns_every_other_record():
    ids = np.arange(1000, dtype=float)[:, None]
    inclusion = np.zeros(1000)
    for seed in range(200):
        reservoir = HeldOutReservoir(100, np.random.default_rng(seed))
        pieces = reservoir.withhold(Batch(ids[i : i + 64]) for i in range(0, 1000, 64))
        trained = np.concatenate([piece.features for piece in pieces])
        held = reservoir.records().features
        # Each record exactly once: held out or trained on.
        np.testing.assert_array_equal(np.sort(np.concatenate([trained, held])[:, 0]), ids[:, 0])
        inclusion[held[:, 0].astype(int)] += 1
    # Uniform: each tenth of the stream is held out 200 * 100 / 10 = 2000 times, give or take.
    per_tenth = inclusion.reshape(10, 100).sum(axis=1)
    assert np.all(np.abs(per_tenth - 2000) < 200), per_tenth


def test_best_model_saves_loads_and_continues(tmp_path):
    X, _, _ = streamgmm.make_mixture(4000, n_components=2, n_features=2, random_state=4)
    result = select(X, n_components=[1, 2, 3], random_state=0, batch_size=500, init_size=2000, n_init=1)
    path = tmp_path / "best.sgmm"
    result.best_model_.save(path)
    loaded = StreamingGaussianMixture.load(path)
    np.testing.assert_array_equal(loaded.means_, result.best_model_.means_)
    assert loaded.fit_history_.to_dict() == result.best_model_.fit_history_.to_dict()
    loaded.partial_fit(X[:1000])
    assert loaded.fit_history_.n_batches == result.best_model_.fit_history_.n_batches + 2
    table = result.table()
    assert table.count("\n") == 3 and table.count(" *") == 1
    assert result.to_dict()["best"]["n_components"] == result.best.n_components


def test_parse_candidates_and_bad_arguments():
    assert parse_candidates("2..5") == [2, 3, 4, 5]
    assert parse_candidates("2,4,8") == [2, 4, 8]
    assert parse_candidates("1, 3..4, 3") == [1, 3, 4]
    for bad in ("", "5..2", "a", "0..3", "2..x"):
        with pytest.raises(ValueError, match="candidates"):
            parse_candidates(bad)
    X = np.random.default_rng(0).normal(size=(200, 2))
    with pytest.raises(ValueError, match="covariance_type"):
        select(X, n_components=[1], covariance_types="full,wide")
    with pytest.raises(ValueError, match="criterion"):
        select(X, n_components=[1], criterion="dic")
    with pytest.raises(TypeError, match="means_init"):
        select(X, n_components=[1], means_init=[[0.0, 0.0]])
    with pytest.raises(ValueError, match="held_out needs max_passes=1"):
        select(X, n_components=[1], held_out=10, max_passes=2)
    with pytest.raises(ValueError, match="n_components = 300"):
        select(X, n_components=[300], init_size=100)
    with pytest.raises(ValueError, match="keeps every one of the 200 records out of training"):
        select(X, n_components=[1], held_out=500)
    with pytest.raises(ValueError, match="read only once"):
        select(iter(np.array_split(X, 4)), n_components=[1])


def test_a_one_shot_stream_is_scored_on_held_out_records():
    X, _, _ = streamgmm.make_mixture(6000, n_components=3, n_features=2, random_state=8)
    result = select(
        iter(np.array_split(X, 12)),
        n_components=[2, 3, 4],
        held_out=1000,
        random_state=0,
        batch_size=500,
        init_size=1500,
        n_init=2,
    )
    assert result.best.n_components == 3 and result.n_scored == 1000
    assert all(c.model.records_seen_ == 5000 for c in result.candidates)


def test_scoring_and_initialisation_run_on_one_blas_thread(monkeypatch):
    """A second BLAS thread made select's scoring pass and the candidates' initialisation
    several times slower on 2 shared cores (README, "Choosing K"): they run on one, as the
    full-covariance training E-steps do, and leave the thread count as they found it."""
    blas = ThreadpoolController().select(user_api="blas")
    seen: dict[str, set[int]] = {}

    def watched(name, function):
        def call(*args, **kwargs):
            seen.setdefault(name, set()).update(info["num_threads"] for info in blas.info())
            return function(*args, **kwargs)

        return call

    # score_chunk is the scoring pass's (training uses chunk_statistics).
    monkeypatch.setattr(search_module, "score_chunk", watched("score_chunk", search_module.score_chunk))
    monkeypatch.setattr(start_module, "initialize", watched("initialize", start_module.initialize))
    X, _, _ = streamgmm.make_mixture(3000, n_components=2, n_features=2, random_state=3)
    with threadpool_limits(limits=2, user_api="blas"):
        result = select(
            X,
            n_components=[1, 2],
            covariance_types="full,diag",
            random_state=0,
            batch_size=500,
            init_size=1000,
            n_init=1,
        )
        held = select(X, n_components=[2], held_out=300, random_state=0, batch_size=500, init_size=1000, n_init=1)
        model = result.best_model_
        for name in ("e_step", "weighted_log_prob"):
            monkeypatch.setattr(MixtureParams, name, watched(name, getattr(MixtureParams, name)))
        model.score_samples(X), model.predict_proba(X), model.predict(X)
        assert [info["num_threads"] for info in blas.info()] == [2] * len(blas.lib_controllers)
    # predict_proba scores in the fused kernel (no BLAS) where it was built, else through e_step.
    assert held.n_scored == 300 and {"initialize", "score_chunk", "weighted_log_prob"} <= set(seen)
    if blas.lib_controllers:  # else there is no BLAS threading to limit
        assert all(threads == {1} for threads in seen.values()), seen


@pytest.mark.parametrize("case", ["weights", "marginalize"])
def test_weighted_and_incomplete_candidates_equal_lone_fits(case):
    """Record weights and nan_policy='marginalize' reach every candidate as a lone fit, and the
    criteria are the estimator's (weighted: N is the total weight)."""
    X, _, _ = streamgmm.make_mixture(3000, n_components=3, n_features=3, random_state=5)
    rng = np.random.default_rng(0)
    weights = None
    options = dict(batch_size=500, init_size=1000, n_init=2, shuffle=False, max_passes=2, tol=1e-3)
    if case == "weights":
        weights = rng.integers(0, 4, X.shape[0]).astype(float)
    else:
        X[rng.random(X.shape) < 0.15] = np.nan
        options["nan_policy"] = "marginalize"
    result = select(
        X, n_components=[2, 3], covariance_types="full,spherical", random_state=7, sample_weight=weights, **options
    )
    for candidate in result.candidates:
        lone = StreamingGaussianMixture(
            candidate.n_components, covariance_type=candidate.covariance_type, random_state=7, **options
        ).fit(X, sample_weight=weights)
        for name in ("weights_", "means_", "covariances_"):
            np.testing.assert_array_equal(getattr(candidate.model, name), getattr(lone, name))
        assert candidate.model.records_seen_ == lone.records_seen_
        assert candidate.bic == pytest.approx(lone.bic(X, sample_weight=weights), rel=1e-12)
        assert candidate.aic == pytest.approx(lone.aic(X, sample_weight=weights), rel=1e-12)
    if case == "weights":
        assert result.n_scored == weights.sum()
    assert result.best.n_components == 3
