"""The commands' progress bars: tqdm on stderr, on a terminal only (``-q`` silences them)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from streamgmm.io.sources.chunk_source import Batch
from streamgmm.io.sources.parquet import ParquetSource


class ProgressSource:
    """A source that shows a progress bar per pass over it (records, records/s, ETA), and one
    while the start's EM runs on the initialisation sample (records processed, records/s): on
    wide records with missing values that EM alone can take minutes. :meth:`close` ends it."""

    def __init__(self, source: ParquetSource, enabled: bool, label: str):
        self.source = source
        self.enabled = enabled
        self.label = label
        self.passes = 0
        self.start_bar: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.source, name)

    def start_progress(self, n_records: int) -> None:
        """Count records the start's EM has processed (the estimator calls it)."""
        if self.start_bar is None:
            self.start_bar = progress_bar(self.enabled, None, f"{self.label} start (EM on the sample)")
        self.start_bar.update(n_records)

    def close(self) -> None:
        if self.start_bar is not None:
            self.start_bar.close()
            self.start_bar = None

    def batches(self, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[Batch]:
        self.close()  # the passes begin once the start is over
        self.passes += 1
        with progress_bar(self.enabled, self.source.n_records, f"{self.label} pass {self.passes}") as bar:
            for batch in self.source.batches(batch_size, rng):
                bar.update(batch.n_records)
                yield batch


def progress_bar(enabled: bool, total: int | None, description: str) -> Any:
    """A tqdm bar on stderr (tqdm is imported here: only commands that stream need it)."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=description,
        unit=" records",
        unit_scale=True,
        disable=not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
        leave=False,
    )


def show_progress(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()
