"""Does reading ahead help the online pass, and how many BLAS threads should it have?

In one process, on one lake (default: ``scripts/bench``'s, 1M x 16, K=8 full, sorted by
component), each round times bare decode (``scripts/bench``'s ``decode``) and then one online
pass (``partial_fit`` with the default ``shuffle="row_groups"``, as ``scripts/bench``'s "its
online pass alone") in each variant and compute dtype:

- ``as is``: the package as it stands;
- ``no read-ahead``: every reading thread replaced by reading in the caller's thread
  (ParquetSource's own prefetch and the EM passes' ``batches_ahead``): decode and compute in turn;
- ``source only``: the EM passes' ``batches_ahead`` off, ParquetSource's own prefetch kept;
- ``BLAS 2 threads``: as is, inside ``threadpool_limits(2)`` (the kernels still take one thread
  where they ask for it);
- ``1 BLAS thread``: as is, inside ``threadpool_limits(1)``.

Rounds alternate the variants, so a machine whose load drifts affects them alike; each pass's
rate is divided by the same round's decode rate and the median over rounds is printed.

    .venv/bin/python scripts/bench_read_ahead.py [--lake DIR] [--rounds 3] [--dtypes float64,float32]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: E402  (scripts/bench.py: the same decode and lake as the benchmark)

VARIANTS = ("as is", "no read-ahead", "source only", "BLAS 2 threads", "1 BLAS thread")


@contextlib.contextmanager
def variant(name: str) -> Iterator[None]:
    from threadpoolctl import threadpool_limits

    import streamgmm.em.batch as batch
    import streamgmm.em.online as online
    import streamgmm.io.parquet_source as parquet_source

    def in_turn(source, batch_size, rng=None, depth=2):
        return source.batches(batch_size, rng)

    saved = (online.batches_ahead, batch.batches_ahead, parquet_source.prefetched)
    try:
        if name in ("no read-ahead", "source only"):
            online.batches_ahead = batch.batches_ahead = in_turn
        if name == "no read-ahead":
            parquet_source.prefetched = lambda items, depth=2: items
        if name == "BLAS 2 threads":
            with threadpool_limits(limits=2, user_api="blas"):
                yield
        elif name == "1 BLAS thread":
            with threadpool_limits(limits=1, user_api="blas"):
                yield
        else:
            yield
    finally:
        online.batches_ahead, batch.batches_ahead, parquet_source.prefetched = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lake", help="a lake written by scripts/make_lake (default: write scripts/bench's)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    from streamgmm import ParquetSource, StreamingGaussianMixture
    from streamgmm.datasets.synthetic_lake import read_truth

    tmp = None
    lake = args.lake
    if lake is None:
        tmp = tempfile.mkdtemp(prefix="bench_read_ahead_")
        lake = os.path.join(tmp, "lake")
        namespace = argparse.Namespace(features=16, components=8, files=8, covariance="full", seed=0)
        bench.make_lake(lake, 1_000_000, namespace, held_out=1000)
    try:
        _, names = read_truth(lake)
        source = ParquetSource(lake, passthrough=["id"])
        models = {}
        for dtype in args.dtypes.split(","):
            model = StreamingGaussianMixture(8, random_state=0, compute_dtype=dtype, algorithm="online")
            models[dtype] = model.fit(source)
        ratios: dict[tuple[str, str], list[float]] = {}
        for round_ in range(args.rounds):
            decode = bench.decode(lake, names)
            decode_rate = decode["records_read"] / decode["seconds"]
            line = [f"round {round_ + 1}: decode {decode['seconds']:.2f} s"]
            for dtype, model in models.items():
                for name in args.variants.split(","):
                    with variant(name):
                        start = time.perf_counter()
                        model.partial_fit(source)
                        seconds = time.perf_counter() - start
                    ratio = source.n_records / seconds / decode_rate
                    ratios.setdefault((dtype, name), []).append(ratio)
                    line.append(f"{dtype} {name} {seconds:.2f} s")
            print("; ".join(line), flush=True)
        print(f"\nonline pass rate / bare decode rate, median of {args.rounds} rounds ({lake})")
        for (dtype, name), values in ratios.items():
            print(
                f"  {dtype:<8} {name:<15} {statistics.median(values):.2f}   ({', '.join(f'{v:.2f}' for v in values)})"
            )
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
