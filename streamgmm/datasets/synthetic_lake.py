"""Write a synthetic Parquet "lake" drawn from a Gaussian mixture whose parameters are known.

The lake is a directory of Parquet files (optionally hive-partitioned as ``day=0 .. day=P-1``)
with an ``id`` column (the global record number), feature columns ``x0 .. x{d-1}`` and, if asked,
the generating component as ``label``. The generating parameters go to ``_truth.json`` next to
the data, and an optional held-out sample from the same mixture to ``_held_out/``; both names
start with ``_`` so ``pyarrow.dataset`` does not read them as part of the lake.

Records come out in random order, or sorted by generating component (``sort_by="component"``),
which is the worst case for one-pass online EM. Either way the lake is generated one row group
at a time, so memory stays bounded by ``row_group_size`` records however large the lake is, and
the same ``seed`` gives byte-identical files.

From the shell: ``scripts/make_lake --records 1000000 --files 8 --partitions 4 OUT``.

>>> import tempfile
>>> import pyarrow.dataset as ds
>>> with tempfile.TemporaryDirectory() as tmp:
...     info = write_lake(tmp + "/lake", n_records=1000, n_components=3, n_features=2,
...                       n_files=2, partitions=2, held_out=100, seed=1)
...     table = ds.dataset(info.path, format="parquet", partitioning="hive").to_table()
...     params, names = read_truth(info.path)
>>> table.num_rows, sorted(table.column_names)
(1000, ['day', 'id', 'x0', 'x1'])
>>> info.files
['day=0/part-00000.parquet', 'day=1/part-00001.parquet']
>>> names, params.n_components, params.covariance_type
(['x0', 'x1'], 3, 'full')
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streamgmm.datasets.mixtures import random_mixture, sample_mixture
from streamgmm.io.output.atomic_write import atomic_path, write_bytes_atomically
from streamgmm.io.records.checks import default_feature_names
from streamgmm.mixture.params import MixtureParams

FORMAT = "streamgmm.datasets.synthetic_lake"
VERSION = 1
TRUTH_FILE = "_truth.json"
HELD_OUT_DIR = "_held_out"
SORT_BY = (None, "component")

# Every random draw has its own seed derived from (seed, purpose, ...) rather than from one
# sequential generator, so a chunk's records do not depend on how many draws came before it:
# that is what lets files be generated independently and in bounded memory.
_PARAMS, _COUNTS, _CHUNK, _HELD_OUT = range(4)


@dataclass(frozen=True)
class LakeInfo:
    """What :func:`write_lake` wrote; ``files`` are relative to ``path``, in record order."""

    path: Path
    files: list[str]
    n_records: int
    params: MixtureParams
    feature_names: list[str]
    held_out_path: Path | None


def _seed(seed: int, *key: int) -> int:
    return int(np.random.SeedSequence(seed, spawn_key=key).generate_state(1, dtype=np.uint64)[0])


def _split(n: int, parts: int) -> list[int]:
    """``n`` split into ``parts`` contiguous sizes differing by at most one."""
    return [n // parts + (i < n % parts) for i in range(parts)]


def _component(params: MixtureParams, k: int) -> MixtureParams:
    """Component ``k`` alone, as a one-component mixture ``sample_mixture`` can draw from."""
    covs = params.covariances if params.covariance_type == "tied" else params.covariances[k : k + 1]
    return MixtureParams.from_covariances(np.ones(1), params.means[k : k + 1], covs, params.covariance_type)


class _Sampler:
    """Records for any contiguous range of the lake's global order, drawn independently per chunk."""

    def __init__(self, params: MixtureParams, n_records: int, sort_by: str | None, seed: int):
        self.params = params
        self.sort_by = sort_by
        self.seed = seed
        if sort_by == "component":
            # The only whole-lake state: how many records each component gets. Component k then
            # owns global positions [bounds[k], bounds[k + 1]) of the sorted order.
            rng = np.random.default_rng(_seed(seed, _COUNTS))
            counts = rng.multinomial(n_records, params.weights / params.weights.sum())
            self.bounds = np.concatenate([[0], np.cumsum(counts)])
            self.components = [_component(params, k) for k in range(params.n_components)]

    def chunk(self, start: int, stop: int, key: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        if self.sort_by is None:
            return sample_mixture(self.params, stop - start, random_state=_seed(self.seed, *key))
        parts_X, parts_labels = [], []
        for k, comp in enumerate(self.components):
            lo, hi = max(start, self.bounds[k]), min(stop, self.bounds[k + 1])
            if lo < hi:
                X, _ = sample_mixture(comp, int(hi - lo), random_state=_seed(self.seed, *key, k))
                parts_X.append(X)
                parts_labels.append(np.full(hi - lo, k))
        return np.concatenate(parts_X), np.concatenate(parts_labels)


def _schema(feature_names: list[str], labels: bool) -> pa.Schema:
    fields = [pa.field("id", pa.int64(), nullable=False)]
    fields += [pa.field(name, pa.float64(), nullable=False) for name in feature_names]
    if labels:
        fields.append(pa.field("label", pa.int32(), nullable=False))
    return pa.schema(fields)


def _write_parquet(
    target: Path, schema: pa.Schema, chunks: Iterator[pa.Table], row_group_size: int, compression: str
) -> None:
    """Write ``chunks`` (one row group each) to a hidden temporary name, then rename into place,
    so a reader never sees a half-written file under its final name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp, pq.ParquetWriter(tmp, schema, compression=compression) as writer:
        for table in chunks:
            writer.write_table(table, row_group_size=row_group_size)


def _tables(
    sampler: _Sampler,
    schema: pa.Schema,
    start: int,
    stop: int,
    row_group_size: int,
    key: tuple[int, ...],
    labels: bool,
    id_offset: int = 0,
) -> Iterator[pa.Table]:
    for index, lo in enumerate(range(start, stop, row_group_size)):
        hi = min(lo + row_group_size, stop)
        X, comp = sampler.chunk(lo, hi, (*key, index))
        columns = [pa.array(np.arange(lo + id_offset, hi + id_offset, dtype=np.int64))]
        columns += [pa.array(X[:, j]) for j in range(X.shape[1])]
        if labels:
            columns.append(pa.array(comp.astype(np.int32)))
        yield pa.Table.from_arrays(columns, schema=schema)


def _write_json(target: Path, payload: dict) -> None:
    write_bytes_atomically(target, (json.dumps(payload, indent=1) + "\n").encode())


def write_lake(
    path: str | os.PathLike,
    *,
    n_records: int,
    n_components: int = 5,
    n_features: int = 8,
    n_files: int = 4,
    row_group_size: int = 131072,
    partitions: int = 0,
    sort_by: str | None = None,
    covariance_type: str = "full",
    separation: float = 9.0,
    condition: float = 10.0,
    held_out: int = 0,
    labels: bool = False,
    seed: int = 0,
    compression: str = "snappy",
) -> LakeInfo:
    """Write ``n_records`` records from a random mixture (see :func:`streamgmm.datasets.mixtures.random_mixture`)
    to ``n_files`` Parquet files under ``path``, which must not exist or be empty.

    Files hold contiguous ranges of ``id``; with ``partitions=P`` they are spread, in order, over
    ``day=0 .. day=P-1``. Held-out records (random order even when the lake is sorted) get ids
    ``n_records .. n_records + held_out - 1`` so ids stay unique across both. ``_truth.json`` is
    written last, so its presence marks a finished lake.
    """
    _check_lake_arguments(n_records, n_components, n_features, n_files, row_group_size, partitions, sort_by, held_out)
    root = Path(path)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(f"{root} exists and is not an empty directory")
    # Fail on bad arguments (covariance_type, ...) before creating anything on disk.
    params = random_mixture(
        n_components,
        n_features,
        covariance_type=covariance_type,
        separation=separation,
        condition=condition,
        random_state=_seed(seed, _PARAMS),
    )
    root.mkdir(parents=True, exist_ok=True)
    feature_names = default_feature_names(n_features)
    schema = _schema(feature_names, labels)
    sampler = _Sampler(params, n_records, sort_by, seed)

    files = _relative_paths(n_files, partitions)
    start = 0
    for f, (rel, size) in enumerate(zip(files, _split(n_records, n_files))):
        tables = _tables(sampler, schema, start, start + size, row_group_size, (_CHUNK, f), labels)
        _write_parquet(root / rel, schema, tables, row_group_size, compression)
        start += size

    held_out_path = None
    if held_out:
        held_out_path = root / HELD_OUT_DIR / "part-00000.parquet"
        held_sampler = _Sampler(params, held_out, None, seed)
        _write_parquet(
            held_out_path,
            schema,
            _tables(held_sampler, schema, 0, held_out, row_group_size, (_HELD_OUT,), labels, id_offset=n_records),
            row_group_size,
            compression,
        )

    settings = {
        "n_records": n_records,
        "n_files": n_files,
        "partitions": partitions,
        "sort_by": sort_by,
        "seed": seed,
        "held_out": held_out,
        "files": files,
        "row_group_size": row_group_size,
        "labels": labels,
    }
    _write_json(root / TRUTH_FILE, _truth_document(params, feature_names, settings))
    return LakeInfo(root, files, n_records, params, feature_names, held_out_path)


def _relative_paths(n_files: int, partitions: int) -> list[str]:
    """The lake's files, ``part-00000.parquet`` ..., spread in order over ``day=0`` ...
    ``day=P-1`` when there are ``partitions``."""
    names = [f"part-{f:05d}.parquet" for f in range(n_files)]
    if not partitions:
        return names
    days = [p for p, size in enumerate(_split(n_files, partitions)) for _ in range(size)]
    return [f"day={day}/{name}" for day, name in zip(days, names)]


def _check_lake_arguments(
    n_records: int,
    n_components: int,
    n_features: int,
    n_files: int,
    row_group_size: int,
    partitions: int,
    sort_by: str | None,
    held_out: int,
) -> None:
    """Raise ``ValueError`` for arguments :func:`write_lake` cannot write a lake from."""
    if n_records < 1 or n_files < 1 or row_group_size < 1 or n_components < 1 or n_features < 1:
        raise ValueError("n_records, n_files, row_group_size, n_components and n_features must be >= 1")
    if n_files > n_records:
        raise ValueError(f"n_files={n_files} > n_records={n_records} would leave files empty")
    if partitions < 0 or held_out < 0:
        raise ValueError("partitions and held_out must be >= 0")
    if partitions > n_files:
        raise ValueError(f"partitions={partitions} needs at least as many files, got n_files={n_files}")
    if sort_by not in SORT_BY:
        raise ValueError(f"sort_by must be one of {SORT_BY}, got {sort_by!r}")


def _truth_document(params: MixtureParams, feature_names: list[str], settings: dict) -> dict:
    """``_truth.json``: the generating parameters and the lake's settings."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "covariance_type": params.covariance_type,
        "weights": params.weights.tolist(),
        "means": params.means.tolist(),
        "covariances": params.covariances.tolist(),
        "feature_names": feature_names,
        **settings,
    }


