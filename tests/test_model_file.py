"""save/load: exact round trip, resumable stream, no pickle, clear errors, atomic writes."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

from streamgmm import ModelFileError, StreamingGaussianMixture, make_mixture

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return make_mixture(6_000, 3, 3, random_state=2)[0]


def fitted(X: np.ndarray, covariance_type: str = "full") -> StreamingGaussianMixture:
    return StreamingGaussianMixture(3, covariance_type=covariance_type, batch_size=500, random_state=0).fit(X[:4000])


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_round_trip_is_exact(tmp_path, data, covariance_type: str) -> None:
    model = fitted(data, covariance_type)
    model.save(tmp_path / "m.sgmm")
    loaded = StreamingGaussianMixture.load(tmp_path / "m.sgmm")
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_"):
        assert np.array_equal(getattr(loaded, name), getattr(model, name)), name
    for name, value in model._state.statistics.arrays().items():
        assert np.array_equal(loaded._state.statistics.arrays()[name], value), name
    assert loaded._state.statistics.n_records == model._state.statistics.n_records
    for name in ("n_steps_", "records_seen_", "n_iter_", "converged_", "lower_bound_", "n_features_in_"):
        assert getattr(loaded, name) == getattr(model, name), name
    assert loaded.get_params() == model.get_params()


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_loaded_model_resumes_the_stream_bit_for_bit(tmp_path, data, covariance_type: str) -> None:
    model = fitted(data, covariance_type)
    model.save(tmp_path / "m.sgmm")
    loaded = StreamingGaussianMixture.load(tmp_path / "m.sgmm")
    model.partial_fit(data[4000:])
    loaded.partial_fit(data[4000:])
    for name in ("weights_", "means_", "covariances_"):
        assert np.array_equal(getattr(loaded, name), getattr(model, name)), name
    assert loaded.n_steps_ == model.n_steps_


def test_init_arrays_survive_the_round_trip(tmp_path, data) -> None:
    means = data[:3].copy()
    model = StreamingGaussianMixture(3, means_init=means, random_state=1).fit(data)
    model.save(tmp_path / "m.sgmm")
    loaded = StreamingGaussianMixture.load(tmp_path / "m.sgmm")
    np.testing.assert_array_equal(loaded.means_init, means)
    assert loaded.random_state == 1


def test_file_is_a_documented_zip_of_json_and_npy(tmp_path, data) -> None:
    fitted(data).save(tmp_path / "m.sgmm")
    with zipfile.ZipFile(tmp_path / "m.sgmm") as archive:
        names = set(archive.namelist())
        document = json.loads(archive.read("model.json"))
        assert document["format"] == "streamgmm.model" and document["version"] == 1
        assert {f"arrays/{n}.npy" for n in document["arrays"]} | {"model.json"} == names
        for name in names - {"model.json"}:
            with archive.open(name) as f:
                array = np.lib.format.read_array(f, allow_pickle=False)  # raises on pickled objects
            assert array.dtype != object


def write_zip(path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, body in members.items():
            archive.writestr(name, body)


def test_corrupt_or_foreign_files_give_clear_errors(tmp_path, data) -> None:
    good = tmp_path / "good.sgmm"
    fitted(data).save(good)
    raw = good.read_bytes()
    document = json.loads(zipfile.ZipFile(good).read("model.json"))

    cases = {}
    cases["truncated"] = raw[: len(raw) // 2]
    cases["random"] = os.urandom(2000)
    (tmp_path / "no_json.sgmm").write_bytes(b"")
    write_zip(tmp_path / "no_json.sgmm", {"something.txt": b"hello"})
    write_zip(tmp_path / "other_format.sgmm", {"model.json": json.dumps(dict(document, format="other")).encode()})
    write_zip(tmp_path / "future.sgmm", {"model.json": json.dumps(dict(document, version=99)).encode()})
    write_zip(tmp_path / "missing_array.sgmm", {"model.json": json.dumps(document).encode()})
    write_zip(tmp_path / "bad_json.sgmm", {"model.json": b"{not json"})
    for name, body in cases.items():
        (tmp_path / f"{name}.sgmm").write_bytes(body)
    expected = {
        "truncated": "not a streamgmm model file or corrupt",
        "random": "not a streamgmm model file or corrupt",
        "no_json": "no model.json inside",
        "other_format": "format is 'other'",
        "future": "version 99 is not supported",
        "missing_array": "array .* is missing",
        "bad_json": "unreadable model.json",
    }
    for name, message in expected.items():
        path = tmp_path / f"{name}.sgmm"
        with pytest.raises(ModelFileError, match=message) as info:
            StreamingGaussianMixture.load(path)
        assert str(path) in str(info.value)
        assert isinstance(info.value, ValueError)
    with pytest.raises(FileNotFoundError, match="no such model file"):
        StreamingGaussianMixture.load(tmp_path / "absent.sgmm")


def test_save_is_atomic(tmp_path, data, monkeypatch) -> None:
    path = tmp_path / "m.sgmm"
    first = fitted(data)
    first.save(path)
    before = path.read_bytes()
    assert os.listdir(tmp_path) == ["m.sgmm"]  # no temporary left behind

    def broken(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(np.lib.format, "write_array", broken)
    with pytest.raises(OSError, match="simulated"):
        StreamingGaussianMixture(3, random_state=5).fit(data).save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.sgmm"]


def test_unfitted_model_cannot_be_saved(tmp_path) -> None:
    from streamgmm import NotFittedError

    with pytest.raises(NotFittedError):
        StreamingGaussianMixture().save(tmp_path / "m.sgmm")
