"""Plots of a fitted model, and the ``select``/``plot`` commands end to end.

The PNGs are checked as files (signature, size from the header, decoded by matplotlib); the
pixels themselves were looked at by eye when this was written.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from shared_helpers import run_each_here, run_streamgmm_here

matplotlib = pytest.importorskip("matplotlib")

import streamgmm  # noqa: E402
from streamgmm import StreamingGaussianMixture  # noqa: E402
from streamgmm.datasets.synthetic_lake import write_lake  # noqa: E402
from streamgmm.mixture.covariance import COVARIANCE_TYPES  # noqa: E402
from streamgmm.plotting import figure_size, plot_model, png_size, resolve_pairs  # noqa: E402


def decoded(path) -> np.ndarray:
    from matplotlib.image import imread

    return imread(path)


def test_one_feature_draws_the_histogram_and_bell_curves(tmp_path):
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(160, 7, (3000, 1)), rng.normal(178, 7, (3000, 1))])
    model = StreamingGaussianMixture(2, random_state=0, batch_size=500).fit(X)
    path = plot_model(model, X, out=tmp_path / "heights.png", sample=2000)
    assert png_size(path) == figure_size(1, 0) == (800, 800)
    image = decoded(path)
    assert image.shape[:2] == (800, 800)
    assert image[..., :3].std() > 0.05  # not a blank canvas
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temporary left over


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_several_features_draw_one_panel_per_pair(tmp_path, covariance_type):
    X, _, _ = streamgmm.make_mixture(
        4000, n_components=3, n_features=4, covariance_type=covariance_type, random_state=1
    )
    model = StreamingGaussianMixture(3, covariance_type=covariance_type, random_state=0, batch_size=500).fit(X)
    path = plot_model(model, X, out=tmp_path / "pairs.png", pairs=[(0, 1), (2, 3), (0, 3)], sample=1000)
    assert png_size(path) == (1500, 800)
    assert decoded(path).shape[:2] == (800, 1500)


def test_without_data_and_for_batch_em(tmp_path):
    X, _, _ = streamgmm.make_mixture(3000, n_components=2, n_features=3, random_state=2)
    model = StreamingGaussianMixture(2, algorithm="batch", random_state=0).fit(X)
    path = plot_model(model, out=tmp_path / "batch.png")
    assert png_size(path) == (1000, 800)  # default pairs for d=3: (0, 1) and (1, 2)


def test_pairs_by_index_or_name_and_their_errors():
    names = ["a", "b", "c", "d", "e"]
    assert resolve_pairs(None, names) == [(0, 1), (2, 3), (3, 4)]
    assert resolve_pairs(None, names[:2]) == [(0, 1)]
    assert resolve_pairs("0:1, c:e", names) == [(0, 1), (2, 4)]
    assert resolve_pairs([("b", 3)], names) == [(1, 3)]
    for bad, message in (
        ("0:9", "out of range"),
        ("a:z", "no feature 'z'"),
        ("a:a", "two different"),
        ("0:1:2", "cannot read"),
        ("0:1,0:2,0:3,0:4,1:2", "at most"),
    ):
        with pytest.raises(ValueError, match=message):
            resolve_pairs(bad, names)


def test_png_size_refuses_other_files(tmp_path):
    (tmp_path / "x.png").write_bytes(b"GIF89a" + bytes(30))
    with pytest.raises(ValueError, match="not a PNG"):
        png_size(tmp_path / "x.png")


def test_cli_select_then_plot_then_info(tmp_path):
    info = write_lake(
        tmp_path / "lake", n_records=9000, n_components=3, n_features=2, n_files=3, row_group_size=1500, seed=6
    )
    best = tmp_path / "best.sgmm"
    selected = run_streamgmm_here(
        "select",
        info.path,
        "--passthrough",
        "id",
        "-k",
        "1..5",
        "--covariance",
        "full,diag",
        "--model",
        best,
        "--batch-size",
        "1000",
        "--json",
    )
    assert selected.returncode == 0, selected.stderr
    summary = json.loads(selected.stdout)
    assert summary["best"] == {"n_components": 3, "covariance_type": "full"}
    assert len(summary["candidates"]) == 10 and summary["n_scored"] == 9000
    model = StreamingGaussianMixture.load(best)
    assert model.n_components == 3 and list(model.feature_names_in_) == ["x0", "x1"]
    bics = {(c["n_components"], c["covariance_type"]): c["bic"] for c in summary["candidates"]}
    # The reported BIC is the estimator's own on the same data.
    assert bics[(3, "full")] == pytest.approx(
        model.bic(streamgmm.ParquetSource(info.path, columns=["x0", "x1"])), rel=1e-9
    )

    png = tmp_path / "fit.png"
    plotted, described, table, bad = run_each_here(
        ["plot", best, "--data", info.path, "--out", png, "--sample", "2000"],
        ["info", best],
        ["select", info.path, "--passthrough", "id", "-k", "2,3", "--held-out", "1000"],
        ["plot", best, "--out", tmp_path / "x.png", "--pairs", "x0:x9"],
    )
    assert plotted.returncode == 0, plotted.stderr
    assert plotted.stdout.strip() == f"wrote {png} (800x800 PNG)"
    assert png_size(png) == (800, 800)

    # 9,000 records fit in the initialisation sample: the fit is EM on all of them, no online steps.
    assert "fit history: empty (no online mini-batches)" in described.stdout

    assert table.returncode == 0, table.stderr
    assert "scored on held-out reservoir (N = 1,000)" in table.stdout and "best by BIC: K = 3" in table.stdout

    assert bad.returncode == 1 and bad.stderr.startswith("streamgmm: error: no feature 'x9'")


def test_a_watchers_ledger_adds_the_drift_panel(tmp_path):
    X, _, _ = streamgmm.make_mixture(2000, n_components=2, n_features=2, random_state=3)
    model = StreamingGaussianMixture(2, random_state=0, batch_size=500).fit(X)
    move = {"kind": "birth", "step": 9, "born": [1], "merged": [[0, 1]], "gain": 0.3, "records": 400.0}

    def entry(sequence, score, level=None, sd=None, files=0, flagged=False, moves=()):
        return {
            "sequence": sequence,
            "path": f"part-{sequence}.parquet",
            "status": "consumed",
            "records_used": 1000,
            "score": score,
            "level": level,
            "level_sd": sd,
            "level_files": files,
            "flagged": flagged,
            "moves": list(moves),
        }

    ledger = [
        entry(1, None),
        entry(2, -2.86),
        entry(3, -2.84, -2.86, 0.0, 1),
        {"sequence": 4, "path": "bad.parquet", "status": "quarantined"},
        entry(5, -2.83, -2.85, 0.01, 2),
        entry(6, -1459.9, -2.85, 0.012, 3, True, [move]),
        entry(7, float("nan"), "x", None, "3"),  # hostile: drawn around, not a crash
        entry(8, -4.1, -2.94, 0.27, 4),
    ]
    path = plot_model(model, X, out=tmp_path / "drift.png", sample=500, ledger=ledger)
    assert png_size(path) == figure_size(2, 1, drift=True) == (800, 1100)
    assert decoded(path)[..., :3].std() > 0.05
    # Nothing scored yet: the panel says so.
    empty = plot_model(model, out=tmp_path / "empty.png", ledger=[entry(1, None)])
    assert png_size(empty) == (800, 1100)
