"""A shuffled pass over row groups: the row groups in a random order, each one's records in a
random order, as one stream of column-major mini-batches.

Two threads share the work, so that decoding and cutting overlap instead of adding up: one
decodes the next row group (pyarrow, to float64, the checks) into one of two arrays used in
turn, while the caller's thread permutes the row group before it and gathers its records into
mini-batches. Memory is two row groups' arrays (allocated once per pass, so no pages are faulted
in anew for every row group) plus the mini-batches. Each record is copied once after decoding:
gathered in blocks of ``GATHER_BLOCK`` rows straight into the column-major layout the E-step
kernels read, a mini-batch that straddles two row groups being filled from both.

Examples
--------
>>> import numpy as np
>>> groups = [np.arange(6.0).reshape(3, 2), np.arange(6.0, 10.0).reshape(2, 2)]
>>> def decode(i, out):
...     out[: len(groups[i])] = groups[i]
...     return out[: len(groups[i])]
>>> batches = list(shuffled_batches(decode, [1, 0], (3, 2), 2, np.random.default_rng(0)))
>>> [batch.shape for batch in batches], all(batch.flags.f_contiguous for batch in batches)
([(2, 2), (2, 2), (1, 2)], True)
>>> sorted(np.concatenate(batches)[:, 0].tolist())
[0.0, 2.0, 4.0, 6.0, 8.0]
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from streamgmm.io.background import read_ahead

# Records gathered at a time into a mini-batch: a block this small is still in the cache when it
# is copied into the batch's columns (a whole batch gathered, then made column-major, took about
# twice as long; docs/performance.md, "Tuning constants").
GATHER_BLOCK = 256


def shuffled_batches(
    decode: Callable[[int, np.ndarray], np.ndarray],
    visits: Iterable[int],
    shape: tuple[int, int],
    batch_size: int,
    rng: np.random.Generator,
) -> Iterator[np.ndarray]:
    """The row groups ``visits`` decoded ahead in a thread of their own and cut by :func:`cut_permuted`.

    Parameters
    ----------
    decode : callable
        ``decode(i, out)`` decodes row group ``i``'s usable records into the first rows of the
        row-major array ``out`` and returns that part of it.

    visits : iterable of int
        The row groups, in the order to visit them.

    shape : tuple of int
        The largest row group's (records, columns): the shape of the two arrays.

    batch_size : int
        Records per mini-batch; the last may be shorter.

    rng : numpy.random.Generator
        Permutes each row group's records, in the order of ``visits``.

    Returns
    -------
    batches : iterator of ndarray of shape (batch_size, columns)
        Column-major mini-batches. Closing the iterator stops the decoding thread.
    """
    free: queue.Queue[np.ndarray | None] = queue.Queue()
    free.put(None)
    free.put(None)  # the two arrays, made when first needed
    closing = threading.Event()

    def decoded() -> Iterator[np.ndarray]:
        for i in visits:
            while True:
                try:
                    out = free.get(timeout=0.1)
                    break
                except queue.Empty:
                    if closing.is_set():
                        return
            yield decode(i, np.empty(shape) if out is None else out)
            del out  # handed over: the cutting side puts it back when it is done with it

    groups = read_ahead(decoded(), depth=1, name="streamgmm-decode")
    try:
        # Each row group's records are the first rows of (a view of) one of the two arrays.
        yield from cut_permuted(groups, batch_size, rng, lambda rows: free.put(rows.base))
    finally:
        closing.set()
        groups.close()


def cut_permuted(
    groups: Iterable[np.ndarray], batch_size: int, rng: np.random.Generator, done: Callable[[np.ndarray], None]
) -> Iterator[np.ndarray]:
    """Row groups' records, each group's permuted by ``rng``, as one stream cut into column-major
    batches of ``batch_size`` records (the last shorter).

    ``done(rows)`` is called when a row group's array ``rows`` is read no more (no batch is a view
    of it).

    >>> groups = [np.arange(6.0).reshape(3, 2), np.arange(6.0, 10.0).reshape(2, 2)]
    >>> batches = list(cut_permuted(groups, 4, np.random.default_rng(0), lambda rows: None))
    >>> [batch.shape for batch in batches], sorted(batches[0][:3, 0].tolist())  # the first group first
    ([(4, 2), (1, 2)], [0.0, 2.0, 4.0])
    """
    batch: np.ndarray | None = None
    held = 0
    for rows in groups:
        order = rng.permutation(rows.shape[0])
        start = 0
        while start < order.size:
            if batch is None:
                batch = np.empty((batch_size, rows.shape[1]), order="F")
            take = min(batch_size - held, order.size - start)
            for first in range(0, take, GATHER_BLOCK):
                block = order[start + first : start + min(first + GATHER_BLOCK, take)]
                batch[held + first : held + first + block.size] = np.take(rows, block, axis=0)
            held += take
            start += take
            if held == batch_size:
                yield batch
                batch, held = None, 0
        done(rows)
        del rows, order
    if batch is not None and held:
        yield batch[:held].copy(order="F")
