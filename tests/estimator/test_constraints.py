"""One table of parameter constraints: the estimator, select and the command line refuse a bad
value the same way, and the command line still names its option."""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
import pytest
from shared_helpers import cli

from streamgmm import StreamingGaussianMixture, select
from streamgmm.cli.parser import build_parser
from streamgmm.estimator.constraints import PARAMETER_CONSTRAINTS, Interval, Options, allowed, check_value

X = np.random.default_rng(0).normal(size=(300, 2))

# (parameter, bad value, the message's expected part); the step schedule's range has its own words.
BAD = [
    ("n_init", 0, "expected an integer >= 1"),
    ("batch_size", 0, "expected an integer >= 1"),
    ("max_passes", 1.5, "expected an integer >= 1"),
    ("init_size", True, "expected an integer >= 1"),
    ("burn_in", -1, "expected an integer >= 0"),
    ("max_iter", -1, "expected an integer >= 0"),
    ("algorithm", "sgd", "expected one of auto, online, batch"),
    ("init_params", "magic", "expected one of kmeans, k-means++, random, random_from_data"),
    ("tol", math.nan, "expected a finite number"),
    ("tol", -1.0, "expected a number >= 0"),
    ("reg_covar", "x", "expected a finite number"),
    ("step_exponent", "x", "expected a finite number"),
    ("step_offset", math.inf, "expected a finite number"),
    ("shuffle", "sometimes", "expected one of True, False, records, row_groups"),
    ("compute_dtype", "float16", "expected one of float64, float32"),
    ("nan_policy", "ignore", "expected one of raise, skip, marginalize"),
    ("moves", "sometimes", "expected one of auto, off"),
]
STEP_RANGE = [
    ("step_exponent", 1.5, r"step_exponent must be in \(0.5, 1\]"),
    ("step_offset", -1.0, "step_offset must be >= 0"),
    ("step_floor", 2.0, r"step_floor must be in \[0, 1\]"),
]


def test_the_table_covers_every_parameter() -> None:
    assert set(PARAMETER_CONSTRAINTS) == set(StreamingGaussianMixture().get_params())


def test_every_default_satisfies_its_constraint() -> None:
    for name, value in StreamingGaussianMixture().get_params().items():
        assert check_value(name, value) is value


@pytest.mark.parametrize(("name", "value", "expected"), BAD, ids=[f"{n}={v!r}" for n, v, _ in BAD])
def test_a_bad_value_is_refused_with_one_message_by_the_estimator_and_select(name, value, expected) -> None:
    message = f"Invalid value for {name!r}: {value!r}; {expected}"
    with pytest.raises(ValueError) as by_estimator:
        StreamingGaussianMixture(2, **{name: value}).fit(X)
    with pytest.raises(ValueError) as by_select:
        select(X, [1, 2], **{name: value})
    with pytest.raises(ValueError) as by_table:
        check_value(name, value)
    assert str(by_estimator.value) == str(by_select.value) == str(by_table.value) == message


@pytest.mark.parametrize(("name", "value", "pattern"), STEP_RANGE, ids=[n for n, _, _ in STEP_RANGE])
def test_the_step_schedule_range_is_refused_alike_by_the_estimator_and_select(name, value, pattern) -> None:
    with pytest.raises(ValueError, match=pattern) as by_estimator:
        StreamingGaussianMixture(2, **{name: value}).fit(X)
    with pytest.raises(ValueError) as by_select:
        select(X, [1, 2], **{name: value})
    assert str(by_select.value) == str(by_estimator.value)


@pytest.mark.parametrize(("name", "value"), [("n_components", 0), ("n_components", 2.0), ("covariance_type", "banana")])
def test_the_shape_parameters_are_refused_by_the_table_message(name, value) -> None:
    with pytest.raises(ValueError) as by_estimator:
        StreamingGaussianMixture(**{name: value}).fit(X)
    assert str(by_estimator.value).startswith(f"Invalid value for {name!r}: {value!r}; expected ")


def test_select_refuses_its_own_options_with_the_same_words() -> None:
    with pytest.raises(ValueError, match=r"^Invalid value for 'held_out': 0; expected an integer >= 1$"):
        select(X, [1, 2], held_out=0)
    with pytest.raises(ValueError, match=r"^Invalid value for 'criterion': 'mdl'; expected one of bic, aic$"):
        select(X, [1, 2], criterion="mdl")
    with pytest.raises(ValueError, match=r"^Invalid value for 'covariance_type': 'banana'; expected one of full"):
        select(X, [1, 2], "full,banana")


