"""Missing values under hostile input: a feature that is never observed.

With ``nan_policy="marginalize"`` a feature with no observed value has nothing to estimate its
mean and variance from; EM would keep the start's invention (mean 0, variance ``reg_covar``)
and every later record that has it would score about -1e6. Every way a fit starts (the default
plan, online and batch EM, ``partial_fit``, ``select``, a stream read once, the command line)
must fail naming the feature instead: by index for arrays, by column name for named data. A
feature missing from later chunks only is what marginalising is for, and still fits.

Oracles: the error names the feature the test removed; a model that has one is compared with
the generating parameters.

Wide incomplete records are slow (each pattern its own factorisation): the command shows
progress while the start's EM runs on the sample, not only during passes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shared_helpers import assert_one_error_line, on_a_terminal, run_streamgmm

from streamgmm import DataError, StreamingGaussianMixture, select

MEANS = np.array([[-4.0, 0.0, 2.0], [4.0, 1.0, -2.0]])


def records(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return MEANS[rng.integers(0, 2, n)] + rng.normal(size=(n, 3))


def never_observed(n: int, feature: int = 1, seed: int = 0) -> np.ndarray:
    X = records(n, seed)
    X[:, feature] = np.nan
    X[::3, (feature + 1) % 3] = np.nan  # other gaps, as real data would have
    return X


def marginalizing(**options) -> StreamingGaussianMixture:
    return StreamingGaussianMixture(2, nan_policy="marginalize", random_state=0, **options)


@pytest.mark.parametrize("algorithm", ["auto", "online", "batch"])
def test_fit_fails_naming_a_feature_no_record_observes(algorithm) -> None:
    model = marginalizing(algorithm=algorithm)
    with pytest.raises(DataError, match=r"feature 1 \(0-based\) has no observed value in any of the 3000 records"):
        model.fit(never_observed(3000))
    assert not hasattr(model, "means_")


def test_a_sample_of_larger_data_that_never_observes_a_feature_fails_naming_it() -> None:
    # The feature is never observed in the sample, nor anywhere else.
    with pytest.raises(DataError, match=r"feature 2 \(0-based\) has no observed value in the 1000 records the fit"):
        marginalizing(init_size=1000, batch_size=500).fit(never_observed(5000, feature=2))


def test_named_columns_and_zero_weights_and_select_name_the_feature() -> None:
    frame = pd.DataFrame(never_observed(600), columns=["a", "b", "c"])
    with pytest.raises(DataError, match="column 'b' has no observed value"):
        marginalizing().fit(frame)
    # Observed only in records of weight zero: as good as never.
    X = never_observed(600)
    X[:5, 1] = 1.0
    weights = np.r_[np.zeros(5), np.ones(595)]
    with pytest.raises(DataError, match=r"feature 1 \(0-based\)"):
        marginalizing().fit(X, sample_weight=weights)
    with pytest.raises(DataError, match="column 'b' has no observed value"):
        select(frame, [1, 2], nan_policy="marginalize", random_state=0)


def test_partial_fit_starts_only_on_a_chunk_that_observes_every_feature() -> None:
    model = marginalizing(batch_size=500)
    with pytest.raises(DataError, match=r"feature 1 \(0-based\) has no observed value in any of the 1000 records"):
        model.partial_fit(never_observed(1000))
    assert not hasattr(model, "means_")
    # A first chunk that observes it starts the model; later chunks may miss the feature entirely.
    model.partial_fit(records(2000, seed=1))
    for seed in range(2, 5):
        model.partial_fit(never_observed(2000, seed=seed))
    order = np.argsort(model.means_[:, 0])
    np.testing.assert_allclose(model.means_[order], MEANS, atol=0.2)
    assert model.score(records(2000, seed=9)) > -6.0  # about -4.3 under the truth, not -1e6


def test_a_stream_whose_head_never_observes_a_feature_fails_naming_it() -> None:
    """The feature is observed later, but a stream read once starts on its head: the start
    cannot place a feature it has not seen, so the fit refuses rather than invent it."""

    def chunks():
        yield never_observed(1500)
        yield records(1500, seed=1)

    with pytest.raises(DataError, match=r"feature 1 \(0-based\) has no observed value in the 1000 records"):
        marginalizing(init_size=1000, batch_size=500).fit(chunks())


def test_the_command_line_names_a_column_with_no_value(tmp_path) -> None:
    X = never_observed(900)
    lake = tmp_path / "lake"
    lake.mkdir()
    pq.write_table(
        pa.table({"x": X[:, 0], "y": pa.array(X[:, 1], mask=np.isnan(X[:, 1])), "z": X[:, 2]}),
        lake / "part-0.parquet",
    )
    model = tmp_path / "model.sgmm"
    result = run_streamgmm("fit", lake, "-k", "2", "--nan-policy", "marginalize", "--model", model)
    assert_one_error_line(result, "column 'y' has no observed value in any of the 900 records")
    assert not model.exists()


def test_the_command_shows_progress_while_the_start_runs_on_incomplete_records(tmp_path) -> None:
    """A lake the initialisation sample holds whole is fitted by the start's EM alone: with
    missing values at width that can take minutes, and it is shown as a bar of records
    processed; an online fit shows it and then its pass."""
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(-3, 1, (600, 8)), rng.normal(3, 1, (600, 8))])
    X[rng.random(X.shape) < 0.3] = np.nan
    X[np.isnan(X).all(axis=1), 0] = 0.0
    lake = tmp_path / "lake"
    lake.mkdir()
    columns = {f"x{i}": pa.array(X[:, i], mask=np.isnan(X[:, i])) for i in range(X.shape[1])}
    pq.write_table(pa.table(columns), lake / "part-0.parquet")
    common = ["fit", lake, "-k", 2, "--nan-policy", "marginalize", "--batch-size", 256]
    code, stdout, shown = on_a_terminal(*common, "--model", tmp_path / "m.sgmm")
    assert code == 0, shown
    assert "fit start (EM on the sample)" in shown and "records/s" in shown, shown
    assert "fit pass" not in shown  # the sample was all the data: no pass
    assert stdout.startswith("fitted 2 full components on 1,200 records")
    code, stdout, shown = on_a_terminal(*common, "--algorithm", "online", "--model", tmp_path / "o.sgmm")
    assert code == 0, shown
    assert shown.index("fit start (EM on the sample)") < shown.index("fit pass 1"), shown
    code, stdout, shown = on_a_terminal(*common, "--model", tmp_path / "q.sgmm", "-q")
    assert code == 0 and shown == ""
