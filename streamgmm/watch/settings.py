"""What a watcher resuming from a checkpoint must share with the run that wrote it: the model's
number of components and feature columns, and the settings that decide what the model's
statistics mean (the record-weight column, and whether incomplete records are marginalized);
and the column options a watcher is given (:func:`check_columns`).

Examples
--------
>>> check_resumed("state", {"nan_policy": "raise"}, {"nan_policy": "skip"})  # both fit complete records
>>> check_resumed("state", {"weight_column": "count"}, {"weight_column": None})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: state holds a model fitted with weight column 'count', not without one; use another state ...
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def check_resumed(path: Any, saved: dict[str, Any], config: dict[str, Any]) -> None:
    """Refuse to continue a model whose checkpoint ``saved`` (its configuration) was written
    with another weight column, or with ``nan_policy='marginalize'`` on one side only (raise and
    skip both fit complete records, so switching between them is allowed)."""
    before, now = saved.get("weight_column"), config.get("weight_column")
    if before != now:
        raise ValueError(
            f"{path} holds a model fitted {_weights(before)}, not {_weights(now)}; "
            "use another state directory to start again"
        )
    before, now = saved.get("nan_policy", "raise"), config.get("nan_policy", "raise")
    if (before == "marginalize") != (now == "marginalize"):
        raise ValueError(
            f"{path} holds a model fitted with nan_policy={before!r}, not {now!r}; "
            "use another state directory to start again"
        )


def check_model_matches(path: Any, model: Any, n_components: int | None, columns: list[str] | None) -> None:
    """Refuse a checkpointed ``model`` of another number of components or other feature columns
    than the ones asked for (None: not asked)."""
    if n_components is not None and n_components != model.n_components:
        raise ValueError(
            f"{path} holds a model of {model.n_components} components, "
            f"not {n_components}; use another state directory to start again"
        )
    names = model.fitted_state_.feature_names
    if columns is not None and names is not None and columns != names:
        raise ValueError(f"{path} holds a model of columns {names}, not {columns}")


def _weights(column: str | None) -> str:
    return "without one" if column is None else f"with weight column {column!r}"


def check_columns(
    columns: Sequence[str] | None, passthrough: Sequence[str], keep: Sequence[str], weight_column: str | None
) -> None:
    """Column options that name a column twice, or are given as one string, are refused."""
    for name, value in (("columns", columns), ("passthrough", passthrough), ("keep", keep)):
        if isinstance(value, str):
            raise TypeError(f"{name} is a list of column names, not a single string")
    if weight_column is not None and weight_column in [*(columns or ()), *passthrough]:
        raise ValueError(f"the weight column {weight_column!r} is also named in columns or passthrough")
    if set(columns or ()) & set(passthrough):
        raise ValueError(
            f"columns {list(columns)} and passthrough {list(passthrough)} share a column; a column "
            "is a feature or passed through"
        )
