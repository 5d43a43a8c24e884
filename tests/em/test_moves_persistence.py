"""The births' and merges' state in the model file: saved and loaded bit for bit, so a stream
resumed from a file after every call takes the moves an uninterrupted one takes; a file whose
moves are damaged or hostile is refused naming the field."""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from shared_helpers import FITTED_ARRAYS, MOVES_ARRAYS, assert_bit_identical, assert_bit_identical_models, npy

from streamgmm import ModelFileError, StreamingGaussianMixture
from streamgmm.estimator.persistence import model_from_document
from streamgmm.io.model.file import read_model
from streamgmm.mixture.covariance import COVARIANCE_TYPES

K = 3
CHUNK = 1000
PER_CLUSTER = 4000


@pytest.fixture(scope="module")
def sorted_stream() -> np.ndarray:
    """Three well separated 2-D clusters, the stream sorted by cluster: the first sample shows
    only the first one, so the others need births."""
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(centre, 1.0, (PER_CLUSTER, 2)) for centre in ((0, 0), (12, 0), (0, 12))])


def new_model(covariance_type: str = "full", **params: Any) -> StreamingGaussianMixture:
    return StreamingGaussianMixture(
        K, covariance_type=covariance_type, random_state=0, batch_size=500, init_size=1000, **params
    )


def reloaded(model: StreamingGaussianMixture, path: Path) -> StreamingGaussianMixture:
    model.save(path)
    return StreamingGaussianMixture.load(path)


# --------------------------------------------------------------------------- round trip


@pytest.fixture(scope="module")
def mid_stream(sorted_stream) -> StreamingGaussianMixture:
    """A model in the middle of the second cluster: a birth taken and novel records waiting
    in the reservoir."""
    model = new_model()
    for start in range(0, 7 * CHUNK, CHUNK):
        model.partial_fit(sorted_stream[start : start + CHUNK])
    assert model.fit_history_.moves and len(model.online_state_.moves.reservoir) > 0
    return model


def test_round_trip_of_a_non_empty_reservoir_is_bit_for_bit(tmp_path, mid_stream) -> None:
    loaded = reloaded(mid_stream, tmp_path / "m.sgmm")
    assert_bit_identical_models(loaded, mid_stream)
    assert loaded.moves == "auto"
    with zipfile.ZipFile(tmp_path / "m.sgmm") as archive:
        document = json.loads(archive.read("model.json"))
    assert set(MOVES_ARRAYS) <= set(document["arrays"])
    moves = mid_stream.online_state_.moves
    assert document["online"]["moves"]["seed"] == moves.seed and 0 <= moves.seed < 2**63


def test_round_trip_keeps_every_field_apart(tmp_path, mid_stream) -> None:
    """Each scalar and array given a value of its own (a swap of two fields would show), among
    them a refused birth's ``tried_at`` and a non-zero novel log-likelihood."""
    moves = mid_stream.online_state_.moves
    r = len(moves.reservoir)
    reservoir = replace(
        moves.reservoir.merged(),
        log_weights=np.arange(1.0, r + 1.0) / 7,
        keys=-np.arange(r) - 0.25,
        offered_weight=123.625,
        tried_at=99.5,
    )
    novel = replace(moves.novel, counts=moves.novel.counts + 0.125, n_records=0.875, log_likelihood=-3.5)
    special = replace(moves, seed=2**63 - 1, reservoir=reservoir, novel=novel, log_scale=2.75)
    model = reloaded(mid_stream, tmp_path / "base.sgmm")  # a copy to change
    model.fitted_state_ = replace(model.fitted_state_, state=replace(model.online_state_, moves=special))
    assert_bit_identical(reloaded(model, tmp_path / "m.sgmm").online_state_.moves, special, "moves")


