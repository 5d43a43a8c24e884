"""Persistence: the model file of a fitted estimator."""

from __future__ import annotations

import inspect
import os
from dataclasses import replace
from typing import Any, Self, TypeVar

import numpy as np

from streamgmm.em.fit_history import FitHistory
from streamgmm.em.fitted import fitted_state
from streamgmm.em.moves import MoveState
from streamgmm.em.novelty import Reservoir
from streamgmm.em.online import OnlineState, record_count
from streamgmm.em.settings import WeightUnit
from streamgmm.estimator.base import check_fitted, settings_of
from streamgmm.io.model.checks import ModelContentError, check_moves
from streamgmm.io.model.file import ModelFileError, mixture_of, read_model, write_model
from streamgmm.mixture import covariance as cov
from streamgmm.mixture.component_size import reservoir_capacity
from streamgmm.mixture.statistics import SufficientStatistics

T = TypeVar("T")


class PersistenceMixin:
    """``save`` and ``load``: the model file, with the running statistics that ``partial_fit`` resumes."""

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted model to a file.

        The file holds the parameters, the fitted attributes, the running statistics, the step
        counter and the births' and merges' state (their seed, the reservoir of novel records and
        the novel records' share of the statistics), so a model read back by :meth:`load` predicts
        the same and ``partial_fit`` resumes the stream where it stopped, with the births an
        uninterrupted stream takes (the format: :mod:`streamgmm.io.model.file`). It is written
        atomically: a reader sees the old file or the new one, never half of one.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write.

        Raises
        ------
        NotFittedError
            If the model is not fitted.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from streamgmm import StreamingGaussianMixture
        >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]])
        >>> gmm = StreamingGaussianMixture(n_components=2, random_state=0).fit(X)
        >>> path = os.path.join(tempfile.mkdtemp(), "model.sgmm")
        >>> gmm.save(path)
        >>> StreamingGaussianMixture.load(path).predict([[0, 1], [11, 3]])
        array([1, 0])
        """
        write_model(path, *model_document(self))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        """Read a model written by :meth:`save`.

        Parameters
        ----------
        path : str or os.PathLike
            The model file.

        Returns
        -------
        model : StreamingGaussianMixture
            The fitted model, with the running statistics ``partial_fit`` resumes from.

        Raises
        ------
        ModelFileError
            If the file is not a readable streamgmm model.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from streamgmm import StreamingGaussianMixture
        >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]])
        >>> gmm = StreamingGaussianMixture(n_components=2, random_state=0).fit(X)
        >>> path = os.path.join(tempfile.mkdtemp(), "model.sgmm")
        >>> gmm.save(path)
        >>> model = StreamingGaussianMixture.load(path)
        >>> bool((model.means_ == gmm.means_).all()), model.n_features_in_
        (True, 2)
        """
        document, arrays = read_model(path)
        try:
            return model_from_document(cls, document, arrays)
        except ModelFileError as exc:
            raise ModelFileError(f"{path}: corrupt model file ({exc})") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{path}: corrupt model file (missing or malformed {exc})") from None


def model_document(model: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """What ``model.save`` writes: the JSON document and the arrays."""
    fitted = check_fitted(model)
    state = fitted.state
    arrays: dict[str, np.ndarray] = {
        "weights": state.params.weights,
        "means": state.params.means,
        "covariances": state.params.covariances,
        "precisions_cholesky": state.params.precisions_cholesky,
    }
    arrays.update({f"statistics.{name}": value for name, value in state.statistics.arrays().items()})
    moves = state.moves
    moves_scalars = None
    if moves is not None:
        moves_scalars, moves_arrays = _moves_document(moves)
        arrays.update(moves_arrays)
    estimator_params = _estimator_params(model.get_params(), arrays)
    document = {
        "estimator": type(model).__name__,
        "estimator_params": estimator_params,
        "fitted": {
            "converged": fitted.converged,
            "n_iter": fitted.n_iter,
            "lower_bound": fitted.lower_bound,
            "n_features_in": state.params.n_features,
            "feature_names_in": fitted.feature_names,
            "n_skipped": fitted.n_skipped,
            "history": fitted.lower_bounds,
        },
        "fit_history": fitted.fit_history.to_dict(),
        "online": {
            "step": state.step,
            "records_seen": state.records_seen,
            "statistics_n_records": state.statistics.n_records,
            "statistics_log_likelihood": state.statistics.log_likelihood,
            # The unit of the record weights in the running statistics (see streamgmm.em.settings).
            "weight_scale": float(fitted.weight_scale),
        },
    }
    if moves_scalars is not None:
        document["online"]["moves"] = moves_scalars
    return document, arrays


def model_from_document(cls: type[T], document: dict[str, Any], arrays: dict[str, np.ndarray]) -> T:
    """The model of class ``cls`` :func:`model_document` describes (a file already read and validated by
    :func:`~streamgmm.io.model.file.read_model`); ``ModelFileError`` if it does not fit."""
    params = dict(document["estimator_params"])
    for name in list(arrays):
        if name.startswith("param."):
            params[name[len("param.") :]] = arrays.pop(name)
    # Each parameter named in the message as the document's field: it is the file that is wrong.
    unknown = sorted(set(params) - set(inspect.signature(cls).parameters))
    if unknown:
        raise ModelFileError(f"estimator_params.{unknown[0]} is not a parameter of {cls.__name__}")
    model = cls(**params)
    try:
        settings_of(model)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"estimator_params: {exc}") from None
    t = model.covariance_type
    _, d = _check_arrays(arrays, t)
    fitted, online = document["fitted"], document["online"]
    mixture = mixture_of(document, arrays)
    stats = _statistics(t, arrays, "statistics", online["statistics_n_records"], online["statistics_log_likelihood"])
    try:
        check_moves(document, arrays, t)
    except ModelContentError as exc:
        raise ModelFileError(str(exc)) from None
    moves = None
    if online.get("moves") is not None:
        moves = _moves_from(online["moves"], arrays, t)
    state = OnlineState(mixture, stats, int(online["step"]), record_count(float(online["records_seen"])), moves)
    # Files written before weights had a unit hold them as given: a unit of 1.
    scale = online.get("weight_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < np.inf:
        raise ModelFileError(f"online.weight_scale must be a positive finite number, got {scale!r}")
    names = fitted.get("feature_names_in")
    if names is not None and (len(names) != d or not all(isinstance(name, str) for name in names)):
        raise ModelFileError(f"feature_names_in must be {d} column names, got {names!r}")
    result = fitted_state(
        state,
        bool(fitted["converged"]),
        int(fitted["n_iter"]),
        float(fitted["lower_bound"]),
        [float(v) for v in fitted.get("history", [])],
        # Files written before the trace existed have none: an empty one, continued from here.
        FitHistory.from_dict(document["fit_history"]) if "fit_history" in document else FitHistory(),
        WeightUnit(float(scale)),
    )
    model.fitted_state_ = replace(result, feature_names=names, n_skipped=int(fitted.get("n_skipped", 0)))
    return model


def _statistics(
    covariance_type: str, arrays: dict[str, np.ndarray], prefix: str, n_records: Any, log_likelihood: Any
) -> SufficientStatistics:
    """The statistics saved as the arrays ``{prefix}.shift``, ``.counts``, ``.sums`` and ``.second``."""
    return SufficientStatistics(
        covariance_type,
        *(arrays[f"{prefix}.{name}"] for name in ("shift", "counts", "sums", "second")),
        float(n_records),
        float(log_likelihood),
    )


def _estimator_params(params: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The estimator's parameters as JSON values; ``*_init`` arrays go to ``arrays`` as
    ``param.<name>``."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        if value is None or isinstance(value, (bool, int, float, str)):
            out[name] = value
        elif isinstance(value, np.integer):
            out[name] = int(value)
        elif name.endswith("_init"):
            arrays[f"param.{name}"] = np.asarray(value, dtype=np.float64)
        else:
            out[name] = None  # a generator object: not reproducible from a file
    return out


def _check_arrays(arrays: dict[str, np.ndarray], t: str) -> tuple[int, int]:
    """K and d of a model's arrays, once they are floats of the shapes ``t`` implies."""
    for name, value in arrays.items():
        if value.dtype.kind != "f":
            raise ModelFileError(f"array {name} holds {value.dtype}, not floats")
    means = arrays["means"]
    if means.ndim != 2:
        raise ModelFileError(f"array means has shape {means.shape}, expected (n_components, n_features)")
    k, d = means.shape
    expected = {
        "weights": (k,),
        "covariances": cov.covariance_shape(k, d, t),
        "precisions_cholesky": cov.covariance_shape(k, d, t),
        "statistics.second": cov.second_moment_shape(k, d, t),
        "statistics.sums": (k, d),
        "statistics.counts": (k,),
        "statistics.shift": (d,),
    }
    for name, shape in expected.items():
        if arrays[name].shape != shape:
            raise ModelFileError(f"array {name} has shape {arrays[name].shape}, expected {shape}")
    return k, d


