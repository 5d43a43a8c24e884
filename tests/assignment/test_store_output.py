"""``assign`` to an object store (moto's S3 server, a real process on loopback) keeps the local
promises: the same files and rows, each object under its final key only when complete,
``_SUCCESS`` last, and nothing left by a failed run."""

from __future__ import annotations

import json

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from shared_helpers import run_streamgmm

from streamgmm import StreamingGaussianMixture, assign
from streamgmm.assignment.layout import SUCCESS


@pytest.fixture(scope="module")
def lake(make_lake):
    return make_lake(
        "store_output",
        n_records=6_000,
        n_components=3,
        n_features=2,
        n_files=3,
        partitions=2,
        row_group_size=1000,
        seed=9,
    )


@pytest.fixture(scope="module")
def model(lake):
    return StreamingGaussianMixture(3, random_state=0).fit(str(lake.path), y=None)


def s3(bucket: str) -> tuple[pafs.FileSystem, str]:
    return pafs.FileSystem.from_uri(f"s3://{bucket}")


def objects(bucket: str, prefix: str) -> dict[str, int]:
    fs, _ = s3(bucket)
    infos = fs.get_file_info(pafs.FileSelector(f"{bucket}/{prefix}", recursive=True, allow_not_found=True))
    return {i.path.split(f"{prefix}/", 1)[1]: i.size for i in infos if i.type == pafs.FileType.File}


def read_object(bucket: str, key: str):
    fs, _ = s3(bucket)
    return pq.read_table(f"{bucket}/{key}", filesystem=fs)


def test_assign_from_s3_to_s3_writes_what_the_local_pass_writes(upload_to_s3, lake, model, s3_bucket, tmp_path) -> None:
    url = upload_to_s3(lake.path, "lake")
    local = assign(model, str(lake.path), tmp_path / "local", keep=["id"])
    remote = assign(model, url, f"s3://{s3_bucket}/scored/", keep=["id"])
    assert [(f["output"], f["rows"]) for f in remote.files] == [(f["output"], f["rows"]) for f in local.files]
    written = objects(s3_bucket, "scored")
    assert sorted(written) == sorted([f["output"] for f in local.files] + [SUCCESS])  # no temporary keys left
    for entry in local.files:
        assert read_object(s3_bucket, f"scored/{entry['output']}").equals(
            pq.read_table(tmp_path / "local" / entry["output"])
        )
    manifest = json.loads(s3(s3_bucket)[0].open_input_stream(f"{s3_bucket}/scored/{SUCCESS}").read())
    expected = json.loads((tmp_path / "local" / SUCCESS).read_text())
    for key in ("format", "fingerprint", "rows", "compression"):
        assert manifest.get(key) == expected.get(key), key


def test_cli_assign_to_s3_and_its_overwrite_rules(upload_to_s3, lake, model, s3_bucket, tmp_path) -> None:
    model.save(tmp_path / "m.model")
    url, out = upload_to_s3(lake.path, "lake"), f"s3://{s3_bucket}/scored"
    command = ["assign", url, "--model", tmp_path / "m.model", "--out", out]
    first = run_streamgmm(*command, "--keep", "id")
    assert first.returncode == 0, first.stderr
    assert SUCCESS in objects(s3_bucket, "scored")
    again = run_streamgmm(*command)
    assert again.returncode == 1 and "holds an earlier result" in again.stderr.strip().splitlines()[-1]
    replaced = run_streamgmm(*command, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    inside = run_streamgmm(*command[:-1], f"{url}scored")
    assert inside.returncode == 1 and "overlap" in inside.stderr.strip().splitlines()[-1]


def test_a_failed_assign_leaves_nothing_under_the_prefix(upload_to_s3, lake, model, s3_bucket, tmp_path) -> None:
    url = upload_to_s3(lake.path, "lake")
    fs, _ = s3(s3_bucket)
    last = sorted(objects(s3_bucket, "lake"))[-1]
    data = fs.open_input_stream(f"{s3_bucket}/lake/{last}").read()
    with fs.open_output_stream(f"{s3_bucket}/lake/{last}") as out:
        third = len(data) // 3  # a damaged page; the footer intact, so the listing accepts the file
        out.write(data[:third] + bytes(third) + data[2 * third :])
    written: list[int] = []
    with pytest.raises(Exception) as failed:
        assign(model, url, f"s3://{s3_bucket}/scored/", keep=["id"], progress=written.append)
    assert last in str(failed.value) + " ".join(getattr(failed.value, "__notes__", []))
    assert sum(written) >= 4000  # the files before the damaged one were scored and written ...
    assert objects(s3_bucket, "scored") == {}  # ... and removed with it


def test_a_prefix_holding_other_objects_is_refused(lake, model, s3_bucket) -> None:
    fs, _ = s3(s3_bucket)
    with fs.open_output_stream(f"{s3_bucket}/scored/notes.txt") as out:
        out.write(b"mine")
    with pytest.raises(ValueError, match="holds objects assign did not write"):
        assign(model, str(lake.path), f"s3://{s3_bucket}/scored/")
    assert objects(s3_bucket, "scored") == {"notes.txt": 4}