def test_moves_parameter_round_trips_and_off_leaves_no_moves_in_the_file(tmp_path, sorted_stream) -> None:
    model = new_model(moves="off").partial_fit(sorted_stream[:CHUNK])
    assert model.online_state_.moves is None
    loaded = reloaded(model, tmp_path / "off.sgmm")
    assert loaded.moves == "off" and loaded.online_state_.moves is None
    assert loaded.get_params() == model.get_params()
    document, arrays = read_model(tmp_path / "off.sgmm")
    assert "moves" not in document["online"] and not any(name.startswith("moves.") for name in arrays)
    assert document["estimator_params"]["moves"] == "off"
    # Resumed, it stays without moves, as the uninterrupted model does.
    model.partial_fit(sorted_stream[CHUNK : 2 * CHUNK])
    loaded.partial_fit(sorted_stream[CHUNK : 2 * CHUNK])
    assert_bit_identical_models(loaded, model)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_resumed_from_a_file_after_every_call_equals_the_uninterrupted_stream(
    tmp_path, sorted_stream, covariance_type: str
) -> None:
    uninterrupted = new_model(covariance_type)
    resumed = new_model(covariance_type)
    reservoir_sizes = []
    for start in range(0, len(sorted_stream), CHUNK):
        chunk = sorted_stream[start : start + CHUNK]
        uninterrupted.partial_fit(chunk)
        resumed = reloaded(resumed.partial_fit(chunk), tmp_path / "m.sgmm")
        assert_bit_identical_models(resumed, uninterrupted)
        reservoir_sizes.append(len(resumed.online_state_.moves.reservoir))
    assert any(reservoir_sizes), "no file carried novel records: the test would show nothing"
    births = [move for move in uninterrupted.fit_history_.moves if move["kind"] == "birth"]
    assert births
    # The births did their job: one component per cluster.
    centres = np.array([[0, 0], [12, 0], [0, 12]])
    nearest = np.linalg.norm(uninterrupted.means_[:, None] - centres[None], axis=2).argmin(axis=1)
    assert sorted(nearest) == [0, 1, 2]


def test_a_forgetting_stream_resumed_after_every_call_changes_course_as_the_uninterrupted_one(
    tmp_path, sorted_stream
) -> None:
    uninterrupted = new_model(step_floor=0.2)
    resumed = new_model(step_floor=0.2)
    fresh = []
    for start in range(0, len(sorted_stream), CHUNK):
        chunk = sorted_stream[start : start + CHUNK]
        uninterrupted.partial_fit(chunk)
        resumed = reloaded(resumed.partial_fit(chunk), tmp_path / "m.sgmm")
        assert_bit_identical_models(resumed, uninterrupted)
        fresh.append(resumed.online_state_.moves.fresh_until)
    # Each new cluster changed the course; the files carried the refits still to come.
    assert [m["step"] for m in uninterrupted.fit_history_.moves if m["kind"] == "change"] == [9, 17]
    assert max(fresh) == 5.0


# --------------------------------------------------------------------------- hostile files


@pytest.fixture(scope="module")
def good_file(tmp_path_factory, mid_stream) -> Path:
    path = tmp_path_factory.mktemp("moves") / "good.sgmm"
    mid_stream.save(path)
    return path


def variant(good: Path, path: Path, arrays: dict[str, np.ndarray | None], **moves: Any) -> Path:
    """The good file with some ``moves.*`` arrays replaced (None: removed from the file and its
    list) and some ``online.moves`` scalars set (``online_moves``: the whole of it, None to
    remove it)."""
    with zipfile.ZipFile(good) as archive:
        contents = {name: archive.read(name) for name in archive.namelist()}
    document = json.loads(contents["model.json"])
    for name, value in arrays.items():
        if value is None:
            del contents[f"arrays/{name}.npy"]
            document["arrays"].remove(name)
        else:
            contents[f"arrays/{name}.npy"] = npy(value)
    for name, value in moves.items():
        if name == "online_moves":
            if value is None:
                del document["online"]["moves"]
            else:
                document["online"]["moves"] = value
        else:
            document["online"]["moves"][name] = value
    contents["model.json"] = json.dumps(document).encode()  # NaN written as the token NaN
    with zipfile.ZipFile(path, "w") as archive:
        for name, body in contents.items():
            archive.writestr(name, body)
    return path


