"""The k-means starting points against independent oracles: scipy's direct distances, a direct
k-means++ written from its definition, scikit-learn's Lloyd, at K=64 (blocks and part blocks)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.cluster import KMeans

from streamgmm.mixture.initialization import (
    DISTANCE_BLOCK,
    kmeans_plusplus,
    lloyd,
    nearest,
    params_from_labels,
    place_empty_components,
)
from streamgmm.mixture.reseeding import MIN_WEIGHT


def blobs(n: int, k: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6.0, size=(k, d))
    return centres[rng.integers(k, size=n)] + rng.normal(size=(n, d))


def direct_kmeans_plusplus(X: np.ndarray, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ from its definition, with scipy's distances (same draws as ours)."""
    n = X.shape[0]
    trials = 2 + int(np.log(n_clusters))
    chosen = [int(rng.integers(n))]
    closest = cdist(X, X[chosen], "sqeuclidean")[:, 0]
    for _ in range(1, n_clusters):
        cumulative = np.cumsum(closest)
        candidates = np.minimum(np.searchsorted(cumulative, rng.uniform(size=trials) * closest.sum()), n - 1)
        potentials = np.minimum(closest[:, None], cdist(X, X[candidates], "sqeuclidean"))
        best = int(np.argmin(potentials.sum(axis=0)))
        chosen.append(int(candidates[best]))
        closest = potentials[:, best]
    return np.array(chosen)


@pytest.mark.parametrize("k", [1, 5, 64])
def test_kmeans_plusplus_picks_the_records_of_the_direct_definition(k: int) -> None:
    X = blobs(3000, max(k, 2), 16, seed=k)
    centers, indices = kmeans_plusplus(X, k, np.random.default_rng(7))
    assert np.array_equal(indices, direct_kmeans_plusplus(X, k, np.random.default_rng(7)))
    assert np.array_equal(centers, X[indices])


@pytest.mark.parametrize("n", [1, DISTANCE_BLOCK - 1, DISTANCE_BLOCK, 2 * DISTANCE_BLOCK + 3])
def test_nearest_is_the_argmin_of_scipys_distances(n: int) -> None:
    X = blobs(n, 64, 16, seed=n)
    centers = np.random.default_rng(n).normal(scale=6.0, size=(64, 16))
    assert np.array_equal(nearest(X, centers), cdist(X, centers, "sqeuclidean").argmin(axis=1))


def test_nearest_of_no_records_is_empty() -> None:
    assert nearest(np.empty((0, 3)), np.ones((4, 3))).shape == (0,)


def test_lloyd_matches_scikit_learns_lloyd_from_the_same_centres() -> None:
    X = blobs(5000, 64, 16, seed=1)
    X -= X.mean(axis=0)
    start = kmeans_plusplus(X, 64, np.random.default_rng(0))[0]
    centers, labels = lloyd(X, start)
    theirs = KMeans(64, init=start, n_init=1, algorithm="lloyd").fit(X)
    assert np.array_equal(labels, theirs.labels_)
    np.testing.assert_allclose(centers, theirs.cluster_centers_, atol=1e-10)


def test_lloyd_without_iterations_labels_by_the_given_centres() -> None:
    X = blobs(700, 3, 2, seed=2)
    start = X[:3].copy()
    centers, labels = lloyd(X, start, max_iter=0)
    assert np.array_equal(centers, start)
    assert np.array_equal(labels, cdist(X, start, "sqeuclidean").argmin(axis=1))


def test_an_empty_component_goes_to_the_record_farthest_from_every_centre() -> None:
    X = blobs(400, 2, 2, seed=3)
    shift = X.mean(axis=0)
    labels = cdist(X, X[:2], "sqeuclidean").argmin(axis=1)  # component 2 gets no record
    params, stats = params_from_labels(X, labels, 3, "diag", 1e-6, shift)
    assert params.weights[2] < MIN_WEIGHT
    placed = place_empty_components(params, stats, X - shift, shift, 1e-6)
    farthest = X[cdist(X, params.means[:2], "sqeuclidean").min(axis=1).argmax()]
    np.testing.assert_allclose(placed.means[2], farthest)
    np.testing.assert_array_equal(placed.means[:2], params.means[:2])


def test_no_empty_component_leaves_the_start_as_it_is() -> None:
    X = blobs(400, 2, 2, seed=4)
    shift = X.mean(axis=0)
    labels = cdist(X, X[:2], "sqeuclidean").argmin(axis=1)
    params, stats = params_from_labels(X, labels, 2, "full", 1e-6, shift)
    assert place_empty_components(params, stats, X - shift, shift, 1e-6) is params
