"""The start of a fit: a sample of the source, whether it holds all the data, and the best
candidate refined by EM on it.

The sample is drawn first; the generator that later shuffles online EM's visit is spawned right
after it, so the visit order does not depend on how much randomness the candidates used: every
candidate of :func:`~streamgmm.selection.select` then sees the batches a lone fit would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from streamgmm.em.batch import BatchEMResult
from streamgmm.em.candidates import initialize, sample_mean, unobserved_features
from streamgmm.io.records.columns import DataError
from streamgmm.io.sources.chunk_source import ArraySource, Batch, ChunkSource
from streamgmm.kernels.quadratic import one_blas_thread
from streamgmm.mixture.params import MixtureParams


@dataclass
class Start:
    """Where EM starts: parameters about ``shift``, the generator of online EM's visit order,
    the sample EM behind the parameters (None when there was none) and whether the sample was
    the whole source (then that EM was exact EM on all the data)."""

    params: MixtureParams
    shift: np.ndarray
    shuffle_rng: np.random.Generator
    em: BatchEMResult | None = None
    whole: bool = False


def spawn_rng(rng: np.random.Generator) -> np.random.Generator:
    """An independent generator, leaving ``rng``'s stream where it is."""
    try:
        return rng.spawn(1)[0]
    except (AttributeError, TypeError, ValueError):  # a bit generator without a seed sequence
        return np.random.default_rng(int(rng.integers(2**63)))


def draw_sample(source: ChunkSource, size: int, rng: np.random.Generator) -> tuple[Batch, np.random.Generator, bool]:
    """The initialisation sample, the visit-order generator, and whether the sample is every
    record of the source."""
    sample = source.sample(size, rng)
    return sample, spawn_rng(rng), sample_is_whole(source, sample, size)


def sample_is_whole(source: ChunkSource, sample: Batch, size: int) -> bool:
    """True when ``sample`` holds every record: an array no longer than ``size``; a source that
    says whether its sampling saw every record (streams, Parquet lakes: a large lake samples only
    some row groups); else a sample shorter than asked for."""
    if isinstance(source, ArraySource):
        return len(source) <= size
    seen_all = source.sampled_every_record
    if seen_all is not None:
        return bool(seen_all)
    return sample.n_records < size


def check_observed(
    sample: np.ndarray, weights: np.ndarray | None, whole: bool, feature_names: list[str] | None = None
) -> None:
    """Refuse a sample in which a feature has no observed value (missing values marginalised).

    EM would keep the start's invention for it (mean 0, variance ``reg_covar``), and the model
    would give every later record that has the feature a log-likelihood near -1e6. The sample
    is where a fit starts, so a feature it never observes cannot be started even when later
    records observe it.

    >>> check_observed(np.array([[1.0, np.nan], [2.0, np.nan]]), None, True, ["x", "y"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    streamgmm.io.records.columns.DataError: column 'y' has no observed value in any of the 2 records: ...
    """
    missing = unobserved_features(sample, weights)
    if missing.size == 0:
        return
    if feature_names is not None:
        names = ", ".join(repr(str(feature_names[i])) for i in missing)
        what = f"column{'s' if missing.size > 1 else ''} {names}"
        remedy = "leave it out of the columns"
    else:
        what = f"feature{'s' if missing.size > 1 else ''} {', '.join(str(i) for i in missing)} (0-based)"
        remedy = "leave it out of X"
    have = "have" if missing.size > 1 else "has"
    if whole:
        raise DataError(
            f"{what} {have} no observed value in any of the {sample.shape[0]} records: its mean and variance "
            f"cannot be estimated; {remedy}"
        )
    raise DataError(
        f"{what} {have} no observed value in the {sample.shape[0]} records the fit starts on (the initialisation "
        f"sample, or partial_fit's first chunk): its mean and variance cannot be started; {remedy}, or start on "
        "records that observe it (a larger init_size, or a first chunk that has it)"
    )


def converged_start(
    sample: Batch,
    shuffle_rng: np.random.Generator,
    whole: bool,
    *,
    n_components: int,
    covariance_type: str,
    reg_covar: float,
    n_init: int,
    rng: np.random.Generator,
    init_params: str,
    tol: float,
    max_iter: int,
    batch_size: int,
    given: dict[str, np.ndarray],
    shift: np.ndarray | None = None,
    feature_names: list[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Start:
    """The best of the candidates on ``sample``, each refined by EM to ``tol`` (see
    :func:`~streamgmm.em.candidates.initialize`), about ``shift`` (default: the sample's mean).

    EM on the sample weighs the records (a weighted source's); the candidates' seeding resamples them in proportion
    to their weights (:func:`~streamgmm.em.candidates.seed_rows`). Missing features (NaN) are
    marginalised by EM, and seeding uses the complete rows; a feature the sample never observes
    is a ``DataError`` naming it (by ``feature_names`` when given). ``progress`` is called with
    the records of each mini-batch of the sample the candidates' EM has processed."""
    sample, weights = sample
    check_observed(sample, weights, whole, feature_names)
    shift = sample_mean(sample, weights) if shift is None else shift
    # One BLAS thread: the sample's products are too small to gain from a second thread, which
    # only competes with other work for the cores.
    with one_blas_thread():
        init = initialize(
            sample,
            n_components,
            covariance_type,
            reg_covar=reg_covar,
            n_init=n_init,
            rng=rng,
            init_params=init_params,
            tol=tol,
            max_iter=max_iter,
            batch_size=batch_size,
            shift=shift,
            given=given,
            # On the whole data the race keeps the start's cost near scikit-learn's one fit; on a
            # sample of larger data the passes dominate, and candidates that are all run to
            # convergence pick the better of close optima more often.
            race_first=None if whole else max_iter,
            weights=weights,
            progress=progress,
        )
    return Start(init.params, shift, shuffle_rng, init.em, whole)