def hostile_cases(model: StreamingGaussianMixture) -> dict[str, tuple[dict[str, Any], dict[str, Any], str]]:
    """name -> (arrays to replace, scalars to set, what the message must say)."""
    moves = model.online_state_.moves
    records, weights, keys = moves.reservoir.records, moves.reservoir.log_weights, moves.reservoir.keys
    r, d = records.shape
    capacity = moves.capacity()
    with_nan = records.copy()
    with_nan[r - 1, 1] = np.nan
    negative = weights.copy()
    negative[0] = -1.0
    zero = weights.copy()
    zero[-1] = 0.0
    counts = moves.novel.counts.copy()
    counts[1] = -0.5
    second = moves.novel.second.copy()
    second.flat[0] = np.inf
    rng = np.random.default_rng(0)
    big = capacity + 1
    return {
        "records_wrong_width": ({"moves.records": np.zeros((r, d + 1))}, {}, r"array moves\.records has shape"),
        "records_flat": ({"moves.records": records.ravel()}, {}, r"array moves\.records has shape"),
        "weights_wrong_length": ({"moves.log_weights": np.ones(r + 1)}, {}, r"array moves\.log_weights has shape"),
        "keys_wrong_length": ({"moves.keys": keys[:-1]}, {}, r"array moves\.keys has shape"),
        "novel_sums_wrong_shape": (
            {"moves.novel.sums": np.zeros((K + 1, d))},
            {},
            r"array moves\.novel\.sums has shape \(4, 2\), expected \(3, 2\)",
        ),
        "novel_second_wrong_shape": (
            {"moves.novel.second": np.zeros((K, d))},
            {},
            r"array moves\.novel\.second has shape",
        ),
        "novel_shift_wrong_shape": ({"moves.novel.shift": np.zeros(d + 1)}, {}, r"array moves\.novel\.shift"),
        "records_nan": ({"moves.records": with_nan}, {}, r"moves\.records holds a non-finite value"),
        "keys_inf": ({"moves.keys": np.full(r, -np.inf)}, {}, r"moves\.keys holds a non-finite value"),
        "novel_second_inf": ({"moves.novel.second": second}, {}, r"moves\.novel\.second holds a non-finite"),
        "negative_weight": ({"moves.log_weights": negative * np.inf}, {}, r"moves\.log_weights holds a non-finite"),
        "zero_weight": ({"moves.log_weights": zero * np.nan}, {}, r"moves\.log_weights holds a non-finite"),
        "negative_novel_count": ({"moves.novel.counts": counts}, {}, r"moves\.novel\.counts must be non-negative"),
        "integer_weights": ({"moves.log_weights": np.ones(r, dtype=np.int64)}, {}, r"moves\.log_weights holds int64"),
        "over_capacity": (
            {
                "moves.records": rng.normal(size=(big, d)),
                "moves.log_weights": np.ones(big),
                "moves.keys": rng.normal(size=big),
            },
            {},
            rf"array moves\.records holds {big} reservoir records, more than the reservoir's capacity of {capacity}",
        ),
        "missing_array": ({"moves.keys": None}, {}, r"array moves\.keys is missing"),
        "arrays_without_scalars": ({}, {"online_moves": None}, r"array moves\.records is there without"),
        "moves_not_an_object": ({}, {"online_moves": [1, 2]}, r"online\.moves is not a JSON object"),
        "seed_negative": ({}, {"seed": -1}, r"online\.moves\.seed must be an integer in \[0, 2\*\*63\)"),
        "seed_too_large": ({}, {"seed": 2**63}, r"online\.moves\.seed must be an integer"),
        "seed_float": ({}, {"seed": 1.5}, r"online\.moves\.seed must be an integer"),
        "seed_string": ({}, {"seed": "7"}, r"online\.moves\.seed must be an integer"),
        "seed_bool": ({}, {"seed": True}, r"online\.moves\.seed must be an integer"),
        "seed_missing": ({}, {"online_moves": {}}, r"online\.moves\.seed must be an integer .*, got None"),
        "log_scale_nan": ({}, {"log_scale": float("nan")}, r"online\.moves\.log_scale must be a finite number"),
        "log_scale_negative": ({}, {"log_scale": -1.0}, r"online\.moves\.log_scale must be >= 0"),
        "offered_weight_string": ({}, {"offered_weight": "1"}, r"online\.moves\.offered_weight must be a finite"),
        "tried_at_infinite": ({}, {"tried_at": float("inf")}, r"online\.moves\.tried_at must be a finite number"),
        "tried_after_offered": ({}, {"tried_at": 1e9}, r"online\.moves\.tried_at .* exceeds"),
        "novel_n_records_negative": ({}, {"novel_n_records": -2.0}, r"online\.moves\.novel_n_records must be >= 0"),
        "sample_records_inf": (
            {
                "moves.sample.records": np.full((2, d), np.inf),
                "moves.sample.log_weights": np.ones(2),
                "moves.sample.keys": np.zeros(2),
            },
            {},
            r"moves\.sample\.records holds an infinite value",
        ),
        "sample_weights_negative": (
            {
                "moves.sample.records": np.zeros((2, d)),
                "moves.sample.log_weights": np.array([0.0, np.inf]),
                "moves.sample.keys": np.zeros(2),
            },
            {},
            r"moves\.sample\.log_weights holds a non-finite value",
        ),
        "sample_wrong_width": (
            {
                "moves.sample.records": np.zeros((2, d + 1)),
                "moves.sample.log_weights": np.ones(2),
                "moves.sample.keys": np.zeros(2),
            },
            {},
            r"arrays moves\.sample\.records, moves\.sample\.log_weights, moves\.sample\.keys have shapes",
        ),
        "sample_over_size": (
            {
                "moves.sample.records": np.zeros((3, d)),
                "moves.sample.log_weights": np.ones(3),
                "moves.sample.keys": np.zeros(3),
            },
            {"sample_size": 2},
            r"moves\.sample\.records holds 3 records, more than sample_size 2",
        ),
        "sample_size_negative": ({}, {"sample_size": -1}, r"online\.moves\.sample_size must be an integer"),
        "next_refit_nan": ({}, {"next_refit": float("nan")}, r"online\.moves\.next_refit must be a finite number"),
        "fresh_until_negative": ({}, {"fresh_until": -1.0}, r"online\.moves\.fresh_until must be a finite number >= 0"),
        "fresh_until_inf": ({}, {"fresh_until": float("inf")}, r"online\.moves\.fresh_until must be a finite number"),
        "fresh_until_string": ({}, {"fresh_until": "20"}, r"online\.moves\.fresh_until must be a finite number"),
    }


