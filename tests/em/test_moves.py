"""Births and merges: streams in stored order end near scikit-learn's fit on all the data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from streamgmm import StreamingGaussianMixture
from streamgmm.datasets.mixtures import make_mixture, sample_mixture
from streamgmm.em.online import OnlineState, StepSchedule, online_update


@pytest.fixture(scope="module")
def sorted_stream() -> dict:
    """40,000 records of a separated 4-component mixture in 3-D, sorted by component, with
    scikit-learn's n_init=4 fit on all of them and a held-out set."""
    X, labels, truth = make_mixture(40_000, 4, 3, separation=9.0, random_state=3)
    held_out, _ = sample_mixture(truth, 20_000, random_state=4)
    sorted_X = X[np.argsort(labels, kind="stable")]
    reference = GaussianMixture(4, n_init=4, random_state=0).fit(X).score(held_out)
    return {"X": sorted_X, "held_out": held_out, "reference": reference, "truth": truth}


def _chunks(X: np.ndarray, size: int) -> list[np.ndarray]:
    return [X[i : i + size] for i in range(0, X.shape[0], size)]


KWARGS = dict(batch_size=2000, init_size=4000, random_state=0)


def test_a_sorted_one_shot_stream_ends_near_scikit_learns_fit(sorted_stream) -> None:
    X, held_out, reference = sorted_stream["X"], sorted_stream["held_out"], sorted_stream["reference"]
    on = StreamingGaussianMixture(4, **KWARGS).fit(iter(_chunks(X, 4000)))
    off = StreamingGaussianMixture(4, moves="off", **KWARGS).fit(iter(_chunks(X, 4000)))
    assert reference - on.score(held_out) < 0.05
    # Without moves the components never reach the regions the first sample did not show.
    assert reference - off.score(held_out) > 1.0
    assert len(on.fit_history_.moves) >= 3 and not off.fit_history_.moves
    # One mixture throughout: the running counts still sum to the records' total (one).
    np.testing.assert_allclose(on.online_state_.statistics.counts.sum(), 1.0, rtol=1e-9)


def test_a_sorted_stream_of_partial_fits_ends_near_scikit_learns_fit(sorted_stream) -> None:
    X, held_out, reference = sorted_stream["X"], sorted_stream["held_out"], sorted_stream["reference"]
    model = StreamingGaussianMixture(4, **KWARGS)
    for chunk in _chunks(X, 4000):
        model.partial_fit(chunk)
    assert reference - model.score(held_out) < 0.05
    moves = model.fit_history_.moves
    births = [m for m in moves if m["kind"] == "birth"]
    assert births and all(len(m["born"]) == len(m["merged"]) > 0 for m in births)
    assert all(m["gain"] > 0 for m in moves)


def test_moves_are_reproducible_under_random_state(sorted_stream) -> None:
    X = sorted_stream["X"]
    a = StreamingGaussianMixture(4, **KWARGS).fit(iter(_chunks(X, 4000)))
    b = StreamingGaussianMixture(4, **KWARGS).fit(iter(_chunks(X, 4000)))
    np.testing.assert_array_equal(a.means_, b.means_)
    np.testing.assert_array_equal(a.covariances_, b.covariances_)
    assert a.fit_history_.moves == b.fit_history_.moves


def test_moves_off_is_the_plain_recursion_bit_for_bit(sorted_stream) -> None:
    """With moves off, partial_fit is online_update on a state without moves, batch by batch."""
    X = sorted_stream["X"][::4]
    model = StreamingGaussianMixture(4, moves="off", batch_size=1000, init_size=2000, random_state=0)
    model.partial_fit(X[:2000])
    state = model.online_state_
    assert state.moves is None
    for chunk in _chunks(X[2000:], 1000):
        model.partial_fit(chunk)
        state, _ = online_update(state, chunk, StepSchedule(), 0, model.reg_covar, 1000)
    np.testing.assert_array_equal(model.means_, state.params.means)
    np.testing.assert_array_equal(model.covariances_, state.params.covariances)


