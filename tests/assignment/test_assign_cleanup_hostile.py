"""What a failed or misdirected ``assign`` leaves behind: nothing. On an object store (moto's S3
server, a real process on loopback) no directory-marker object, and no output slipped into the
input through ``.`` or ``..`` in the output's key; locally, no directory the run created.

Oracle: the store's raw listing (every key, markers included, through botocore) and the local
directory tree, compared with what was there before the run.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from shared_helpers import assert_one_error_line, run_streamgmm

from streamgmm import ParquetSource, StreamingGaussianMixture, assign
from streamgmm.assignment.layout import SUCCESS
from streamgmm.io.records.columns import DataError


def table(seed: int, nan: bool = False) -> pa.Table:
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(0, 1, (500, 2)), rng.normal(5, 1, (500, 2))])
    if nan:
        X[900, 0] = np.nan  # the last row group of the last file: the earlier files are written first
    return pa.table({"x0": X[:, 0], "x1": X[:, 1]})


def raw_keys(bucket: str) -> list[str]:
    import botocore.session

    client = botocore.session.get_session().create_client("s3")  # the fixture's AWS_* variables
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", ()))


@pytest.fixture
def s3_lake(s3_bucket) -> tuple[str, StreamingGaussianMixture]:
    """Three files under lake/day=1/, the last with a NaN; a model fitted on the others."""
    pytest.importorskip("botocore")
    fs = pafs.FileSystem.from_uri(f"s3://{s3_bucket}")[0]
    for i in range(3):
        with fs.open_output_stream(f"{s3_bucket}/lake/day=1/part-{i}.parquet") as out:
            pq.write_table(table(i, nan=i == 2), out, row_group_size=300)
    model = StreamingGaussianMixture(2, random_state=0).fit(ParquetSource(f"s3://{s3_bucket}/lake/", nan_policy="skip"))
    return f"s3://{s3_bucket}/lake/", model


def test_a_failed_assign_to_s3_leaves_no_directory_marker(s3_lake, s3_bucket) -> None:
    lake, model = s3_lake
    before = raw_keys(s3_bucket)
    written: list[int] = []
    with pytest.raises(DataError, match="part-2.parquet"):
        assign(model, lake, f"s3://{s3_bucket}/scored/sub/", progress=written.append)
    assert sum(written) >= 2000  # two files were written, then removed with the failure
    assert raw_keys(s3_bucket) == before


def test_dot_segments_in_the_output_key_cannot_lead_into_the_input(s3_lake, s3_bucket) -> None:
    lake, model = s3_lake
    source = ParquetSource(lake, nan_policy="skip")
    before = raw_keys(s3_bucket)
    for out in (f"s3://{s3_bucket}/./lake/sub", f"s3://{s3_bucket}/elsewhere/../lake/day=1/scored"):
        with pytest.raises(ValueError, match="overlap"):
            assign(model, source, out)
    key, secret = "streamgmm-test", "streamgmm-test-secret"
    with pytest.raises(ValueError, match="overlap"):
        assign(model, ParquetSource(f"s3://{key}:{secret}@{s3_bucket}/lake/", nan_policy="skip"), f"{lake}sub")
    with pytest.raises(ValueError, match="climbs above the bucket"):
        assign(model, source, f"s3://{s3_bucket}/../{s3_bucket}/lake/sub")
    assert raw_keys(s3_bucket) == before
    # Dots that stay outside the input are resolved as the server resolves them.
    summary = assign(model, source, f"s3://{s3_bucket}/./scored/x/..")
    assert summary.out == f"s3://{s3_bucket}/scored"
    assert raw_keys(s3_bucket) == sorted(
        before + [f"scored/day=1/part-{i}.parquet" for i in range(3)] + [f"scored/{SUCCESS}"]
    )


def test_a_failed_local_assign_leaves_no_directory_it_created(tmp_path) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    for i in range(3):
        pq.write_table(table(i, nan=i == 2), lake / f"part-{i}.parquet", row_group_size=300)
    model = StreamingGaussianMixture(2, random_state=0).fit(ParquetSource(str(lake), nan_policy="skip"))
    model.save(tmp_path / "m.sgmm")
    existing = tmp_path / "existing"
    (existing / "kept").mkdir(parents=True)

    for out in (tmp_path / "new" / "deeper", existing / "scored"):
        with pytest.raises(DataError, match="part-2.parquet"):
            assign(model, str(lake), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing", "lake", "m.sgmm"]
    assert [p.name for p in existing.iterdir()] == ["kept"]  # there before the run: left alone

    too_long = tmp_path / "new" / ("b" * 300)  # the file system refuses the name
    result = run_streamgmm("assign", lake, "--model", tmp_path / "m.sgmm", "--out", too_long, "--nan-policy", "skip")
    assert_one_error_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing", "lake", "m.sgmm"]