def read_truth(path: str | os.PathLike) -> tuple[MixtureParams, list[str]]:
    """The generating parameters and feature column names of a lake written by :func:`write_lake`."""
    truth = json.loads((Path(path) / TRUTH_FILE).read_text())
    if truth.get("format") != FORMAT or truth.get("version") != VERSION:
        raise ValueError(f"{path} is not a {FORMAT} version {VERSION} lake")
    params = MixtureParams.from_covariances(
        np.asarray(truth["weights"], dtype=float),
        np.asarray(truth["means"], dtype=float),
        np.asarray(truth["covariances"], dtype=float),
        truth["covariance_type"],
    )
    return params, list(truth["feature_names"])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m streamgmm.datasets.synthetic_lake",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("out", metavar="OUT", help="lake directory to create (must not exist or be empty)")
    parser.add_argument("--records", type=int, required=True, help="number of records in the lake")
    parser.add_argument("--components", type=int, default=5)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--row-group-size", type=int, default=131072)
    parser.add_argument("--partitions", type=int, default=0, help="hive partitions day=0..P-1 (0: none)")
    parser.add_argument("--sort-by", choices=["none", "component"], default="none")
    parser.add_argument("--covariance", choices=["full", "tied", "diag", "spherical"], default="full")
    parser.add_argument("--separation", type=float, default=9.0)
    parser.add_argument("--condition", type=float, default=10.0)
    parser.add_argument("--held-out", type=int, default=0, help="extra records written to OUT/_held_out")
    parser.add_argument("--labels", action="store_true", help="add the generating component as 'label'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compression", default="snappy")
    args = parser.parse_args(argv)
    try:
        info = write_lake(
            args.out,
            n_records=args.records,
            n_components=args.components,
            n_features=args.features,
            n_files=args.files,
            row_group_size=args.row_group_size,
            partitions=args.partitions,
            sort_by=None if args.sort_by == "none" else args.sort_by,
            covariance_type=args.covariance,
            separation=args.separation,
            condition=args.condition,
            held_out=args.held_out,
            labels=args.labels,
            seed=args.seed,
            compression=args.compression,
        )
    except ValueError as exc:
        parser.error(str(exc))
    extra = f" (+{args.held_out} held out)" if args.held_out else ""
    print(f"wrote {info.n_records} records{extra} in {len(info.files)} files to {info.path}")


if __name__ == "__main__":
    main()