def test_without_a_birth_moves_change_nothing() -> None:
    """On a shuffled stream no record is novel enough for a birth, and the moves only watch:
    the fit is the one without moves, bit for bit."""
    X, _, _ = make_mixture(20_000, 3, 2, separation=9.0, random_state=5)
    on = StreamingGaussianMixture(3, algorithm="online", batch_size=1000, random_state=1, init_size=2000).fit(X)
    off = StreamingGaussianMixture(
        3, algorithm="online", batch_size=1000, random_state=1, init_size=2000, moves="off"
    ).fit(X)
    assert not on.fit_history_.moves
    np.testing.assert_array_equal(on.means_, off.means_)
    np.testing.assert_array_equal(on.covariances_, off.covariances_)


@pytest.mark.parametrize("covariance_type", ["tied", "diag", "spherical"])
def test_every_covariance_type_finds_the_late_regions(covariance_type) -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [15.0, 0.0], [0.0, 15.0]])
    X = np.concatenate([rng.normal(c, 1.0, (3000, 2)) for c in centres])
    model = StreamingGaussianMixture(3, covariance_type=covariance_type, batch_size=500, init_size=1000, random_state=0)
    model.fit(iter(_chunks(X, 1000)))
    distances = np.linalg.norm(model.means_[:, None, :] - centres[None], axis=2)
    assert np.sort(distances.min(axis=0)).max() < 0.2, model.means_


def test_weighted_and_incomplete_records_take_part(tmp_path) -> None:
    """Record weights weigh the novel records; a record with a missing feature is never novel
    but is still learned (marginalised), and kept in the stream's sample (saved as it is)."""
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [15.0, 0.0], [0.0, 15.0]])
    X = np.concatenate([rng.normal(c, 1.0, (3000, 2)) for c in centres])
    X[rng.random(X.shape[0]) < 0.05, 1] = np.nan
    weights = rng.integers(1, 4, X.shape[0]).astype(float)
    model = StreamingGaussianMixture(3, batch_size=500, init_size=1000, random_state=0, nan_policy="marginalize")
    for i in range(0, X.shape[0], 1000):
        model.partial_fit(X[i : i + 1000], sample_weight=weights[i : i + 1000])
    distances = np.linalg.norm(model.means_[:, None, :] - centres[None], axis=2)
    assert np.sort(distances.min(axis=0)).max() < 0.2, model.means_
    assert model.fit_history_.moves
    sample = model.online_state_.moves.sample.merged()
    assert np.isnan(sample.records).any()
    model.save(tmp_path / "m.sgmm")
    loaded = StreamingGaussianMixture.load(tmp_path / "m.sgmm").online_state_.moves.sample.merged()
    np.testing.assert_array_equal(loaded.records, sample.records)


def test_one_component_has_no_room_for_a_birth() -> None:
    X = np.concatenate([np.zeros((500, 2)), np.full((500, 2), 50.0)]) + np.random.default_rng(0).normal(size=(1000, 2))
    model = StreamingGaussianMixture(1, batch_size=100, init_size=200, random_state=0).fit(iter(_chunks(X, 200)))
    assert not [m for m in model.fit_history_.moves if m["kind"] == "birth"]


def test_hostile_moves_parameter_is_refused() -> None:
    with pytest.raises(ValueError, match="Invalid value for 'moves'"):
        StreamingGaussianMixture(2, moves="sometimes").fit(np.zeros((10, 2)))


def test_the_start_state_carries_moves_only_when_asked() -> None:
    from streamgmm import MixtureParams
    from streamgmm.em.settings import FitSettings
    from streamgmm.em.start import Start
    from streamgmm.em.trainer import new_state

    params = MixtureParams.from_covariances(np.ones(1), np.zeros((1, 2)), np.ones(1), "spherical")
    assert OnlineState.start(params, np.zeros(2)).moves is None
    start = Start(params, np.zeros(2), np.random.default_rng(0))
    off = new_state(FitSettings(1, moves="off"), start, np.random.default_rng(0))
    on = new_state(FitSettings(1, init_size=500, batch_size=100), start, np.random.default_rng(0))
    assert off.moves is None
    # No sample EM behind this start: the first refit is due at twice init_size, on the clock.
    assert on.moves.sample_size == 500 and len(on.moves.sample) == 0 and on.moves.next_refit == 10.0
    assert not on.moves.novel.counts.any() and len(on.moves.reservoir) == 0


