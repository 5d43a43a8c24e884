"""Crafted model files: parameters that pass each array's checks but do not fit together, arrays
that inflate far beyond their stored bytes or that the format does not define, and document
numbers that load and fail later. Each is refused when the file is read, naming the file and
what is wrong, by ``load`` and by the command (one line, exit 1), and nothing is inflated first.
"""

from __future__ import annotations

import io
import json
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shared_helpers import members, npy, write_zip

from streamgmm import ConvergenceWarning, ModelFileError, StreamingGaussianMixture, make_mixture
from streamgmm.cli.command import main
from streamgmm.estimator.persistence import model_document
from streamgmm.mixture.covariance import COVARIANCE_TYPES

K = 3


@pytest.fixture(scope="module")
def records() -> np.ndarray:
    return make_mixture(3000, K, 2, separation=6.0, random_state=0)[0]


@pytest.fixture(scope="module")
def good_file(tmp_path_factory, records) -> Path:
    path = tmp_path_factory.mktemp("good") / "good.sgmm"
    StreamingGaussianMixture(K, random_state=0).fit(records).save(path)
    return path


def array(contents: dict[str, bytes], name: str) -> np.ndarray:
    return np.lib.format.read_array(io.BytesIO(contents[f"arrays/{name}.npy"]), allow_pickle=False)


def edited(good: Path, target: Path, arrays: dict | None = None, document: dict | None = None) -> Path:
    """``good`` with arrays replaced and document fields (``"section.field": value``) set."""
    contents = members(good)
    for name, value in (arrays or {}).items():
        contents[f"arrays/{name}.npy"] = npy(value)
    body = json.loads(contents["model.json"])
    for dotted, value in (document or {}).items():
        section, field = dotted.split(".")
        body[section][field] = value
    contents["model.json"] = json.dumps(body).encode()
    return write_zip(target, contents)


def info(capsys, path: Path) -> tuple[int, str]:
    code = main(["info", str(path)])
    return code, capsys.readouterr().err


def assert_refused(path: Path, capsys, *fragments: str) -> None:
    with pytest.raises(ModelFileError) as error:
        StreamingGaussianMixture.load(path)
    for fragment in (str(path), *fragments):
        assert fragment in str(error.value), (fragment, str(error.value))
    code, err = info(capsys, path)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert all(fragment in lines[0] for fragment in (str(path), *fragments)), err


# ---------------------------------------------------------------- parameters that do not fit together


