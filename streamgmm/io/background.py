"""Background threads, so that decoding, computing and encoding overlap.

pyarrow releases the GIL while it decodes and encodes Parquet, and numpy and BLAS while they
compute, so on two cores a pass whose stages each run in a thread of their own takes about as
long as its slowest stage rather than their sum. :func:`read_ahead` produces items ahead of
their use; :class:`WriteBehind` runs calls behind the caller. Both hold at most ``depth`` items
between the stages, so memory stays bounded whatever the length of the stream. An error in a
background thread is raised once, in the caller's thread, at its next use of the helper; the
other items are then dropped and the thread is stopped and joined.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_END = object()
_POLL = 0.1  # seconds between looks at the stop flag while a queue is full or empty


class _Failure:
    """An exception raised in the background thread, carried to the caller's."""

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
    items = iter(items)
    ready: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _offer(ready, item, stop):
                    return
                del item  # not held while the next one is produced
            _offer(ready, _END, stop)
        except BaseException as exc:  # handed to the consumer, raised there
            _offer(ready, _Failure(exc), stop)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def consume() -> Iterator[T]:
        worker = threading.Thread(target=produce, name=name, daemon=True)
        worker.start()
        try:
            while True:
                item = ready.get()
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                yield item
                del item  # not held while waiting for the next one
        finally:
            stop.set()
            worker.join()

    return consume()


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

    @property
    def aborting(self) -> bool:
        """Whether :meth:`abort` has begun: calls not yet started will not run."""
        return self._stop.is_set()

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: Any) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()