def test_a_stream_sorted_by_a_feature_is_reallocated_on_its_sample() -> None:
    """Sorted by a feature, the later regions overlap the early components: no record is novel,
    and only the refits on the stream's sample put the components right."""
    X, _, truth = make_mixture(30_000, 3, 2, separation=3.0, random_state=8)
    held_out, _ = sample_mixture(truth, 20_000, random_state=9)
    reference = GaussianMixture(3, n_init=4, random_state=0).fit(X).score(held_out)
    sorted_X = X[np.argsort(X[:, 0], kind="stable")]
    kwargs = dict(batch_size=1000, init_size=3000, random_state=0)
    on = StreamingGaussianMixture(3, **kwargs).fit(iter(_chunks(sorted_X, 2000)))
    off = StreamingGaussianMixture(3, moves="off", **kwargs).fit(iter(_chunks(sorted_X, 2000)))
    assert reference - on.score(held_out) < 0.02
    assert reference - off.score(held_out) > 0.1
    refits = [m for m in on.fit_history_.moves if m["kind"] == "refit"]
    assert refits and all(m["gain"] > 0 and m["records"] == 3000 for m in refits)
    # The sample is a uniform sample of the stream: its mean is the stream's, within its error.
    sample = on.online_state_.moves.sample.merged()
    assert len(sample) == 3000 and sample.sampled
    error = np.abs(sample.records.mean(axis=0) - X.mean(axis=0))
    assert np.all(error < 4 * X.std(axis=0) / np.sqrt(3000)), error


def _regimes(seed: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """30,000 records of two clusters, then 30,000 of two others 40 away, in 2,000-record
    chunks; the second regime's generating means, and a held-out set from it."""
    rng = np.random.default_rng(seed)
    old, new = np.array([[0.0, 0.0], [0.0, 8.0]]), np.array([[40.0, 0.0], [40.0, 8.0]])

    def draw(means: np.ndarray, n: int) -> np.ndarray:
        return means[rng.integers(2, size=n)] + rng.normal(size=(n, 2))

    chunks = _chunks(draw(old, 30_000), 2000) + _chunks(draw(new, 30_000), 2000)
    return chunks, new, draw(new, 10_000)


def test_a_forgetting_stream_changes_course_at_a_change_of_regime() -> None:
    chunks, new_means, held_out = _regimes(5)
    model = StreamingGaussianMixture(2, step_floor=0.05, **KWARGS)
    for chunk in chunks:
        model.partial_fit(chunk)
    changes = [m for m in model.fit_history_.moves if m["kind"] == "change"]
    # The first chunk of the new regime, and only it, is mostly outside every component.
    assert [m["step"] for m in changes] == [16]
    # That chunk was learned with the floor's step (1/18 on the schedule); the 14 after it with
    # the schedule started again, 1/(j + 2) for the j-th: the old regime keeps
    # (17/18) * prod_j (j + 1)/(j + 2) = (17/18) * 2/16 of the weight, where the floor alone
    # would have left (17/18) * 0.95**14 = 0.46.
    order = np.argsort(model.means_[:, 0])
    np.testing.assert_allclose(model.weights_[order], [17 / 18 / 8, 1 - 17 / 18 / 8], atol=0.015)
    # K=2: one component for what is left of the old regime, one on the new regime's centre.
    np.testing.assert_allclose(model.means_[order], [[0.0, 4.0], new_means.mean(axis=0)], atol=0.2)
    # Without moves no component reaches the new regime.
    off = StreamingGaussianMixture(2, step_floor=0.05, moves="off", **KWARGS)
    for chunk in chunks:
        off.partial_fit(chunk)
    assert model.score(held_out) - off.score(held_out) > 1.0


def test_a_stream_without_a_floor_does_not_change_course() -> None:
    chunks, _, _ = _regimes(5)
    model = StreamingGaussianMixture(2, **KWARGS)
    for chunk in chunks:
        model.partial_fit(chunk)
    kinds = {m["kind"] for m in model.fit_history_.moves}
    assert "change" not in kinds and "birth" in kinds
