"""Pictures of a fitted mixture: the components over the data, and the fit's trace.

One PNG: on top, for one feature, a histogram of a sample of the records with each weighted
component density and the mixture density; for two or more, a scatter of a sample coloured by
most responsible component with 1- and 2-sigma covariance ellipses, one panel per chosen feature
pair. Below, the fit history: mean log-likelihood of each mini-batch before its update and the
step size, against records seen, with re-seeded components marked (for batch EM: the
log-likelihood per iteration). Given a watcher's ledger (``streamgmm plot STATE_DIR``), a third
row draws the drift signal (:mod:`streamgmm.watch.drift`): each file's score before it was
learnt against the level of the files before it and the threshold below which a file is
flagged, flagged files and the files in which components were born marked.

matplotlib is an optional dependency (``pip install streamgmm[plot]``), imported only here and
only when a plot is drawn; figures are drawn with the Agg canvas directly, so the caller's
matplotlib backend is left alone. The file is written atomically.

Examples
--------
>>> import os, tempfile, numpy as np
>>> from streamgmm import StreamingGaussianMixture
>>> from streamgmm.plotting import plot_model, png_size
>>> X = np.concatenate([np.random.default_rng(0).normal(m, 1, (2000, 1)) for m in (-3, 3)])
>>> model = StreamingGaussianMixture(2, random_state=0, batch_size=500).fit(X)
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = plot_model(model, X, out=os.path.join(tmp, "fit.png"))
...     png_size(path)
(800, 800)
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from streamgmm.em.random_state import make_rng
from streamgmm.estimator.base import check_fitted
from streamgmm.estimator.inference import model_source
from streamgmm.io.output.atomic_write import write_bytes_atomically
from streamgmm.io.records.checks import default_feature_names

DPI = 100
HEIGHT = 8.0  # inches
DRIFT_HEIGHT = 3.0  # inches more for the drift panel
PANEL_WIDTH = 5.0  # inches per feature-pair panel
MIN_WIDTH = 8.0
MAX_PAIRS = 4
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _matplotlib() -> tuple[Any, Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Ellipse
    except ImportError:
        raise ImportError("plotting needs matplotlib, an optional dependency: pip install 'streamgmm[plot]'") from None
    return Figure, FigureCanvasAgg, Ellipse


def full_covariances(covariances: np.ndarray, covariance_type: str, n_components: int, n_features: int) -> np.ndarray:
    """Every component's covariance as a (K, d, d) matrix, whatever the covariance type."""
    if covariance_type == "full":
        return covariances
    if covariance_type == "tied":
        return np.broadcast_to(covariances, (n_components, n_features, n_features))
    if covariance_type == "diag":
        return np.stack([np.diag(c) for c in covariances])
    return covariances[:, None, None] * np.eye(n_features)


def resolve_pairs(pairs: Sequence[tuple[Any, Any]] | str | None, feature_names: Sequence[str]) -> list[tuple[int, int]]:
    """Feature pairs as column indices. ``pairs`` may be ``"0:1,2:3"``, ``"x0:x2"``, a list of
    (index or name) pairs, or None: consecutive pairs (0, 1), (2, 3), ... up to three."""
    d = len(feature_names)
    if pairs is None:
        chosen = [(i, i + 1) for i in range(0, d - 1, 2)][:3]
        if d % 2 and len(chosen) < 3 and d > 2:
            chosen.append((d - 2, d - 1))
        return chosen
    if isinstance(pairs, str):
        items = [item.strip() for item in pairs.split(",") if item.strip()]
        pairs = [tuple(item.split(":")) for item in items]  # type: ignore[misc]
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError(f"cannot read feature pairs {','.join(items)!r}; expected e.g. 0:1,2:3 or x0:x2")

    def index(feature: Any) -> int:
        if isinstance(feature, (int, np.integer)) or (isinstance(feature, str) and feature.strip().isdigit()):
            i = int(feature)
            if not 0 <= i < d:
                raise ValueError(f"feature {i} is out of range: the model has {d} features")
            return i
        if feature in feature_names:
            return list(feature_names).index(feature)
        raise ValueError(f"no feature {feature!r}; the model's features are {', '.join(feature_names)}")

    resolved = [(index(a), index(b)) for a, b in pairs]
    if not resolved:
        raise ValueError("no feature pairs given")
    if any(a == b for a, b in resolved):
        raise ValueError("a feature pair needs two different features")
    if len(resolved) > MAX_PAIRS:
        raise ValueError(f"at most {MAX_PAIRS} feature pairs fit in one picture, got {len(resolved)}")
    return resolved


