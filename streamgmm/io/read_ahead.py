"""Read-ahead and write-behind threads, so that decoding, computing and encoding overlap.

pyarrow releases the GIL while it decodes and encodes Parquet, and numpy and BLAS while they
compute, so on two cores a pass whose three stages each run in a thread of their own takes
about as long as its slowest stage rather than their sum. Both helpers hold at most ``depth``
items between the stages, so memory stays bounded whatever the length of the stream. An error
in a background thread is raised once, in the caller's thread, at its next use of the helper;
the other items are then dropped and the thread is stopped and joined.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import numpy as np

from streamgmm.io.sources import ArraySource, prefetched

T = TypeVar("T")

_END = object()
_POLL = 0.1  # seconds between looks at the stop flag while a queue is full or empty


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def _offer(ready: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put ``item`` unless ``stop`` is set first; whether it was put."""
    while not stop.is_set():
        try:
            ready.put(item, timeout=_POLL)
            return True
        except queue.Full:
            continue
    return False


def read_ahead(items: Iterable[T], depth: int = 2, name: str = "streamgmm-read-ahead") -> Iterator[T]:
    """Produce ``items`` in a background thread, up to ``depth`` ahead of their use.

    Parameters
    ----------
    items : iterable
        What to produce, in order (for example the decoded chunks of a lake).

    depth : int, default=2
        Items produced and not yet used at most; memory is bounded by ``depth + 1`` items.

    name : str, default='streamgmm-read-ahead'
        The thread's name (seen in ``threading.enumerate()`` and profilers).

    Returns
    -------
    items : iterator
        The same items in the same order. An exception raised while producing them is raised
        here at the item it replaced. Closing the iterator (or leaving a ``for`` loop over it
        early) stops the thread, closes ``items`` and waits for the thread to end.

    Examples
    --------
    >>> list(read_ahead(x * x for x in range(5)))
    [0, 1, 4, 9, 16]
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    return prefetched(iter(items), depth, name)


class WriteBehind:
    """Run calls in order in a background thread, at most ``depth`` of them waiting.

    :meth:`submit` queues a call (blocking while ``depth`` are waiting); :meth:`close` waits for
    all of them; :meth:`abort` drops those not started and waits for the running one. The first
    exception a call raises is raised by the next :meth:`submit` or by :meth:`close`, once;
    calls queued after it are dropped. As a context manager it closes on success and aborts
    when the block raises.

    Parameters
    ----------
    depth : int, default=2
        Calls queued and not yet started at most.

    name : str, default='streamgmm-write-behind'
        The thread's name.

    Examples
    --------
    >>> written = []
    >>> with WriteBehind() as behind:
    ...     for x in range(3):
    ...         behind.submit(written.append, x)
    >>> written
    [0, 1, 2]
    """

    def __init__(self, depth: int = 2, name: str = "streamgmm-write-behind"):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._calls: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._raised = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                call = self._calls.get(timeout=_POLL)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if call is _END:
                return
            if self._error is not None or self._stop.is_set():
                continue  # after a failure or an abort, what is queued is dropped
            function, args = call
            try:
                function(*args)
            except BaseException as exc:  # raised by the caller's next submit or close
                self._error = exc
            del call, function, args

    def _raise_error(self) -> None:
        if self._error is not None and not self._raised:
            self._raised = True
            raise self._error

    def submit(self, function: Callable[..., Any], *args: Any) -> None:
        """Queue ``function(*args)``; raises the error of an earlier call, if one failed."""
        self._raise_error()
        if self._stop.is_set() or not self._thread.is_alive():
            raise RuntimeError("this WriteBehind is closed")
        # The thread keeps taking calls (dropping them after a failure), so this put never hangs.
        self._calls.put((function, args))
        self._raise_error()

    def close(self) -> None:
        """Wait until every queued call has run; raises the first error of any of them."""
        if self._thread.is_alive():
            _offer(self._calls, _END, self._stop)
            self._thread.join()
        self._raise_error()

    def abort(self) -> None:
        """Drop the calls not yet started, wait for the running one, raise nothing."""
        self._stop.set()
        self._thread.join()
        self._raised = True

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: Any) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


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
    batches : iterator of ndarray
        The source's mini-batches, in its order.

    Examples
    --------
    >>> import numpy as np
    >>> from streamgmm.io.sources import IterableSource
    >>> source = IterableSource([np.ones((3, 2)), np.zeros((2, 2))])
    >>> [batch.shape for batch in batches_ahead(source, 2)]
    [(2, 2), (2, 2), (1, 2)]
    """
    batches = source.batches(batch_size, rng)
    if isinstance(source, ArraySource):
        return batches
    return read_ahead(_column_major(batches), depth, "streamgmm-batches-ahead")


def _column_major(batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Each batch with every feature's records contiguous, as the E-step kernels read them: the
    transposing copy is made here, in the reading thread, rather than by the kernel in the
    computing one. Batches already laid out so (a lake's, shuffled or not) are not copied."""
    for batch in batches:
        if batch.ndim == 2 and batch.shape[0] > 1 and batch.strides[0] != batch.itemsize:
            batch = np.asfortranarray(batch)
        yield batch
