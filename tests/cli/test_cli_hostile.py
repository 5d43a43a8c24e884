"""The ``streamgmm`` command under hostile and unlucky usage: inputs in several folders, times
and storage options it cannot read, and the words its messages use.

Each command runs in this process through :func:`streamgmm.cli.command.main` (a usage error
exits through ``SystemExit``, status 2). The oracles are the exit status, the one line on
stderr and the files on disk.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shared_helpers import cli

from streamgmm import StreamingGaussianMixture
from streamgmm.assignment.layout import SUCCESS

FEATURES = ["x0", "x1"]


def error_line(code: int, err: str, status: int, *fragments: str) -> str:
    """The one error line of a failed command (argparse's usage line aside), which names
    ``fragments``; no traceback."""
    assert code == status, err
    assert "Traceback" not in err, err
    # argparse's usage text (its first line starts "usage:", the rest are indented) comes first.
    lines = [line for line in err.strip().splitlines() if not line.startswith(("usage:", " "))]
    assert len(lines) == 1 and lines[0].startswith("streamgmm") and "error: " in lines[0], err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def write_records(path: Path, seed: int, n: int = 400, nan_at: int | None = None) -> Path:
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(-5, 1, size=(n // 2, 2)), rng.normal(5, 1, size=(n - n // 2, 2))])
    if nan_at is not None:
        X[nan_at, 1] = np.nan
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({name: X[:, j] for j, name in enumerate(FEATURES)}), path)
    return path


@pytest.fixture(autouse=True)
def environment() -> None:
    """The variables ``--storage-option`` sets for the command's process, undone after each test."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Two input files in different folders, and a model fitted on them."""
    first = write_records(tmp_path / "north" / "part-0.parquet", 1)
    second = write_records(tmp_path / "south" / "part-0.parquet", 2)
    model = tmp_path / "model.sgmm"
    StreamingGaussianMixture(2, random_state=0).fit([str(first), str(second)]).save(model)
    return first, second, model


# ---------------------------------------------------------------------- inputs and --out


def test_explicit_files_in_two_folders_may_be_scored_into_a_third(folders, tmp_path, capsys) -> None:
    first, second, model = folders
    out = tmp_path / "scores" / "run"
    code, _, err = cli(capsys, "assign", first, second, "--model", model, "--out", out, "-q")
    assert code == 0, err
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet"))
    assert written == ["north/part-0.parquet", "south/part-0.parquet"]
    assert (out / SUCCESS).is_file()
    # The inputs are untouched: each still holds its own 400 records.
    assert [pq.read_metadata(p).num_rows for p in (first, second)] == [400, 400]


def test_explicit_files_next_to_the_output_in_a_delta_table(folders, tmp_path, capsys) -> None:
    pytest.importorskip("deltalake")
    first, second, model = folders
    out = tmp_path / "scores" / "table"
    code, _, err = cli(capsys, "assign", first, second, "--model", model, "--out", out, "--out-format", "delta", "-q")
    assert code == 0, err
    assert (out / "_delta_log").is_dir()


def test_an_output_holding_an_input_file_is_still_refused(folders, tmp_path, capsys) -> None:
    first, second, model = folders
    (tmp_path / "link").symlink_to(first.parent, target_is_directory=True)
    (tmp_path / "alias.parquet").symlink_to(second)
    cases = [
        [first, second, "--out", tmp_path],  # the common folder holds both inputs
        [first, second, "--out", first.parent],  # a folder that holds one of them
        [first, second, "--out", tmp_path / "link"],  # the same, through a link
        [tmp_path / "alias.parquet", "--out", second.parent],  # an input named through a link
        [tmp_path / "north", "--out", tmp_path / "north" / "scored"],  # inside a directory given
    ]
    before = sorted(p for p in tmp_path.rglob("*"))
    for case in cases:
        code, _, err = cli(capsys, "assign", *case[:-2], "--model", model, *case[-2:], "-q")
        error_line(code, err, 1, "overlap")
    assert sorted(p for p in tmp_path.rglob("*")) == before


# ---------------------------------------------------------------------- --as-of


@pytest.mark.parametrize(
    "when", ["garbage", "2026-01-01T00:00+25:00", "2026-13-01", "2026-01-01T00:00-24:00", "yesterday", ""]
)
def test_an_unreadable_as_of_is_a_usage_error_naming_it(folders, tmp_path, capsys, when: str) -> None:
    first, _, _ = folders
    for command in (
        ["fit", first.parent, "-k", "2", "--model", tmp_path / "m.sgmm"],
        ["select", first.parent, "-k", "2"],
    ):
        code, out, err = cli(capsys, *command, "--as-of", when)
        line = error_line(code, err, 2, "--as-of")
        assert out == "" and "isoformat" not in line and "timedelta" not in line, line
    assert not (tmp_path / "m.sgmm").exists()


def test_a_readable_as_of_still_picks_the_snapshot(tmp_path, capsys) -> None:
    deltalake = pytest.importorskip("deltalake")
    table = tmp_path / "table"
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(-5, 1, size=(200, 2)), rng.normal(5, 1, size=(200, 2))])
    deltalake.write_deltalake(table, pa.table({name: X[:, j] for j, name in enumerate(FEATURES)}))
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    code, _, err = cli(capsys, "fit", table, "-k", "2", "--model", tmp_path / "m.sgmm", "--as-of", later, "-q")
    assert code == 0, err
    code, _, err = cli(
        capsys, "fit", table, "-k", "2", "--model", tmp_path / "n.sgmm", "--as-of", "2000-01-01T00:30+01:00"
    )
    error_line(code, err, 1, "no version committed at or before 2000-01-01T00:30:00+01:00")


