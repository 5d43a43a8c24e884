"""The watcher's drift signal: each file's score before it is learnt, the running level of
earlier scores, the flag, and the moves taken per file; ``streamgmm info`` and ``plot`` on it.

Landing files: five from one region, then a regime change (a file from a region 40 standard
deviations away), then a second file of the new region in two mini-batches. The oracle for each
score is the checkpoint kept before that file (``STATE/models/``), loaded and scored
independently with ``score_samples``; the oracle for the level is its closed form.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shared_helpers import cli, run_streamgmm_here

from streamgmm import StreamingGaussianMixture
from streamgmm.watch.checkpoint import StateDirectory, state_summary
from streamgmm.watch.drift import ALPHA, ENTRY_FIELDS, HALF_LIFE_FILES, Level, level_of
from streamgmm.watch.store_state import StoreState, store_state_summary
from streamgmm.watch.watcher import watch

K = 3
BATCH = 1000
SIZES = [BATCH] * 6 + [2 * BATCH]  # the last file: two mini-batches
CHANGE = 5  # index of the first file from the far region (ledger sequence 6)
BASE_TIME = 1_700_000_000


def features(i: int, seed: int = 0) -> np.ndarray:
    X = np.random.default_rng([seed, i]).normal(0.0, 1.0, (SIZES[i], 2))
    return X + 40.0 if i >= CHANGE else X


def write(directory: Path, i: int, seed: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    X = features(i, seed)
    path = directory / f"part-{i:03d}.parquet"
    tmp = directory / f".{path.name}.writing"
    pq.write_table(pa.table({"x0": X[:, 0], "x1": X[:, 1]}), tmp, row_group_size=700)
    os.utime(tmp, (BASE_TIME + i,) * 2)
    os.replace(tmp, path)
    return path


def strict_json(text: str):
    """JSON as other languages read it: NaN and Infinity are not JSON."""

    def refuse(name: str):
        raise ValueError(f"{name} in the output")

    return json.loads(text, parse_constant=refuse)


def ledger(state: Path) -> list[dict]:
    return StateDirectory(state).load().ledger


OPTIONS = {"n_components": K, "batch_size": BATCH, "settle": 0, "once": True}


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("drift") / "landing"
    for i in range(len(SIZES)):
        write(directory, i)
    return directory


@pytest.fixture(scope="module")
def reference(landing, tmp_path_factory) -> tuple[Path, dict]:
    """``streamgmm watch --once --json`` over every file: (state, the command's summary)."""
    state = tmp_path_factory.mktemp("reference") / "state"
    done = run_streamgmm_here(
        "watch", landing, "--state", state, "-k", K, "--batch-size", BATCH, "--settle", 0, "--once", "--json"
    )
    assert done.returncode == 0, done.stderr
    assert "FLAGGED" in done.stderr and "part-005.parquet" in done.stderr  # the log says so as it happens
    return state, json.loads(done.stdout)


def test_regime_change_is_flagged_with_the_score_the_previous_checkpoint_gives(reference) -> None:
    state, summary = reference
    entries = ledger(state)
    assert [e["sequence"] for e in entries] == list(range(1, len(SIZES) + 1))
    assert all(set(ENTRY_FIELDS) <= set(e) for e in entries)
    # The first file made the model: nothing came before it to score it.
    assert entries[0]["score"] is None and entries[0]["level"] is None and not entries[0]["flagged"]
    # The usual files score about -log(2 pi e) = -2.84 nats (a standard normal in 2-D) and are
    # not flagged; the regime change is, by far.
    usual = entries[1:CHANGE]
    assert all(abs(e["score"] + math.log(2 * math.pi * math.e)) < 0.1 for e in usual)
    assert not any(e["flagged"] for e in entries[:CHANGE])
    change = entries[CHANGE]
    assert change["flagged"] and change["score"] < change["level"] - 100
    assert summary["files_flagged"] == sum(e["flagged"] for e in entries) >= 1

    # Each score, independently: the checkpoint kept before the file (models/N.model) scores the
    # file's mini-batches, the second one after the model has learnt the first.
    for entry, i in zip(entries[1:], range(1, len(SIZES))):
        before = StreamingGaussianMixture.load(state / "models" / f"{entry['sequence'] - 1:08d}.model")
        X = features(i)
        scores = [before.score_samples(X[:BATCH])]
        if len(X) > BATCH:
            scores.append(copy.deepcopy(before).partial_fit(X[:BATCH]).score_samples(X[BATCH:]))
        assert entry["score"] == pytest.approx(np.concatenate(scores).mean(), rel=1e-10), entry["path"]

    # The level is the exponentially weighted mean of the earlier scores, in closed form: the
    # first score weighs (1 - a)^(n - 1), the k-th a (1 - a)^(n - k).
    assert ALPHA == pytest.approx(1 - 0.5 ** (1 / HALF_LIFE_FILES))
    earlier = [e["score"] for e in entries[1:CHANGE]]
    n = len(earlier)
    weights = [(1 - ALPHA) ** (n - 1)] + [ALPHA * (1 - ALPHA) ** (n - k) for k in range(2, n + 1)]
    assert change["level"] == pytest.approx(float(np.dot(weights, earlier)), rel=1e-12)
    assert change["level_files"] == n and 0 < change["level_sd"] < 0.1

    # The moves: those of the final model's history whose mini-batch lies in the file.
    final = StreamingGaussianMixture.load(state / "current.model")
    for entry in entries:
        first = 0 if entry["sequence"] == 1 else entries[entry["sequence"] - 2]["step"]
        expected = [m for m in final.fit_history_.moves if first < m["step"] <= entry["step"]]
        assert entry["moves"] == expected, entry["path"]
    # Components are born where the new region appears, in the flagged file (a refit may follow).
    assert [m["kind"] for m in change["moves"]] == ["birth"]
    births = [m for e in entries for m in e["moves"] if m["kind"] == "birth"]
    assert births == change["moves"]


def test_info_shows_the_series_and_counts_flagged_files(reference, capsys) -> None:
    state, _ = reference
    entries = ledger(state)
    described = run_streamgmm_here("info", state, "--json")
    assert described.returncode == 0, described.stderr
    drift = strict_json(described.stdout)["drift"]
    flagged = [e for e in entries if e["flagged"]]
    assert drift["files_flagged"] == len(flagged) and drift["files_scored"] == len(SIZES) - 1
    assert drift["last_flagged"] == {"sequence": flagged[-1]["sequence"], "path": flagged[-1]["path"]}
    assert drift["half_life_files"] == HALF_LIFE_FILES
    assert [p["path"] for p in drift["series"]] == [e["path"] for e in entries]
    for point, entry in zip(drift["series"], entries):
        for key in ("sequence", "records_used", "score", "level", "level_sd", "level_files", "flagged", "moves"):
            assert point[key] == entry[key], key

    code, text, err = cli(capsys, "info", state)
    assert code == 0, err
    assert f"{len(SIZES) - 1} file(s) scored, {len(flagged)} flagged" in text
    line = next(row for row in text.splitlines() if "part-005.parquet" in row and "**" in row)
    assert "birth" in line and f"{entries[CHANGE]['score']:.4f}" in line
    assert not any("**" in row for row in text.splitlines() if "part-001.parquet" in row)


def test_plot_of_a_state_directory_draws_the_drift_panel(reference, tmp_path, capsys) -> None:
    pytest.importorskip("matplotlib")
    from streamgmm.plotting import figure_size, png_size

    state, _ = reference
    out = tmp_path / "drift.png"
    code, printed, err = cli(capsys, "plot", state, "--out", out, "--json")
    assert code == 0, err
    assert json.loads(printed)["out"] == str(out)
    assert png_size(out) == figure_size(2, 1, drift=True) == (800, 1100)
    from matplotlib.image import imread

    assert imread(out)[..., :3].std() > 0.05


def test_a_resumed_watcher_continues_the_level_exactly(landing, reference, tmp_path) -> None:
    """Stopped after four files and restarted: the ledger's drift fields are those of one run."""
    state, _ = reference
    partial = tmp_path / "landing"
    partial.mkdir()
    for path in sorted(landing.glob("*.parquet"))[:4]:
        shutil.copy2(path, partial / path.name)
    watch(partial, tmp_path / "state", **OPTIONS)
    for path in sorted(landing.glob("*.parquet"))[4:]:
        shutil.copy2(path, partial / path.name)
    assert watch(partial, tmp_path / "state", **OPTIONS).files_flagged >= 1
    resumed = ledger(tmp_path / "state")
    for a, b in zip(resumed, ledger(state), strict=True):
        assert {k: a[k] for k in ENTRY_FIELDS} == {k: b[k] for k in ENTRY_FIELDS}, a["path"]


def test_level_flags_only_far_below_and_a_flagged_file_moves_it_as_a_borderline_one() -> None:
    level = Level()
    for score in (-3.0, -3.02, -2.98):
        assert not level.flags(score - 0.9)  # too few files yet, and under a nat
        level = level.updated(score)
    assert level.files == 3 and level.threshold() == pytest.approx(level.mean - 1.0)  # the nat, not 3 sd
    assert not level.flags(level.mean - 0.99) and level.flags(level.mean - 1.01)
    assert level.updated(-3000.0) == level.updated(level.threshold())
    assert level.updated(None) is level
    # A lasting change stops being flagged once the level has followed it.
    shifted = level
    flags = []
    for _ in range(40):
        flags.append(shifted.flags(-6.0))
        shifted = shifted.updated(-6.0)
    assert flags[0] and not flags[-1]


# ---------------------------------------------------------------------- hostile states

HOSTILE = [
    {"score": float("nan"), "level": float("inf"), "level_sd": -float("inf"), "flagged": True},
    {"score": "-3.5", "level": "x", "level_sd": None, "level_files": "3", "moves": "birth"},
    {"score": True, "moves": [None, 7, {"kind": "birth", "born": "x"}, {"born": [1], "gain": float("nan")}]},
    {},  # an entry written before the drift fields existed
]


def hostile_ledger(state: Path) -> list[dict]:
    """The reference ledger with each file's drift fields replaced by hostile ones, in turn."""
    entries = []
    for i, entry in enumerate(ledger(state)):
        plain = {k: v for k, v in entry.items() if k not in ENTRY_FIELDS}
        entries.append({**plain, **HOSTILE[i % len(HOSTILE)]})
    return entries


def test_hostile_drift_fields_do_not_crash_info_plot_or_a_resumed_watcher(landing, reference, tmp_path, capsys) -> None:
    state, _ = reference
    model = StreamingGaussianMixture.load(state / "current.model")
    entries = hostile_ledger(state)
    hostile = StateDirectory(tmp_path / "state")
    with hostile.locked():
        hostile.commit(model, entries, {})
    # NaN and infinities made it into the ledger file as JSON's non-standard constants.
    assert "NaN" in (tmp_path / "state" / "ledger.jsonl").read_text()
    assert level_of(entries) == Level()  # no finite numeric score: no level

    code, printed, err = cli(capsys, "info", tmp_path / "state", "--json")
    assert code == 0, err
    drift = strict_json(printed)["drift"]
    assert drift["files_scored"] == 0 and len(drift["series"]) == len(entries)
    assert all(p["score"] is None and p["level"] is None and p["level_sd"] is None for p in drift["series"])
    assert drift["files_flagged"] == 2  # entries saying "flagged": true, whatever their score
    assert drift["series"][2]["moves"] == [
        {"kind": "birth", "step": None, "born": [1], "merged": [], "gain": None, "records": None}
    ]
    code, printed, err = cli(capsys, "info", tmp_path / "state")
    assert code == 0, err
    assert "0 file(s) scored, 2 flagged" in printed

    pytest.importorskip("matplotlib")
    code, _, err = cli(capsys, "plot", tmp_path / "state", "--out", tmp_path / "hostile.png")
    assert code == 0, err

    # A watcher resumes from it: the level starts again from the next scores.
    more = tmp_path / "landing"
    shutil.copytree(landing, more)
    extra = write(more / "late", 1, seed=1)  # new content: consumed
    summary = watch(more, tmp_path / "state", **OPTIONS)
    assert summary.files_consumed == 1
    last = ledger(tmp_path / "state")[-1]
    assert last["path"] == f"late/{extra.name}" and last["score"] is not None
    assert last["level"] is None and last["level_files"] == 0 and not last["flagged"]


def test_hostile_old_state_without_drift_fields_loads_and_its_store_twin_agrees(landing, reference, tmp_path) -> None:
    """A state directory written before the drift fields existed, and the same ledger in an
    object-store state (file:// here): both load, and ``info`` says the same of both."""
    state, _ = reference
    entries = [{k: v for k, v in e.items() if k not in ENTRY_FIELDS} for e in ledger(state)][:CHANGE]
    before = StreamingGaussianMixture.load(state / "models" / f"{CHANGE:08d}.model")
    old = StateDirectory(tmp_path / "old")
    with old.locked():
        old.commit(before, entries, {})
    store = StoreState(f"file://{tmp_path}/store")
    with store.locked():
        store.commit(before, entries, {})
    local, _ = state_summary(tmp_path / "old")
    remote, _ = store_state_summary(f"file://{tmp_path}/store")
    assert local["drift"] == remote["drift"]
    assert local["drift"]["files_scored"] == local["drift"]["files_flagged"] == 0
    assert [p["score"] for p in local["drift"]["series"]] == [None] * CHANGE

    # Resumed over the rest of the landing: scored from here on; the level needs earlier scores.
    watch(landing, tmp_path / "old", **OPTIONS)
    resumed = ledger(tmp_path / "old")
    assert [e.get("score") is not None for e in resumed] == [False] * CHANGE + [True, True]
    assert resumed[CHANGE]["level"] is None and not resumed[CHANGE]["flagged"]
    assert resumed[CHANGE + 1]["level_files"] == 1 and not resumed[CHANGE + 1]["flagged"]