def test_select_forwards_every_parameter_a_candidate_shares() -> None:
    shared = dict(
        algorithm="online", tol=1e-2, reg_covar=1e-5, max_iter=50, n_init=2, init_params="random",
        batch_size=100, max_passes=2, step_exponent=0.8, step_offset=3.0, step_floor=0.01, burn_in=1,
        init_size=200, shuffle=False, compute_dtype="float32", nan_policy="skip", moves="off",
    )  # fmt: skip
    per_candidate = {"n_components", "covariance_type", "random_state", "warm_start"}
    per_candidate |= {"weights_init", "means_init", "precisions_init"}
    assert set(shared) | per_candidate == set(PARAMETER_CONSTRAINTS)
    result = select(X, [1, 2], random_state=0, **shared)
    for candidate in result.candidates:
        params = candidate.model.get_params()
        assert {name: params[name] for name in shared} == shared
    with pytest.raises(TypeError, match="warm_start"):
        select(X, [1, 2], warm_start=True)


def test_the_interval_words() -> None:
    assert str(Interval(Integral, 1)) == "an integer >= 1"
    assert str(Interval(Real, 0, None, closed="neither")) == "a number > 0"
    assert str(Interval(Real, 0.5, 1, closed="right")) == "a number in (0.5, 1]"
    assert str(Interval(Real)) == "a finite number"
    assert np.int64(3) in Interval(Integral, 1) and np.float32(0.5) in Interval(Real, 0)
    assert True not in Interval(Integral, 0) and math.nan not in Interval(Real)


# ---------------------------------------------------------------------- the command line


@pytest.mark.parametrize(
    ("argv", "option", "value"),
    [
        (["fit", "lake", "--model", "m.sgmm", "-k", "0"], "-k/--components", "0"),
        (["fit", "lake", "--model", "m.sgmm", "-k", "two"], "-k/--components", "'two'"),
        (["fit", "lake", "--model", "m.sgmm", "-k", "2", "--batch-size", "0"], "--batch-size", "0"),
        (["fit", "lake", "--model", "m.sgmm", "-k", "2", "--passes", "0"], "--passes", "0"),
        (["select", "lake", "-k", "2", "--held-out", "0"], "--held-out", "0"),
        (["select", "lake", "-k", "2", "--passes", "-3"], "--passes", "-3"),
        (["watch", "lake", "--state", "state", "-k", "0"], "-k/--components", "0"),
        (["watch", "lake", "--state", "state", "-k", "2", "--batch-size", "x"], "--batch-size", "'x'"),
    ],
)
def test_cli_usage_errors_name_the_option(capsys, tmp_path, monkeypatch, argv, option, value) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, *argv)
    line = err.strip().splitlines()[-1]
    assert code == 2 and out == "", err
    assert f"argument {option}: expected an integer >= 1, got {value}" in line, line
    for parameter in ("n_components", "batch_size", "max_passes", "held_out", "positive_int"):
        assert parameter not in line, line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("command", "option", "parameter"),
    [
        (["fit", "lake", "--model", "m", "-k", "2"], "--nan-policy", "nan_policy"),
        (["fit", "lake", "--model", "m", "-k", "2"], "--moves", "moves"),
        (["fit", "lake", "--model", "m", "-k", "2"], "--covariance", "covariance_type"),
        (["fit", "lake", "--model", "m", "-k", "2"], "--algorithm", "algorithm"),
        (["fit", "lake", "--model", "m", "-k", "2"], "--compute-dtype", "compute_dtype"),
        (["watch", "lake", "--state", "s"], "--nan-policy", "nan_policy"),
        (["watch", "lake", "--state", "s"], "--covariance", "covariance_type"),
    ],
)
def test_cli_choices_are_the_tables(command, option, parameter) -> None:
    parser = build_parser()
    for value in allowed(parameter):
        args = parser.parse_args([*command, option, value])
        assert getattr(args, option.lstrip("-").replace("-", "_")) == value
    assert isinstance(PARAMETER_CONSTRAINTS[parameter], Options)


def test_cli_refuses_a_choice_outside_the_table(capsys) -> None:
    code, _, err = cli(capsys, "fit", "lake", "--model", "m", "-k", "2", "--nan-policy", "ignore")
    line = err.strip().splitlines()[-1]
    assert code == 2 and "argument --nan-policy: invalid choice: 'ignore'" in line, line
    assert all(repr(value) in line for value in allowed("nan_policy")), line
