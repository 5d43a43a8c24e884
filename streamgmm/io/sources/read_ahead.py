"""Mini-batches read ahead of the E-step: a source's reading (decoding Parquet or Arrow, a
user's generator) runs in a background thread (:func:`streamgmm.io.background.read_ahead`)
while the caller computes on the batch before.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from streamgmm.io.background import read_ahead
from streamgmm.io.sources.chunk_source import ArraySource, Batch

# Mini-batches decoded ahead of the E-step: two keep the reading thread busy while memory stays
# at a few batches.
BATCHES_AHEAD = 2


def batches_ahead(source: Any, batch_size: int, rng: Any = None, depth: int = BATCHES_AHEAD) -> Iterator[Any]:
    """``source.batches(batch_size, rng)``, read by a background thread while the caller computes.

    An in-memory array's batches are views or cheap gathers, so they are taken as they are; any
    other source's reading (decoding Parquet or Arrow, a user's generator) overlaps the E-step,
    and its batches are handed over column-major (each feature's records contiguous), the
    layout the E-step kernels read.

    Parameters
    ----------
    source : ChunkSource
        Any source with a ``batches(batch_size, rng)`` method.

    batch_size : int
        Records per mini-batch.

    rng : numpy.random.Generator, default=None
        Passed on to ``source.batches`` (the visit order, where the source shuffles).

    depth : int, default=BATCHES_AHEAD
        Mini-batches read and not yet used at most.

    Returns
    -------
    batches : iterator of Batch
        The source's mini-batches, in its order.

    Examples
    --------
    >>> import numpy as np
    >>> from streamgmm.io.sources.chunk_source import IterableSource
    >>> source = IterableSource([np.ones((3, 2)), np.zeros((2, 2))])
    >>> [batch.features.shape for batch in batches_ahead(source, 2)]
    [(2, 2), (2, 2), (1, 2)]
    """
    batches = source.batches(batch_size, rng)
    if isinstance(source, ArraySource):
        return batches
    return read_ahead(_column_major(batches), depth, "streamgmm-batches-ahead")


def _column_major(batches: Iterable[Batch]) -> Iterator[Batch]:
    """Each batch with every feature's records contiguous, as the E-step kernels read them: the
    transposing copy is made here, in the reading thread, rather than by the kernel in the
    computing one. Batches already laid out so (a lake's, shuffled or not) are not copied."""
    for batch in batches:
        X, weights = batch
        if X.ndim == 2 and X.shape[0] > 1 and X.strides[0] != X.itemsize:
            X = np.asfortranarray(X)
        if weights is not None and weights.shape[0] > 1 and weights.strides[0] != weights.itemsize:
            weights = np.ascontiguousarray(weights)
        yield Batch(X, weights)
