"""Benchmark: choosing K with one shared stream (``streamgmm.select``) against one fit and one BIC
pass per candidate, on the same Parquet lake.

Prints, for both ways, the wall and CPU time, the passes over the lake and the records decoded,
and whether they choose the same K. On a local disk the E-step dominates (decoding is a few
per cent of a pass), so the saving is in reads and passes: it matters when the lake is remote
or slow to decode, and for one-shot streams, which can only be read once. Both fit the same candidates with the same seed, so with
``shuffle=False`` their models are equal (see tests/test_selection.py); here both shuffle row
groups, as the command does.

    python scripts/bench_select.py LAKE [-k 2..8] [--covariance full] [--passthrough id]
"""

from __future__ import annotations

import argparse
import time

import streamgmm
from streamgmm import ParquetSource, StreamingGaussianMixture
from streamgmm.selection import parse_candidates


class Counting:
    """A source that counts its passes and the records it decodes."""

    def __init__(self, source):
        self.source, self.passes, self.records = source, 0, 0

    def __getattr__(self, name):
        return getattr(self.source, name)

    def batches(self, batch_size, rng=None):
        self.passes += 1
        for batch in self.source.batches(batch_size, rng):
            self.records += batch.shape[0]
            yield batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lake")
    parser.add_argument("-k", default="2..8")
    parser.add_argument("--covariance", default="full")
    parser.add_argument("--passthrough", default="id")
    args = parser.parse_args()
    ks, types = parse_candidates(args.k), args.covariance.split(",")
    passthrough = [c for c in args.passthrough.split(",") if c]

    shared = Counting(ParquetSource(args.lake, passthrough=passthrough))
    started, cpu = time.perf_counter(), time.process_time()
    result = streamgmm.select(shared, ks, types, random_state=0, shuffle="row_groups")
    shared_seconds, shared_cpu = time.perf_counter() - started, time.process_time() - cpu

    alone = Counting(ParquetSource(args.lake, passthrough=passthrough))
    started, cpu = time.perf_counter(), time.process_time()
    bics = {}
    for t in types:
        for k in ks:
            model = StreamingGaussianMixture(k, covariance_type=t, random_state=0, shuffle="row_groups").fit(alone)
            bics[(k, t)] = model.bic(alone)
    alone_seconds, alone_cpu = time.perf_counter() - started, time.process_time() - cpu
    best_alone = min(bics, key=bics.get)

    n = len(ks) * len(types)
    print(f"{n} candidates (K {args.k}, {args.covariance}) on {shared.source.n_records:,} records")
    print(
        f"select (shared stream):     {shared_seconds:7.1f} s wall, {shared_cpu:7.1f} s CPU, {shared.passes} passes, {shared.records:,} records decoded, "
        f"best K={result.best.n_components} {result.best.covariance_type}"
    )
    print(
        f"fit + bic per candidate:    {alone_seconds:7.1f} s wall, {alone_cpu:7.1f} s CPU, {alone.passes} passes, {alone.records:,} records decoded, "
        f"best K={best_alone[0]} {best_alone[1]}"
    )


if __name__ == "__main__":
    main()