# ---------------------------------------------------------------------- --storage-option


@pytest.mark.parametrize(
    "option",
    [
        "secret_key:wJalrXUtnFEMI/K7MDENG",
        "aws_secret_access_key wJalrXUtnFEMI/K7MDENG",
        "secret_key:wJalrXUtnFEMI/K7MDENG==",  # a ':' typo and a secret ending in '='
        "AWS_SECRET_ACCESS_KEY:wJalrXUtnFEMI/K7MDENG=",
        "wJalrXUtnFEMI/K7MDENG",
        "account_key;wJalrXUtnFEMI/K7MDENG=x",
    ],
)
def test_a_mistyped_storage_option_never_echoes_its_secret(folders, tmp_path, capsys, option: str) -> None:
    first, _, _ = folders
    code, out, err = cli(
        capsys, "fit", first, "-k", "2", "--model", tmp_path / "m.sgmm", "--storage-option", option, "-q"
    )
    error_line(code, err, 2, "--storage-option")
    assert "wJalr" not in err + out and "MDENG" not in err + out, err
    assert not [name for name in os.environ if "MDENG" in name.upper()]
    assert not (tmp_path / "m.sgmm").exists()


def test_a_storage_option_typo_says_what_was_meant(folders, tmp_path, capsys) -> None:
    first, _, _ = folders
    code, _, err = cli(capsys, "fit", first, "-k", "2", "--model", tmp_path / "m.sgmm", "--storage-option", "region:x")
    error_line(code, err, 2, "--storage-option", "region=VALUE", "'='")


# ---------------------------------------------------------------------- CLI spelling


def test_the_nan_error_names_the_option_not_the_parameter(tmp_path, capsys) -> None:
    data = write_records(tmp_path / "lake" / "part-0.parquet", 4, nan_at=7)
    code, _, err = cli(capsys, "fit", data, "-k", "2", "--model", tmp_path / "m.sgmm", "-q")
    line = error_line(code, err, 1, "row 7", "'x1'", "--nan-policy skip")
    assert "nan_policy" not in line, line
    assert not (tmp_path / "m.sgmm").exists()


def test_the_estimator_keeps_the_parameter_spelling(tmp_path) -> None:
    data = write_records(tmp_path / "lake" / "part-0.parquet", 4, nan_at=7)
    with pytest.raises(ValueError, match="nan_policy='skip'"):
        StreamingGaussianMixture(2, random_state=0).fit(str(data))


def test_an_earlier_output_names_the_overwrite_option(folders, tmp_path, capsys) -> None:
    first, _, model = folders
    out = tmp_path / "scores"
    assert cli(capsys, "assign", first, "--model", model, "--out", out, "-q")[0] == 0
    code, _, err = cli(capsys, "assign", first, "--model", model, "--out", out, "-q")
    line = error_line(code, err, 1, "--overwrite")
    assert "overwrite=True" not in line, line