def _moves_document(moves: MoveState) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The moves' scalars (``online.moves``) and arrays (``moves.*``) of a model file."""
    # Pending records merged: the file holds each sample in its canonical (key) order.
    reservoir = moves.reservoir.merged()
    sample = moves.sample.merged() if moves.sample is not None else Reservoir.empty(moves.novel.n_features)
    arrays = {
        "moves.records": reservoir.records,
        "moves.log_weights": reservoir.log_weights,
        "moves.keys": reservoir.keys,
        **{f"moves.novel.{name}": value for name, value in moves.novel.arrays().items()},
        "moves.sample.records": sample.records,
        "moves.sample.log_weights": sample.log_weights,
        "moves.sample.keys": sample.keys,
    }
    scalars = {
        "seed": int(moves.seed),
        "log_scale": float(moves.log_scale),
        "clock": float(moves.clock),
        "offered_weight": float(reservoir.offered_weight),
        "tried_at": float(reservoir.tried_at),
        "sampled": bool(reservoir.sampled),
        "novel_n_records": float(moves.novel.n_records),
        "novel_log_likelihood": float(moves.novel.log_likelihood),
        "sample_size": int(moves.sample_size if moves.sample is not None else 0),
        "next_refit": float(moves.next_refit),
        "sample_offered_weight": float(sample.offered_weight),
        "sample_sampled": bool(sample.sampled),
        "restart": bool(moves.restart),
        "changed": bool(moves.changed),
        "level": float(moves.level),
        "level_weight": float(moves.level_weight),
        "fresh_until": float(moves.fresh_until),
    }
    return scalars, arrays


