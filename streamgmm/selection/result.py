"""What :func:`~streamgmm.selection.select` returns: each fitted candidate with its scores, and the best."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamgmm.estimator import StreamingGaussianMixture

CRITERIA = ("bic", "aic")


@dataclass
class Candidate:
    """One fitted candidate of :func:`select` and its scores.

    Parameters
    ----------
    n_components : int
        The candidate's number of components K.

    covariance_type : {'full', 'tied', 'diag', 'spherical'}
        The candidate's covariance type.

    n_parameters : int
        The model's free parameters p (see :meth:`MixtureParams.n_parameters
        <streamgmm.mixture.params.MixtureParams.n_parameters>`).

    log_likelihood : float
        The total log-likelihood of the ``n_scored`` records scored.

    n_scored : int
        The number of records scored: every record on a full pass, or the held-out reservoir's.

    model : StreamingGaussianMixture
        The fitted candidate.

    Attributes
    ----------
    mean_log_likelihood : float
        ``log_likelihood / n_scored``.

    bic : float
        ``-2 log_likelihood + n_parameters log n_scored`` (lower is better).

    aic : float
        ``-2 log_likelihood + 2 n_parameters`` (lower is better).

    Examples
    --------
    >>> import streamgmm
    >>> X, _, _ = streamgmm.make_mixture(3000, n_components=3, n_features=2, random_state=0)
    >>> candidate = streamgmm.select(X, n_components=[3], random_state=0).best
    >>> candidate.n_components, candidate.n_parameters, candidate.n_scored
    (3, 17, 3000)
    >>> round(candidate.mean_log_likelihood, 3), round(candidate.bic, 2)
    (-3.625, 21887.05)
    """

    n_components: int
    covariance_type: str
    n_parameters: int
    log_likelihood: float
    n_scored: int
    model: StreamingGaussianMixture

    @property
    def mean_log_likelihood(self) -> float:
        return self.log_likelihood / self.n_scored

    @property
    def bic(self) -> float:
        return -2.0 * self.log_likelihood + self.n_parameters * math.log(self.n_scored)

    @property
    def aic(self) -> float:
        return -2.0 * self.log_likelihood + 2.0 * self.n_parameters

    def to_dict(self) -> dict[str, Any]:
        """The candidate's shape and scores as a JSON-ready dict (without the model).

        Returns
        -------
        candidate : dict
            ``n_components``, ``covariance_type``, ``n_parameters``, ``mean_log_likelihood``,
            ``bic`` and ``aic``.
        """
        return {
            "n_components": self.n_components,
            "covariance_type": self.covariance_type,
            "n_parameters": self.n_parameters,
            "mean_log_likelihood": self.mean_log_likelihood,
            "bic": self.bic,
            "aic": self.aic,
        }


@dataclass
class SelectionResult:
    """What :func:`select` found: every candidate with its scores, and the best.

    Parameters
    ----------
    candidates : list of Candidate
        Every candidate, K ascending within each covariance type, the types in the order given.

    criterion : {'bic', 'aic'}
        The criterion ``best`` minimises.

    scored_on : {'full pass', 'held-out reservoir'}
        What the candidates were scored on.

    n_scored : int
        The number of records scored.

    n_passes : int
        Training passes over the data (online and exact); 0 when the initialisation sample was
        all of it.

    records_per_pass : int
        The records of a training pass (of the sample, when it was all the data).

    extra : dict, default={}
        Further counts: ``returned_from_reservoir``, the records evicted from the held-out
        reservoir that returned to training (0 without ``held_out``).

    Attributes
    ----------
    best : Candidate
        The candidate of lowest ``criterion`` (the first listed, on a tie).

    best_model_ : StreamingGaussianMixture
        The best candidate's fitted model.

    Examples
    --------
    >>> import streamgmm
    >>> X, _, _ = streamgmm.make_mixture(3000, n_components=3, n_features=2, random_state=0)
    >>> result = streamgmm.select(X, n_components="1..5", random_state=0)
    >>> print(result.table())
       K  covariance   params  mean log-lik             BIC             AIC
       1  full              5       -5.3769        32301.36        32271.33
       2  full             11       -4.1126        24763.83        24697.76
       3  full             17       -3.6252        21887.05        21784.95 *
       4  full             23       -3.6245        21930.86        21792.71
       5  full             29       -3.6252        21983.26        21809.07
    >>> result.scored_on, result.n_scored, result.n_passes
    ('full pass', 3000, 0)
    >>> result.to_dict()["best"]
    {'n_components': 3, 'covariance_type': 'full'}
    """

    candidates: list[Candidate]
    criterion: str
    scored_on: str  # "full pass" or "held-out reservoir"
    n_scored: int
    n_passes: int  # training passes over the data (online and exact), 0 when the sample was all of it
    records_per_pass: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> Candidate:
        """The candidate of lowest ``criterion`` (the first listed, on a tie)."""
        return min(self.candidates, key=lambda c: getattr(c, self.criterion))

    @property
    def best_model_(self) -> StreamingGaussianMixture:
        """The best candidate's fitted model: a saveable :class:`~streamgmm.StreamingGaussianMixture`."""
        return self.best.model

    def table(self) -> str:
        """Format the candidates as a text table, the best marked with ``*``.

        Returns
        -------
        table : str
            One line per candidate: K, covariance type, parameters, mean log-likelihood, BIC
            and AIC, under a header line.
        """
        best = self.best
        lines = [f"{'K':>4}  {'covariance':<10}  {'params':>7}  {'mean log-lik':>12}  {'BIC':>14}  {'AIC':>14}"]
        for c in self.candidates:
            mark = " *" if c is best else ""
            lines.append(
                f"{c.n_components:>4}  {c.covariance_type:<10}  {c.n_parameters:>7}  {c.mean_log_likelihood:>12.4f}  "
                f"{c.bic:>14.2f}  {c.aic:>14.2f}{mark}"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The result as a JSON-ready dict (without the models).

        Returns
        -------
        result : dict
            ``criterion``, ``scored_on``, ``n_scored``, ``n_passes``, ``records_per_pass``,
            ``best`` (its ``n_components`` and ``covariance_type``) and ``candidates`` (each
            :meth:`Candidate.to_dict`).
        """
        best = self.best
        return {
            "criterion": self.criterion,
            "scored_on": self.scored_on,
            "n_scored": self.n_scored,
            "n_passes": self.n_passes,
            "records_per_pass": self.records_per_pass,
            "best": {"n_components": best.n_components, "covariance_type": best.covariance_type},
            "candidates": [c.to_dict() for c in self.candidates],
        }


def parse_candidates(text: str) -> list[int]:
    """``"2..12"`` (inclusive), ``"2,4,8"`` or a mix (``"1,3..5"``) as a sorted list of K."""
    ks: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        try:
            if ".." in part:
                low, high = (int(v) for v in part.split(".."))
                if low > high:
                    raise ValueError
                ks.update(range(low, high + 1))
            elif part:
                ks.add(int(part))
        except ValueError:
            raise ValueError(f"cannot read candidates {text!r}; expected e.g. 2..12 or 2,4,8") from None
    if not ks or min(ks) < 1:
        raise ValueError(f"cannot read candidates {text!r}; expected integers >= 1, e.g. 2..12 or 2,4,8")
    return sorted(ks)
