"""Lakes in an S3-compatible object store (moto's server, a real process on loopback), reached
with the standard credentials and endpoint variables."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from shared_helpers import run_each_here, run_streamgmm, run_streamgmm_here

from streamgmm import ParquetSource, StreamingGaussianMixture


@pytest.fixture(scope="module")
def lake(make_lake):
    return make_lake(
        "object_store", n_records=6_000, n_components=3, n_features=2, n_files=3, row_group_size=1_000, seed=5
    )


def test_fit_of_an_s3_lake_equals_the_local_fit(upload_to_s3, lake, s3_bucket) -> None:
    url = upload_to_s3(lake.path, "lake")
    model = StreamingGaussianMixture(3, random_state=0).fit(url)
    local = StreamingGaussianMixture(3, random_state=0).fit(str(lake.path))
    np.testing.assert_array_equal(model.means_, local.means_)
    np.testing.assert_array_equal(model.covariances_, local.covariances_)
    assert ParquetSource(url).n_records == ParquetSource(str(lake.path)).n_records == 6_000


def test_cli_fit_of_an_s3_lake_equals_the_local_fit(upload_to_s3, lake, s3_bucket, tmp_path) -> None:
    url = upload_to_s3(lake.path, "lake")
    outputs = {}
    for name, where in (("s3", url), ("local", str(lake.path))):
        result = run_streamgmm_here("fit", where, "-k", "3", "--seed", "0", "--model", tmp_path / f"{name}.json")
        assert result.returncode == 0, result.stderr
        outputs[name] = StreamingGaussianMixture.load(tmp_path / f"{name}.json")
    np.testing.assert_array_equal(outputs["s3"].means_, outputs["local"].means_)
    np.testing.assert_array_equal(outputs["s3"].covariances_, outputs["local"].covariances_)


def test_an_fsspec_filesystem_with_an_s3_url_finds_the_files(upload_to_s3, lake, s3_bucket) -> None:
    s3fs = pytest.importorskip("s3fs")
    url = upload_to_s3(lake.path, "lake")
    source = ParquetSource(url, filesystem=s3fs.S3FileSystem())  # endpoint and keys from AWS_*
    assert source.n_records == 6_000 and len(source.files) == 3
    model = StreamingGaussianMixture(3, random_state=0).fit(source)
    local = StreamingGaussianMixture(3, random_state=0).fit(str(lake.path))
    np.testing.assert_array_equal(model.means_, local.means_)


def test_cli_takes_endpoint_and_credentials_as_storage_options(
    upload_to_s3, lake, s3_bucket, s3_server, tmp_path
) -> None:
    """No AWS_* variable in the command's environment: --storage-option gives them all."""
    url = upload_to_s3(lake.path, "lake")
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    options = []
    for key, name in (
        ("endpoint_url", "AWS_ENDPOINT_URL"),
        ("access_key", "AWS_ACCESS_KEY_ID"),
        ("region", "AWS_REGION"),
    ):
        options += ["--storage-option", f"{key}={s3_server.env[name]}"]
    options += ["--storage-option", f"AWS_SECRET_ACCESS_KEY={s3_server.env['AWS_SECRET_ACCESS_KEY']}"]
    command = ["fit", url, "-k", "3", "--seed", "0", "--model", tmp_path / "m"]
    result = run_streamgmm(*command, *options, env=env)
    assert result.returncode == 0, result.stderr
    local = StreamingGaussianMixture(3, random_state=0).fit(str(lake.path))
    np.testing.assert_array_equal(StreamingGaussianMixture.load(tmp_path / "m").means_, local.means_)
    bad = run_streamgmm(*command, "--storage-option", "colour=blue", env=env)
    assert bad.returncode == 2 and "--storage-option 'colour': unknown key" in bad.stderr


def test_the_endpoint_can_ride_on_the_url(upload_to_s3, lake, s3_bucket, s3_server, monkeypatch) -> None:
    url = upload_to_s3(lake.path, "lake")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    host = s3_server.endpoint.split("://", 1)[1]
    source = ParquetSource(f"{url}?endpoint_override={host}&scheme=http")
    assert source.n_records == 6_000 and len(source.files) == 3


def test_cli_select_and_info_of_an_s3_lake(upload_to_s3, lake, s3_bucket, tmp_path) -> None:
    url = upload_to_s3(lake.path, "lake")
    info, result = run_each_here(
        ["info", url, "--json"],
        ["select", url, "-k", "2..4", "--passthrough", "id", "--json", "--model", tmp_path / "best"],
    )
    assert info.returncode == 0, info.stderr
    described = json.loads(info.stdout)
    assert described["kind"] == "parquet data" and described["records"] == 6_000 and described["files"] == 3
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["best"]["n_components"] == 3
    pytest.importorskip("matplotlib")
    drawn = run_streamgmm_here("plot", tmp_path / "best", "--data", url, "--out", tmp_path / "fit.png")
    assert drawn.returncode == 0, drawn.stderr
    assert (tmp_path / "fit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