HOSTILE = [
    "records_wrong_width",
    "records_flat",
    "weights_wrong_length",
    "keys_wrong_length",
    "novel_sums_wrong_shape",
    "novel_second_wrong_shape",
    "novel_shift_wrong_shape",
    "records_nan",
    "keys_inf",
    "novel_second_inf",
    "negative_weight",
    "zero_weight",
    "negative_novel_count",
    "integer_weights",
    "over_capacity",
    "missing_array",
    "arrays_without_scalars",
    "moves_not_an_object",
    "seed_negative",
    "seed_too_large",
    "seed_float",
    "seed_string",
    "seed_bool",
    "seed_missing",
    "log_scale_nan",
    "log_scale_negative",
    "offered_weight_string",
    "tried_at_infinite",
    "tried_after_offered",
    "novel_n_records_negative",
    "sample_records_inf",
    "sample_weights_negative",
    "sample_wrong_width",
    "sample_over_size",
    "sample_size_negative",
    "next_refit_nan",
    "fresh_until_negative",
    "fresh_until_inf",
    "fresh_until_string",
]


def test_hostile_cases_are_all_tested_and_the_good_file_loads(good_file, mid_stream) -> None:
    assert sorted(hostile_cases(mid_stream)) == sorted(HOSTILE)
    assert_bit_identical_models(StreamingGaussianMixture.load(good_file), mid_stream)


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_moves_in_a_model_file_are_refused_naming_the_field(tmp_path, good_file, mid_stream, case) -> None:
    arrays, scalars, message = hostile_cases(mid_stream)[case]
    path = variant(good_file, tmp_path / f"{case}.sgmm", arrays, **scalars)
    with pytest.raises(ModelFileError, match=message) as info:
        StreamingGaussianMixture.load(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("case", ["negative_weight", "over_capacity", "seed_too_large", "records_nan"])
def test_hostile_moves_given_to_from_document_directly_are_refused(tmp_path, good_file, mid_stream, case) -> None:
    """``from_document`` checks the moves itself, for a caller that did not read the file with
    :func:`read_model` (which checks them first)."""
    arrays, scalars, message = hostile_cases(mid_stream)[case]
    document, good_arrays = read_model(good_file)
    document = json.loads(json.dumps(document))
    document["online"]["moves"].update(scalars)
    with pytest.raises(ModelFileError, match=message):
        model_from_document(StreamingGaussianMixture, document, {**good_arrays, **arrays})


def test_hostile_moves_in_memory_are_not_written(tmp_path, mid_stream) -> None:
    model = reloaded(mid_stream, tmp_path / "m.sgmm")  # a copy to change
    moves = model.online_state_.moves
    weights = moves.reservoir.log_weights.copy()
    weights[0] = np.nan
    # Planted: the writer must refuse what it finds.
    state = replace(model.online_state_, moves=replace(moves, reservoir=replace(moves.reservoir, log_weights=weights)))
    model.fitted_state_ = replace(model.fitted_state_, state=state)
    with pytest.raises(ModelFileError, match=r"not written.*moves\.log_weights holds a non-finite value"):
        model.save(tmp_path / "bad.sgmm")
    assert not (tmp_path / "bad.sgmm").exists()


def test_a_file_without_moves_loads_and_resumes_with_fresh_moves(
    tmp_path, good_file, mid_stream, sorted_stream
) -> None:
    """A file written before moves existed (no ``online.moves``, no ``moves.*`` arrays) loads
    without them; ``partial_fit`` then starts them afresh (``moves="auto"``)."""
    path = variant(good_file, tmp_path / "old.sgmm", dict.fromkeys(MOVES_ARRAYS), online_moves=None)
    old = StreamingGaussianMixture.load(path)
    assert old.online_state_.moves is None
    for name in FITTED_ARRAYS:
        assert np.array_equal(getattr(old, name), getattr(mid_stream, name)), name
    old.partial_fit(sorted_stream[7 * CHUNK : 8 * CHUNK])
    assert old.online_state_.moves is not None and old.n_steps_ == mid_stream.n_steps_ + 2