def figure_size(n_features: int, n_pairs: int, drift: bool = False) -> tuple[int, int]:
    """The picture's size in pixels (width, height); ``drift``: with the drift panel."""
    panels = 1 if n_features == 1 else n_pairs
    height = HEIGHT + (DRIFT_HEIGHT if drift else 0.0)
    return int(round(max(MIN_WIDTH, PANEL_WIDTH * panels) * DPI)), int(round(height * DPI))


def png_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) of a PNG file, read from its header; an error if it is not a PNG."""
    with open(path, "rb") as handle:
        head = handle.read(24)
    if len(head) < 24 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise ValueError(f"{path}: not a PNG file")
    return struct.unpack(">II", head[16:24])


def plot_model(
    model: Any,
    data: Any = None,
    *,
    out: str | os.PathLike[str],
    pairs: Sequence[tuple[Any, Any]] | str | None = None,
    sample: int = 5000,
    random_state: Any = 0,
    ledger: Sequence[dict[str, Any]] | None = None,
) -> str:
    """Draw ``model`` (a fitted :class:`~streamgmm.StreamingGaussianMixture`) over a random
    sample of ``sample`` records of ``data`` (anything ``predict`` takes; optional), with its fit
    history, to the PNG ``out``; with a watcher's ``ledger`` (its entries), the drift signal
    too. Returns ``out``."""
    check_fitted(model)
    Figure, FigureCanvasAgg, Ellipse = _matplotlib()
    names = model.fitted_state_.feature_names or default_feature_names(model.n_features_in_)
    k, d = model.means_.shape
    chosen = resolve_pairs(pairs, names) if d > 1 else []
    X = None
    if data is not None:
        if not isinstance(sample, (int, np.integer)) or sample < 1:
            raise ValueError(f"Invalid value for 'sample': {sample!r}; expected an integer >= 1")
        source = model_source(model, data)
        X = source.sample(int(sample), make_rng(random_state)).features
        if X.shape[0] == 0:
            raise ValueError("the data hold no records to plot")
    width, height = figure_size(d, len(chosen), drift=ledger is not None)
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    columns = max(1, len(chosen))
    ratios = [3, 2] if ledger is None else [3, 2, 2]
    grid = figure.add_gridspec(len(ratios), columns, height_ratios=ratios)
    colours = _colours(k)
    covariances = full_covariances(model.covariances_, model.covariance_type, k, d)
    title = f"{k} {model.covariance_type} components"
    if X is not None:
        title += f" over {X.shape[0]:,} sampled records"
    figure.suptitle(title, fontsize=13)
    if d == 1:
        _density_panel(figure.add_subplot(grid[0, :]), model, covariances, X, names[0], colours)
    else:
        labels = model.predict(X) if X is not None else None
        for column, (a, b) in enumerate(chosen):
            _pair_panel(
                figure.add_subplot(grid[0, column]),
                model,
                covariances,
                X,
                labels,
                (a, b),
                names,
                colours,
                Ellipse,
                legend=column == 0,
            )
    _trace_panel(figure.add_subplot(grid[1, :]), model)
    if ledger is not None:
        _drift_panel(figure.add_subplot(grid[2, :]), ledger)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    write_bytes_atomically(out, buffer.getvalue())
    return str(out)


def _colours(k: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(k)]


def _density_panel(
    ax: Any, model: Any, covariances: np.ndarray, X: np.ndarray | None, name: str, colours: list[Any]
) -> None:
    """1-D: histogram of the sample, each weighted component density, and their sum."""
    means = model.means_[:, 0]
    sds = np.sqrt(covariances[:, 0, 0])
    low, high = float((means - 4 * sds).min()), float((means + 4 * sds).max())
    if X is not None:
        low, high = min(low, float(X.min())), max(high, float(X.max()))
        ax.hist(
            X[:, 0],
            bins=min(80, max(10, int(np.sqrt(X.shape[0])))),
            range=(low, high),
            density=True,
            color="0.8",
            edgecolor="0.6",
            label=f"data ({X.shape[0]:,} records)",
        )
    grid = np.linspace(low, high, 600)
    densities = (
        model.weights_[:, None]
        * np.exp(-0.5 * ((grid - means[:, None]) / sds[:, None]) ** 2)
        / (sds[:, None] * np.sqrt(2 * np.pi))
    )
    for j in range(len(means)):
        ax.plot(
            grid,
            densities[j],
            color=colours[j],
            lw=1.8,
            ls="--",
            label=f"component {j}: w={model.weights_[j]:.2f}, mean={means[j]:.3g}, sd={sds[j]:.3g}",
        )
    ax.plot(grid, densities.sum(axis=0), color="black", lw=2.2, label="mixture")
    ax.set_xlabel(name, fontsize=11)
    ax.set_ylabel("density", fontsize=11)
    ax.set_xlim(low, high)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.3)  # headroom, so the legend does not hide the curves' tops
    ax.legend(fontsize=9, loc="upper right")


def _pair_panel(
    ax: Any,
    model: Any,
    covariances: np.ndarray,
    X: np.ndarray | None,
    labels: np.ndarray | None,
    pair: tuple[int, int],
    names: list[str],
    colours: list[Any],
    Ellipse: Any,
    legend: bool,
) -> None:
    """2-D and more: a sample coloured by component, with 1- and 2-sigma ellipses of the pair's
    marginal covariances."""
    a, b = pair
    index = [a, b]
    if X is not None and labels is not None:
        ax.scatter(X[:, a], X[:, b], s=4, c=[colours[j] for j in labels], alpha=0.35, linewidths=0, rasterized=True)
    for j in range(model.n_components):
        centre = model.means_[j, index]
        sub = covariances[j][np.ix_(index, index)]
        values, vectors = np.linalg.eigh(sub)
        angle = float(np.degrees(np.arctan2(vectors[1, -1], vectors[0, -1])))
        for radius, style in ((1.0, "-"), (2.0, "--")):
            w, h = 2 * radius * np.sqrt(np.maximum(values[::-1], 0))
            ax.add_patch(Ellipse(tuple(centre), w, h, angle=angle, fill=False, color=colours[j], lw=2, ls=style))
        ax.plot(*centre, marker="x", color="black", ms=8, mew=2)
        ax.plot([], [], color=colours[j], lw=2, label=f"component {j}: w={model.weights_[j]:.2f}")
    ax.plot([], [], color="0.3", lw=1.5, ls="-", label="1 sigma")
    ax.plot([], [], color="0.3", lw=1.5, ls="--", label="2 sigma")
    if X is None:
        ax.autoscale_view()
    ax.set_xlabel(names[a], fontsize=11)
    ax.set_ylabel(names[b], fontsize=11)
    if legend:
        ax.legend(fontsize=8, loc="best", ncol=1 + model.n_components // 8)


def _trace_panel(ax: Any, model: Any) -> None:
    """The fit history: mean log-likelihood per mini-batch and step size, against records seen."""
    trace = model.fit_history_
    if len(trace):
        records = trace.records
        ax.plot(
            records,
            trace.mean_log_likelihood,
            color="tab:blue",
            lw=1.6,
            marker="." if len(trace) < 60 else None,
            alpha=0.6,
            label="mean log-likelihood of a mini-batch, before its update",
        )
        # The records-weighted running mean over the stream so far: the noise of single batches
        # hides the trend.
        weights = np.diff(np.concatenate([[0], records]))
        running = np.cumsum(trace.mean_log_likelihood * weights) / np.maximum(np.cumsum(weights), 1)
        ax.plot(records, running, color="navy", lw=2.2, label="running mean over the stream")
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_xlabel(f"records seen ({trace.n_batches:,} mini-batches, {trace.stride} per point)", fontsize=11)
        ax.xaxis.set_major_formatter(lambda value, _: f"{value:,.0f}")  # 200,000 rather than 0.2 and 1e6
        ax.set_ylabel("mean log-likelihood", fontsize=11, color="tab:blue")
        steps = ax.twinx()
        steps.plot(records, trace.step_size, color="tab:orange", lw=1.4, label="step size")
        steps.set_yscale("log")
        steps.set_ylabel("step size", fontsize=11, color="tab:orange")
        marked = False
        for x, reseeded in zip(records, trace.reseeded):
            if reseeded:
                ax.axvline(x, color="tab:red", ls=":", lw=1.2, label=None if marked else "re-seeded component(s)")
                marked = True
        handles, labels = ax.get_legend_handles_labels()
        more, more_labels = steps.get_legend_handles_labels()
        ax.legend(handles + more, labels + more_labels, fontsize=9, loc="best")
        ax.set_title("fit history", fontsize=11)
    elif model.lower_bounds_:
        ax.plot(
            np.arange(1, len(model.lower_bounds_) + 1),
            model.lower_bounds_,
            color="tab:blue",
            marker="o",
            lw=1.6,
            label="mean log-likelihood per record",
        )
        ax.set_xlabel("iteration", fontsize=11)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("mean log-likelihood", fontsize=11)
        ax.legend(fontsize=9, loc="lower right")
        ax.set_title(f"fit history ({model.algorithm} EM)", fontsize=11)
    else:
        ax.text(0.5, 0.5, "no fit history recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()


def _drift_panel(ax: Any, ledger: Sequence[dict[str, Any]]) -> None:
    """The drift signal, per consumed file: its score before it was learnt, the level of the
    earlier files and the flag threshold under it; flagged files and births marked. Scores far
    below the rest (a regime change) would flatten everything else: they are drawn at the
    panel's bottom edge with their value written by them."""
    from streamgmm.watch.drift import FLAG_SDS, MIN_DROP, MIN_LEVEL_FILES, drift_series

    series = [point for point in drift_series(ledger) if point["sequence"] is not None]
    scored = [point for point in series if point["score"] is not None]
    ax.set_title("drift: each file's mean log-likelihood per record before it was learnt", fontsize=11)
    if not scored:
        ax.text(0.5, 0.5, "no file scored yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    x = np.array([point["sequence"] for point in scored], dtype=float)
    score = np.array([point["score"] for point in scored], dtype=float)
    flagged = np.array([point["flagged"] for point in scored], dtype=bool)
    level = np.array([np.nan if p["level"] is None else p["level"] for p in scored], dtype=float)
    sd = np.array([np.nan if p["level_sd"] is None else p["level_sd"] for p in scored], dtype=float)
    young = np.array([p["level_files"] < MIN_LEVEL_FILES for p in scored], dtype=bool)
    threshold = np.where(young, np.nan, level - np.maximum(FLAG_SDS * sd, MIN_DROP))
    low, high, edge = _drift_range(score, flagged, level, threshold)
    shown = np.maximum(score, edge)
    marker = "." if len(x) < 80 else None
    ax.plot(x, shown, color="tab:blue", lw=1.4, marker=marker, label="score of the file, before learning it")
    ax.step(x, level, where="mid", color="navy", lw=2.0, label="level: weighted mean of earlier scores")
    ax.step(
        x,
        threshold,
        where="mid",
        color="tab:red",
        lw=1.2,
        ls="--",
        label=f"flag threshold: level - max({FLAG_SDS:g} sd, {MIN_DROP:g} nat)",
    )
    if flagged.any():
        ax.scatter(x[flagged], shown[flagged], s=70, marker="v", color="tab:red", zorder=5, label="flagged file")
    for xi, si, yi in zip(x, score, shown):
        if si < edge:  # below the panel: drawn at its edge, with its value
            ax.annotate(f"{si:.4g}", (xi, yi), xytext=(4, 6), textcoords="offset points", fontsize=8, color="tab:red")
    _mark_births(ax, series)
    ax.set_ylim(low, high)
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("file (ledger sequence number)", fontsize=11)
    ax.set_ylabel("nats per record", fontsize=11)
    ax.legend(fontsize=8, loc="best")


def _drift_range(
    score: np.ndarray, flagged: np.ndarray, level: np.ndarray, threshold: np.ndarray
) -> tuple[float, float, float]:
    """The drift panel's y range ``(low, high)`` and the ``edge`` where scores below it are
    drawn: the usual files' range (unflagged scores, levels, thresholds), widened by flagged
    scores near it; scores beyond twice its span below it would squash it flat."""
    # The y range of the usual files: unflagged scores, levels and thresholds.
    usual = np.concatenate([score[~flagged], level[np.isfinite(level)], threshold[np.isfinite(threshold)]])
    if usual.size == 0:
        usual = score
    low, high = float(usual.min()), float(usual.max())
    # Flagged scores near that range widen it; those far below it (beyond twice its span) would
    # squash it flat, and are drawn at its edge instead.
    near = score[flagged & (score >= low - 2 * max(high - low, 1.0))]
    low = min(low, float(near.min())) if near.size else low
    pad = max(0.15 * (high - low), 0.25)
    low, high = low - pad, high + pad
    return low, high, low + pad / 3


def _mark_births(ax: Any, series: Sequence[dict[str, Any]]) -> None:
    """A dotted line and the number born at each file whose moves took a birth."""
    marked = False
    for point in series:
        if any(move["kind"] == "birth" for move in point["moves"]):
            born = sum(len(move["born"]) for move in point["moves"])
            ax.axvline(
                point["sequence"], color="tab:green", ls=":", lw=1.4, label=None if marked else "component(s) born"
            )
            ax.annotate(
                f"+{born}",
                (point["sequence"], 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(3, -12),
                textcoords="offset points",
                fontsize=8,
                color="tab:green",
            )
            marked = True