@pytest.mark.parametrize(
    ("argv", "status", "fragments", "python"),
    [
        (["fit", "NORTH", "--version", "3", "-k", "2", "--model", "M"], 1, ["--version and --as-of"], "as_of"),
        (["fit", "FIRST", "-k", "1000", "--model", "M"], 1, ["-k/--components 1000", "400 records"], "n_samples"),
        (["select", "FIRST", "-k", "2", "--held-out", "100000"], 1, ["--held-out 100000"], "held_out"),
        (
            ["select", "FIRST", "-k", "2", "--covariance", "full,fulll"],
            2,
            ["--covariance", "'fulll'"],
            "covariance_type",
        ),
        (
            ["assign", "FIRST", "--model", "MODEL", "--out", "OUT", "--out-format", "delta", "--workers", "1"],
            2,
            ["--out-format delta", "--workers"],
            "out_format",
        ),
        (["fit", "FIRST", "-k", "2", "--model", "M", "--seed", "-1"], 2, ["--seed", "integer >= 0"], "non-negative"),
        (["select", "FIRST", "-k", "2", "--seed", "-1"], 2, ["--seed"], "non-negative"),
        (["watch", "NORTH", "--state", "STATE", "--once", "-k", "2", "--seed", "-1"], 2, ["--seed"], "non-negative"),
        (
            ["watch", "NORTH", "--state", "STATE", "--once", "-k", "2", "--step-floor", "2"],
            2,
            ["--step-floor"],
            "step_floor",
        ),
        (["watch", "NORTH", "--state", "STATE", "--once"], 1, ["-k/--components", "--model"], "n_components"),
        (["fit", "FIRST", "-k", "two", "--model", "M"], 2, ["-k/--components", "'two'"], "positive_int"),
        (["watch", "NORTH", "--state", "STATE", "--interval", "soon"], 2, ["--interval", "'soon'"], "positive_float"),
        (["plot", "MODEL", "--out", "NOWHERE/p.png"], 1, ["--out", "does not exist"], ".tmp"),
        (["plot", "MODEL", "--out", "NORTH"], 1, ["--out", "is a directory"], "Errno"),
        (
            ["plot", "MODEL", "--out", "P", "--pairs", "x"],
            1,
            ["--pairs", "'x'"],
            None,
        ),
    ],
)
def test_messages_name_options_not_parameters(folders, tmp_path, capsys, argv, status, fragments, python) -> None:
    first, _, model = folders
    names = {
        "NORTH": first.parent,
        "FIRST": first,
        "M": tmp_path / "m.sgmm",
        "MODEL": model,
        "OUT": tmp_path / "out",
        "STATE": tmp_path / "state",
        "NOWHERE": tmp_path / "nowhere",
        "P": tmp_path / "p.png",
    }
    code, out, err = cli(capsys, *[names.get(a, a) for a in argv], "-q" if argv[0] != "plot" else "--json")
    line = error_line(code, err, status, *fragments)
    assert python is None or python not in line, line
    assert out == ""
    # Nothing written; a watcher refused after parsing has taken its state's lock (not checked).
    for made in ("m.sgmm", "out", "p.png") + (("state",) if status == 2 else ()):
        assert not (tmp_path / made).exists(), made


def test_a_watcher_resumed_under_another_policy_names_the_option(folders, tmp_path, capsys) -> None:
    first, _, _ = folders
    state = tmp_path / "state"
    argv = ["watch", first.parent, "--state", state, "--once", "-k", "2", "--settle", "0", "-q"]
    code, _, err = cli(capsys, *argv, "--nan-policy", "marginalize")
    assert code == 0, err
    code, _, err = cli(capsys, *argv)
    line = error_line(code, err, 1, "--nan-policy marginalize, not raise")
    assert "nan_policy" not in line and "'raise'" not in line, line


def test_explicit_objects_under_two_prefixes_may_be_scored_into_a_third(
    folders, upload_to_s3, s3_bucket, capsys
) -> None:
    import pyarrow.fs as pafs

    first, second, model = folders
    north = upload_to_s3(first.parent, "in/north") + first.name
    south = upload_to_s3(second.parent, "in/south") + second.name
    out = f"s3://{s3_bucket}/in/scores"
    code, _, err = cli(capsys, "assign", north, south, "--model", model, "--out", out, "-q")
    assert code == 0, err
    s3, _ = pafs.FileSystem.from_uri(out)
    listed = s3.get_file_info(pafs.FileSelector(f"{s3_bucket}/in/scores", recursive=True))
    names = sorted(info.path.split("/in/scores/", 1)[1] for info in listed if info.type == pafs.FileType.File)
    assert names == [SUCCESS, "north/part-0.parquet", "south/part-0.parquet"]
    # A prefix holding one of the inputs is still refused, and nothing is written there.
    code, _, err = cli(capsys, "assign", north, south, "--model", model, "--out", f"s3://{s3_bucket}/in/north", "-q")
    error_line(code, err, 1, "overlap")
    left = s3.get_file_info(pafs.FileSelector(f"{s3_bucket}/in/north", recursive=True))
    assert sorted(info.base_name for info in left if info.type == pafs.FileType.File) == ["part-0.parquet"]