CRAFTED = {
    # Finite, triangular, positive diagonal: each alone passes. Scored, they give NaN
    # responsibilities (scaled up), every record to one component (scaled down), NaN (means).
    "precisions_up": (lambda c: {"precisions_cholesky": array(c, "precisions_cholesky") * 1e160}, "disagree"),
    "precisions_down": (lambda c: {"precisions_cholesky": array(c, "precisions_cholesky") * 1e-200}, "disagree"),
    "precisions_halved": (lambda c: {"precisions_cholesky": array(c, "precisions_cholesky") / 4}, "disagree"),
    "precisions_transposed": (
        lambda c: {"precisions_cholesky": np.triu(np.swapaxes(array(c, "precisions_cholesky"), 1, 2) * 3)},
        "disagree",
    ),
    "means_far": (lambda c: {"means": array(c, "means") + 1e300}, "means hold"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_parameters_that_do_not_fit_together_are_refused_on_reading(good_file, tmp_path, capsys, case) -> None:
    change, fragment = CRAFTED[case]
    path = edited(good_file, tmp_path / f"{case}.sgmm", change(members(good_file)))
    assert_refused(path, capsys, fragment)


def test_crafted_precisions_make_assign_exit_1_with_nothing_written(good_file, records, tmp_path, capsys) -> None:
    path = edited(
        good_file,
        tmp_path / "up.sgmm",
        {"precisions_cholesky": array(members(good_file), "precisions_cholesky") * 1e160},
    )
    data = tmp_path / "data.parquet"
    pq.write_table(pa.table({"x0": records[:, 0], "x1": records[:, 1]}), data)
    out = tmp_path / "out"
    code = main(["assign", "--model", str(path), str(data), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and str(path) in err, err
    assert not out.exists()


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("algorithm", ["batch", "online"])
def test_ill_conditioned_fits_still_save_and_load(tmp_path, covariance_type, algorithm) -> None:
    # Features of scales 1e-4 to 1e4 with two nearly collinear: covariances of condition numbers
    # near 1e15, where a precision inverts its covariance least exactly.
    rng = np.random.default_rng(1)
    X = rng.normal(size=(4000, 10)) @ (rng.normal(size=(10, 10)) * np.logspace(-4, 4, 10)).T
    X[:, 1] = 2 * X[:, 0] + 1e-9 * rng.normal(size=4000)
    model = StreamingGaussianMixture(K, covariance_type=covariance_type, algorithm=algorithm, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # ten iterations are enough here
        model.set_params(max_iter=10).fit(X)
    model.save(tmp_path / "m.sgmm")
    loaded = StreamingGaussianMixture.load(tmp_path / "m.sgmm")
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


# ---------------------------------------------------------------- arrays: only the format's, bounded in all


def deflated_zeros_member(archive: zipfile.ZipFile, name: str, shape: tuple[int, ...]) -> None:
    """An .npy member of zeros of ``shape``, deflated, written without holding it in memory."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": shape})
    with archive.open(name, "w", force_zip64=True) as member:
        member.write(header.getvalue())
        remaining = int(np.prod(shape)) * 8
        chunk = bytes(1 << 20)
        while remaining:
            member.write(chunk[: min(remaining, len(chunk))])
            remaining -= min(remaining, len(chunk))


def peak_while_loading(path: Path) -> tuple[int, ModelFileError]:
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError) as error:
            StreamingGaussianMixture.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, error.value


def test_arrays_the_format_does_not_define_are_refused_unread(good_file, tmp_path, capsys) -> None:
    contents = members(good_file)
    document = json.loads(contents["model.json"])
    document["arrays"] = sorted([*document["arrays"], "extra.a", "extra.b", "extra.c"])
    path = tmp_path / "extra.sgmm"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model.json", json.dumps(document))
        for name, body in contents.items():
            if name != "model.json":
                archive.writestr(name, body)
        for name in ("extra.a", "extra.b", "extra.c"):
            deflated_zeros_member(archive, f"arrays/{name}.npy", ((64 << 20) // 8,))  # 64 MiB each
    assert path.stat().st_size < 2 << 20
    peak, error = peak_while_loading(path)
    assert "'extra.a'" in str(error) and "not one a streamgmm model holds" in str(error)
    assert peak < 8 << 20, peak
    assert_refused(path, capsys, "'extra.a'")


def test_an_array_listed_twice_is_refused(good_file, tmp_path, capsys) -> None:
    contents = members(good_file)
    document = json.loads(contents["model.json"])
    document["arrays"] = [*document["arrays"], "statistics.second"]
    contents["model.json"] = json.dumps(document).encode()
    assert_refused(write_zip(tmp_path / "twice.sgmm", contents), capsys, "statistics.second", "twice")


def test_format_arrays_inflating_far_beyond_their_stored_bytes_are_refused_unread(tmp_path, capsys) -> None:
    # Shapes that agree with one another (K=1, d=2048, full): 32 MiB a matrix, four of them,
    # from a file of a few hundred kilobytes.
    d = 2048
    shapes = {
        "weights": (1,),
        "means": (1, d),
        "covariances": (1, d, d),
        "precisions_cholesky": (1, d, d),
        "statistics.counts": (1,),
        "statistics.sums": (1, d),
        "statistics.shift": (d,),
        "statistics.second": (1, d, d),
        "param.precisions_init": (1, d, d),
    }
    document = {
        "format": "streamgmm.model",
        "version": 1,
        "arrays": sorted(shapes),
        "estimator": "StreamingGaussianMixture",
        "estimator_params": {"n_components": 1, "covariance_type": "full"},
        "fitted": {"converged": True, "n_iter": 1, "lower_bound": 0.0, "n_features_in": d},
        "online": {"step": 1, "records_seen": 1, "statistics_n_records": 1.0, "statistics_log_likelihood": 0.0},
    }
    path = tmp_path / "bomb.sgmm"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model.json", json.dumps(document))
        for name, shape in shapes.items():
            deflated_zeros_member(archive, f"arrays/{name}.npy", shape)
    assert path.stat().st_size < 1 << 20
    peak, error = peak_while_loading(path)
    assert "times as much" in str(error), str(error)
    assert peak < 8 << 20, peak
    assert_refused(path, capsys, "times as much")


def test_a_model_zipped_again_with_compression_still_loads(good_file, tmp_path) -> None:
    path = write_zip(tmp_path / "deflated.sgmm", members(good_file), compression=zipfile.ZIP_DEFLATED)
    loaded = StreamingGaussianMixture.load(path)
    np.testing.assert_array_equal(loaded.means_, StreamingGaussianMixture.load(good_file).means_)


# ---------------------------------------------------------------- document numbers that fail later


FIELDS = {
    "estimator_params.n_components": (1_000_000_000, "estimator_params.n_components"),
    "estimator_params.random_state": (-3, "estimator_params.random_state"),
    "estimator_params.moves": ("bogus", "estimator_params: Invalid value for 'moves'"),
    "estimator_params.step_exponent": (-5.0, "estimator_params: step_exponent"),
    "estimator_params.bogus": (1, "estimator_params.bogus is not a parameter"),
    "online.statistics_n_records": (-1, "online.statistics_n_records"),
    "online.statistics_n_records=0": (0, "online.statistics_n_records"),
    "online.records_seen": (-5, "online.records_seen"),
    "online.step": (-1, "online.step"),
    "online.statistics_log_likelihood": (float("nan"), "online.statistics_log_likelihood"),
    "fitted.n_features_in": (7, "fitted.n_features_in"),
    "fitted.n_iter": (2.5, "fitted.n_iter"),
    "fitted.n_skipped": (-1, "fitted.n_skipped"),
    "fitted.converged": ("yes", "fitted.converged"),
    "fitted.lower_bound": (float("inf"), "fitted.lower_bound"),
}


@pytest.mark.parametrize("case", sorted(FIELDS))
def test_document_numbers_that_would_fail_later_are_refused_naming_the_field(good_file, tmp_path, capsys, case) -> None:
    value, fragment = FIELDS[case]
    path = edited(good_file, tmp_path / "field.sgmm", document={case.split("=")[0]: value})
    assert_refused(path, capsys, fragment)


# ---------------------------------------------------------------- the writer keeps to the reader's bounds


def test_a_model_the_reader_would_refuse_for_its_size_is_not_written(good_file, records, tmp_path) -> None:
    from streamgmm.io.model.file import MAX_ARRAY_BYTES, MAX_MODEL_BYTES, write_model

    document, arrays = model_document(StreamingGaussianMixture(K, random_state=0).fit(records))
    gib = MAX_ARRAY_BYTES // 8
    # Read-only views of one zero: their declared sizes, without the memory.
    one_too_large = {**arrays, "statistics.second": np.broadcast_to(0.0, (gib + 1,))}
    six_of_the_largest = {**arrays, **{name: np.broadcast_to(0.0, (gib,)) for name in list(arrays)[:6]}}
    assert sum(value.nbytes for value in six_of_the_largest.values()) > MAX_MODEL_BYTES
    for case, contents, fragment in (
        ("array", one_too_large, "array statistics.second holds"),
        ("total", six_of_the_largest, "its arrays hold"),
    ):
        path = tmp_path / f"{case}.sgmm"
        with pytest.raises(ModelFileError, match=f"not written.*{fragment}"):
            write_model(path, document, contents)
        assert not path.exists() and list(tmp_path.iterdir()) == []