def _moves_from(scalars: dict[str, Any], arrays: dict[str, np.ndarray], t: str) -> MoveState:
    """The moves' state a model file holds (checked by :func:`~streamgmm.io.model.checks.check_moves`)."""
    reservoir = Reservoir(
        arrays["moves.records"],
        arrays["moves.log_weights"],
        arrays["moves.keys"],
        float(scalars["offered_weight"]),
        float(scalars["tried_at"]),
        bool(scalars["sampled"]),
        capacity=reservoir_capacity(arrays["means"].shape[1], t),
    )
    novel = _statistics(t, arrays, "moves.novel", scalars["novel_n_records"], scalars["novel_log_likelihood"])
    sample_size = int(scalars["sample_size"])
    sample = None
    if sample_size > 0:
        sample = Reservoir(
            arrays["moves.sample.records"],
            arrays["moves.sample.log_weights"],
            arrays["moves.sample.keys"],
            float(scalars["sample_offered_weight"]),
            0.0,
            bool(scalars["sample_sampled"]),
            capacity=sample_size,
        )
    return MoveState(
        int(scalars["seed"]),
        reservoir,
        novel,
        float(scalars["log_scale"]),
        float(scalars["clock"]),
        sample,
        sample_size,
        float(scalars["next_refit"]),
        bool(scalars["restart"]),
        bool(scalars["changed"]),
        float(scalars["level"]),
        float(scalars["level_weight"]),
        # Written since changes of course exist; earlier files have none (no change under way).
        float(scalars.get("fresh_until", 0.0)),
    )
