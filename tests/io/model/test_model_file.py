"""save/load: exact round trip, resumable stream, no pickle, clear errors, atomic writes."""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from shared_helpers import MOVES_ARRAYS, assert_bit_identical_models

from streamgmm import ModelFileError, NotFittedError, StreamingGaussianMixture, make_mixture
from streamgmm.mixture.covariance import COVARIANCE_TYPES


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return make_mixture(6_000, 3, 3, random_state=2)[0]


def fitted(X: np.ndarray, covariance_type: str = "full", algorithm: str = "online") -> StreamingGaussianMixture:
    return StreamingGaussianMixture(
        3, covariance_type=covariance_type, algorithm=algorithm, batch_size=500, random_state=0
    ).fit(X[:4000])


@pytest.mark.parametrize("algorithm", ["online", "batch"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_round_trip_is_exact(tmp_path, data, covariance_type: str, algorithm: str) -> None:
    model = fitted(data, covariance_type, algorithm)
    model.save(tmp_path / "m.sgmm")
    loaded = StreamingGaussianMixture.load(tmp_path / "m.sgmm")
    assert_bit_identical_models(loaded, model)
    assert loaded.get_params() == model.get_params()
    # Predictions follow from the parameters, so they agree exactly too.
    assert np.array_equal(loaded.score_samples(data[4000:]), model.score_samples(data[4000:]))


@pytest.mark.parametrize("algorithm", ["online", "batch"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_loaded_model_resumes_the_stream_bit_for_bit(tmp_path, data, covariance_type: str, algorithm: str) -> None:
    model = fitted(data, covariance_type, algorithm)
    model.save(tmp_path / "m.sgmm")
    loaded = StreamingGaussianMixture.load(tmp_path / "m.sgmm")
    for chunk in (data[4000:5100], data[5100:]):  # two calls: the counters carry on correctly
        model.partial_fit(chunk)
        loaded.partial_fit(chunk)
        assert_bit_identical_models(loaded, model)
    assert loaded.records_seen_ == model.records_seen_ == 6000
    # And the continued stream is itself still savable and exact.
    loaded.save(tmp_path / "again.sgmm")
    assert_bit_identical_models(StreamingGaussianMixture.load(tmp_path / "again.sgmm"), model)


def test_init_arrays_survive_the_round_trip(tmp_path, data) -> None:
    means = data[:3].copy()
    model = StreamingGaussianMixture(3, means_init=means, random_state=1).fit(data)
    model.save(tmp_path / "m.sgmm")
    loaded = StreamingGaussianMixture.load(tmp_path / "m.sgmm")
    np.testing.assert_array_equal(loaded.means_init, means)
    assert loaded.random_state == 1


def test_file_is_a_documented_zip_of_json_and_npy(tmp_path, data) -> None:
    path = tmp_path / "m.sgmm"
    model = fitted(data)
    model.save(path)
    assert zipfile.is_zipfile(path)
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        # Strict JSON: NaN or Infinity would make the document unreadable to other languages.
        document = json.loads(archive.read("model.json"), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
        assert document["format"] == "streamgmm.model" and document["version"] == 1
        assert document["online"]["step"] == model.n_steps_
        assert document["online"]["records_seen"] == model.records_seen_
        assert {f"arrays/{n}.npy" for n in document["arrays"]} | {"model.json"} == names
        assert {"weights", "means", "covariances", "precisions_cholesky", "statistics.second"} <= set(
            document["arrays"]
        )
        # An online fit (moves="auto") carries its births' and merges' state.
        assert set(MOVES_ARRAYS) <= set(document["arrays"])
        assert set(document["online"]["moves"]) == {
            "seed",
            "log_scale",
            "clock",
            "offered_weight",
            "tried_at",
            "novel_n_records",
            "novel_log_likelihood",
            "sampled",
            "sample_size",
            "next_refit",
            "sample_offered_weight",
            "sample_sampled",
            "restart",
            "changed",
            "level",
            "level_weight",
            "fresh_until",
        }
        assert document["online"]["moves"]["seed"] == model.online_state_.moves.seed
        for name in names - {"model.json"}:
            body = archive.read(name)
            assert body.startswith(b"\x93NUMPY"), name  # the .npy magic, not a pickle stream
            array = np.lib.format.read_array(io.BytesIO(body), allow_pickle=False)  # raises on objects
            assert array.dtype == np.float64, name
    # numpy itself reads the file as an archive of .npy members, with pickle refused.
    with np.load(path, allow_pickle=False) as archive:
        np.testing.assert_array_equal(archive["arrays/means"], model.means_)
        np.testing.assert_array_equal(archive["arrays/statistics.sums"], model.online_state_.statistics.sums)


# --------------------------------------------------------------------------- corrupt files


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def write_zip(path: Path, contents: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, body in contents.items():
            archive.writestr(name, body)
    return path


def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def good_file(tmp_path_factory, data) -> Path:
    path = tmp_path_factory.mktemp("good") / "good.sgmm"
    fitted(data).save(path)
    return path


def corrupt_cases(good: Path, directory: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what the message must say)."""
    raw = good.read_bytes()
    contents = members(good)
    document = json.loads(contents["model.json"])

    def variant(name: str, **changes: bytes | None) -> Path:
        new = {k: v for k, v in {**contents, **changes}.items() if v is not None}
        return write_zip(directory / f"{name}.sgmm", new)

    def with_document(name: str, doc: object) -> Path:
        return variant(name, **{"model.json": json.dumps(doc).encode()})

    (directory / "truncated.sgmm").write_bytes(raw[: len(raw) // 2])
    (directory / "random.sgmm").write_bytes(np.random.default_rng(0).bytes(2000))
    (directory / "empty.sgmm").write_bytes(b"")
    no_online = {k: v for k, v in document.items() if k != "online"}
    return {
        "truncated": (directory / "truncated.sgmm", "not a streamgmm model file or corrupt"),
        "random": (directory / "random.sgmm", "not a streamgmm model file or corrupt"),
        "empty": (directory / "empty.sgmm", "not a streamgmm model file or corrupt"),
        "no_json": (write_zip(directory / "no_json.sgmm", {"something.txt": b"hello"}), "no model.json inside"),
        "bad_json": (variant("bad_json", **{"model.json": b"{not json"}), "unreadable model.json"),
        "not_an_object": (with_document("not_an_object", [1, 2]), "model.json is not a JSON object"),
        "other_format": (with_document("other_format", dict(document, format="other")), "format is 'other'"),
        "no_format": (with_document("no_format", {"version": 1}), "format is None"),
        "future": (with_document("future", dict(document, version=99)), "version 99 is not supported"),
        "version_string": (
            with_document("version_string", dict(document, version="1")),
            "version '1' is not supported",
        ),
        "arrays_not_a_list": (with_document("arrays_not_a_list", dict(document, arrays=5)), "'arrays' .* not a list"),
        "missing_array": (variant("missing_array", **{"arrays/means.npy": None}), "array 'means' is missing"),
        "unlisted_array": (
            with_document("unlisted_array", dict(document, arrays=[a for a in document["arrays"] if a != "weights"])),
            "array weights is missing",
        ),
        "garbage_npy": (variant("garbage_npy", **{"arrays/weights.npy": b"not an npy file"}), "corrupt model file"),
        "pickled_array": (
            variant("pickled_array", **{"arrays/weights.npy": npy(np.array([{"x": 1}], dtype=object), True)}),
            "corrupt model file .*pickle",
        ),
        "wrong_shape": (
            variant("wrong_shape", **{"arrays/covariances.npy": npy(np.zeros((3, 3)))}),
            r"array covariances has shape \(3, 3\), expected \(3, 3, 3\)",
        ),
        "no_online_section": (with_document("no_online_section", no_online), "missing or malformed 'online'"),
    }


CASES = [
    "truncated",
    "random",
    "empty",
    "no_json",
    "bad_json",
    "not_an_object",
    "other_format",
    "no_format",
    "future",
    "version_string",
    "arrays_not_a_list",
    "missing_array",
    "unlisted_array",
    "garbage_npy",
    "pickled_array",
    "wrong_shape",
    "no_online_section",
]


@pytest.mark.parametrize("case", CASES)
def test_corrupt_or_foreign_files_give_a_model_file_error_naming_the_path(tmp_path, good_file, case: str) -> None:
    path, message = corrupt_cases(good_file, tmp_path)[case]
    with pytest.raises(ModelFileError, match=message) as info:
        StreamingGaussianMixture.load(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_the_corrupt_cases_are_all_tested_and_the_good_file_loads(tmp_path, good_file) -> None:
    assert sorted(corrupt_cases(good_file, tmp_path)) == sorted(CASES)
    StreamingGaussianMixture.load(good_file)  # the variants differ from a good file only as named


@pytest.mark.parametrize("change", ["step", "means"])
def test_malformed_values_give_a_model_file_error_naming_the_path(tmp_path, good_file, change: str) -> None:
    contents = members(good_file)
    if change == "step":
        document = json.loads(contents["model.json"])
        document["online"]["step"] = "abc"
        contents["model.json"] = json.dumps(document).encode()
    else:
        contents["arrays/means.npy"] = npy(np.zeros(3))
    path = write_zip(tmp_path / "malformed.sgmm", contents)
    with pytest.raises(ModelFileError, match="corrupt model file") as info:
        StreamingGaussianMixture.load(path)
    assert str(path) in str(info.value)


def test_absent_file_is_a_file_not_found_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no such model file"):
        StreamingGaussianMixture.load(tmp_path / "absent.sgmm")


# --------------------------------------------------------------------------- atomic writes


def test_save_leaves_no_temporary_files(tmp_path, data) -> None:
    path = tmp_path / "m.sgmm"
    model = fitted(data)
    model.save(path)
    model.save(path)  # over an existing file
    model.save(tmp_path / "other.sgmm")
    assert sorted(os.listdir(tmp_path)) == ["m.sgmm", "other.sgmm"]
    assert_bit_identical_models(StreamingGaussianMixture.load(path), model)


def test_relative_path_in_the_working_directory(tmp_path, data, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    fitted(data).save("m.sgmm")
    assert os.listdir(tmp_path) == ["m.sgmm"]
    StreamingGaussianMixture.load("m.sgmm")


@pytest.mark.parametrize("fail_at", [1, 3])
def test_failed_save_leaves_the_old_file_untouched_and_no_temporary(tmp_path, data, monkeypatch, fail_at: int) -> None:
    path = tmp_path / "m.sgmm"
    first = fitted(data)
    first.save(path)
    before = path.read_bytes()
    real_write_array = np.lib.format.write_array
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == fail_at:  # after some arrays are already in the archive
            raise OSError("disk full (simulated)")
        return real_write_array(*args, **kwargs)

    other = StreamingGaussianMixture(3, random_state=5).fit(data)
    monkeypatch.setattr(np.lib.format, "write_array", failing)
    with pytest.raises(OSError, match="simulated"):
        other.save(path)
    with pytest.raises(OSError, match="simulated"):
        calls.clear()
        other.save(tmp_path / "new.sgmm")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.sgmm"]  # no temporary, and no half-written new file
    assert_bit_identical_models(StreamingGaussianMixture.load(path), first)


def test_saved_file_permissions_follow_the_umask_like_any_new_file(tmp_path, data) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    fitted(data).save(tmp_path / "m.sgmm")
    mode = stat.S_IMODE(os.stat(tmp_path / "m.sgmm").st_mode)
    assert mode == stat.S_IMODE(os.stat(plain).st_mode), oct(mode)


def test_unfitted_model_cannot_be_saved(tmp_path) -> None:
    with pytest.raises(NotFittedError):
        StreamingGaussianMixture().save(tmp_path / "m.sgmm")
    assert os.listdir(tmp_path) == []
