"""Read-ahead and write-behind threads (:mod:`streamgmm.io.sources.read_ahead`): order and content kept,
errors raised once in the caller's thread, bounded queues, and no thread left running."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from streamgmm.io.background import WriteBehind, read_ahead


def alive(name: str) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == name]


def test_order_and_content_are_kept():
    rng = np.random.default_rng(0)
    chunks = [rng.normal(size=(int(rng.integers(0, 50)), 3)) for _ in range(40)]
    out = list(read_ahead(iter(chunks), depth=3))
    assert len(out) == len(chunks)
    for got, expected in zip(out, chunks):
        np.testing.assert_array_equal(got, expected)
    assert alive("streamgmm-read-ahead") == []


def test_an_error_in_the_reader_is_raised_once_with_its_file_named():
    def chunks():
        yield 1
        yield 2
        raise OSError("part-00003.parquet: cannot read row group 1")

    seen = []
    iterator = read_ahead(chunks(), name="test-reader")
    with pytest.raises(OSError, match=r"part-00003\.parquet"):
        for item in iterator:
            seen.append(item)
    assert seen == [1, 2]  # every item before the failure, then the failure
    assert list(iterator) == []  # raised once: the iterator is finished
    assert alive("test-reader") == []


def test_stopping_early_stops_the_thread_and_closes_the_source():
    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    iterator = read_ahead(endless(), depth=2, name="test-early-stop")
    taken = [next(iterator) for _ in range(3)]
    assert taken == [0, 1, 2]
    assert len(alive("test-early-stop")) == 1
    iterator.close()
    assert alive("test-early-stop") == []
    assert closed.is_set()


def test_a_consumer_dropping_out_of_a_for_loop_leaves_no_thread():
    def run() -> list[int]:
        out = []
        for item in read_ahead(iter(range(10**6)), name="test-break"):
            out.append(item)
            if item == 5:
                break
        return out

    assert run() == list(range(6))
    assert alive("test-break") == []


def test_the_queue_is_bounded():
    depth = 3
    produced = []
    gate = threading.Event()

    def counted():
        for i in range(1000):
            produced.append(i)
            yield i

    iterator = read_ahead(counted(), depth=depth, name="test-bounded")
    assert next(iterator) == 0
    # The producer fills the queue (depth items) and holds one more it cannot put.
    deadline = time.monotonic() + 10
    while len(produced) < depth + 2 and time.monotonic() < deadline:
        gate.wait(0.01)
    gate.wait(0.3)  # time to overrun, if the queue were not bounded
    assert len(produced) == depth + 2
    iterator.close()
    assert alive("test-bounded") == []


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        list(read_ahead(iter([1]), depth=0))
    with pytest.raises(ValueError, match="depth"):
        WriteBehind(depth=0)


def test_write_behind_runs_calls_in_order_and_ends_its_thread():
    written = []
    with WriteBehind(depth=2, name="test-writer") as behind:
        for i in range(100):
            behind.submit(written.append, i)
    assert written == list(range(100))
    assert alive("test-writer") == []


def test_write_behind_raises_a_failed_call_once_and_drops_the_rest():
    written = []

    def write(i: int) -> None:
        if i == 3:
            raise OSError("out/part-00003.parquet: disk full")
        written.append(i)

    behind = WriteBehind(depth=1, name="test-failing-writer")
    with pytest.raises(OSError, match=r"part-00003\.parquet") as raised:
        for i in range(50):
            behind.submit(write, i)
        behind.close()
    assert raised.value is not None
    behind.close()  # raised once: closing again is quiet
    assert written == [0, 1, 2]  # nothing after the failure ran
    assert alive("test-failing-writer") == []


def test_write_behind_abort_drops_queued_calls():
    started, release = threading.Event(), threading.Event()
    ran = []

    def slow(i: int) -> None:
        started.set()
        release.wait(10)
        ran.append(i)

    behind = WriteBehind(depth=2, name="test-abort")
    behind.submit(slow, 0)
    started.wait(10)
    behind.submit(ran.append, 1)
    behind.submit(ran.append, 2)
    aborting = threading.Thread(target=behind.abort)
    aborting.start()
    while not behind.aborting:  # the abort has begun before the running call ends
        time.sleep(0.001)
    release.set()
    aborting.join()
    assert ran == [0]  # the running call finished; the queued ones were dropped
    assert alive("test-abort") == []
    with pytest.raises(RuntimeError, match="closed"):
        behind.submit(ran.append, 3)


def test_write_behind_as_a_context_aborts_when_the_block_fails():
    ran = []
    with pytest.raises(KeyError), WriteBehind(name="test-context-abort") as behind:
        behind.submit(ran.append, 0)
        raise KeyError("the caller failed")
    assert alive("test-context-abort") == []
    assert ran in ([], [0])  # the call may or may not have started; nothing hangs


@pytest.mark.parametrize("seed", [None, 3])
def test_a_lake_read_ahead_is_its_batches_column_major(tmp_path, seed):
    """batches_ahead over a lake (plain or shuffled) hands over the source's own batches, bit for
    bit, with every feature's records contiguous (the layout the E-step kernels read)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from streamgmm import ParquetSource
    from streamgmm.io.sources.read_ahead import batches_ahead

    rng = np.random.default_rng(0)
    for i in range(3):
        table = pa.table({name: rng.normal(size=500) for name in ("a", "b", "c")})
        pq.write_table(table, tmp_path / f"part-{i}.parquet", row_group_size=128)
    source = ParquetSource(tmp_path)
    direct = list(source.batches(100, None if seed is None else np.random.default_rng(seed)))
    ahead = list(batches_ahead(source, 100, None if seed is None else np.random.default_rng(seed)))
    assert len(ahead) == len(direct) == 15
    for got, expected in zip(ahead, direct):
        np.testing.assert_array_equal(got.features, expected.features, strict=True)
        assert got.features.strides[0] == got.features.itemsize
    assert alive("streamgmm-batches-ahead") == [] and alive("streamgmm-decode") == []
