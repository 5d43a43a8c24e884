"""Sources: anything the algorithms can stream as float64 mini-batches.

A source yields mini-batches of a fixed number of records and can draw a random sample of
records for initialisation, each a :class:`Batch`: the records' float64 features and, for a
source with record weights (``weighted = True``), their weights. This module covers in-memory
arrays and iterables of chunks; file formats plug in by implementing the same two methods.

Inside a source, a weighted chunk is stored with the weights as its last column, so shuffling,
re-batching and sampling move a record and its weight together; :meth:`Batch.of` takes such a
matrix apart at the source's edge. Under ``nan_policy="marginalize"`` a batch's missing
features are NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np

from streamgmm.io.records.checks import as_float_matrix, check_weights


class Batch(NamedTuple):
    """Records of a source: their features, and their weights (None for a source without).

    Examples
    --------
    >>> batch = Batch.of(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 0.5]]), weighted=True)
    >>> batch.features.tolist(), batch.weights.tolist(), batch.n_records
    ([[1.0, 2.0], [4.0, 5.0]], [3.0, 0.5], 2)
    >>> X, weights = Batch.of(np.ones((2, 2)), weighted=False)
    >>> X.shape, weights
    ((2, 2), None)
    """

    features: np.ndarray
    weights: np.ndarray | None = None

    @classmethod
    def of(cls, matrix: np.ndarray, weighted: bool) -> Batch:
        """The records of a matrix whose last column is their weights when ``weighted`` (views)."""
        return cls(matrix[:, :-1], matrix[:, -1]) if weighted else cls(matrix)

    @property
    def n_records(self) -> int:
        """The number of records."""
        return int(self.features.shape[0])

    def take(self, rows: Any) -> Batch:
        """The records ``rows`` selects (an index array, a mask or a slice)."""
        return Batch(self.features[rows], None if self.weights is None else self.weights[rows])

    def stacked(self) -> np.ndarray:
        """The features with the weights as a last column (a copy), or the features themselves."""
        return self.features if self.weights is None else np.column_stack([self.features, self.weights])

    @classmethod
    def concatenate(cls, batches: Sequence[Batch]) -> Batch:
        """The records of ``batches`` (at least one), in order."""
        features = np.concatenate([b.features for b in batches])
        if batches[0].weights is None:
            return cls(features)
        return cls(features, np.concatenate([b.weights for b in batches]))


class ChunkSource(Protocol):
    reiterable: bool
    n_features: int | None
    feature_names: list[str] | None  # column names, for sources that have them
    shuffle_modes: tuple[str, ...]  # what ``batches`` shuffles when given an rng
    skipped_records: int  # records the last pass left out (nan_policy="skip")
    weighted: bool  # batches and samples carry record weights
    # Called with the records of the initialisation sample as the start's EM processes them (a
    # progress bar), or None.
    start_progress: Callable[[int], None] | None
    # After sample(): whether the sample holds every record of the source (None: not known).
    sampled_every_record: bool | None

    def batches(self, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[Batch]:
        """Mini-batches of ``batch_size`` records (the last may be shorter); ``rng`` shuffles
        where the source can."""
        ...

    def sample(self, size: int, rng: np.random.Generator) -> Batch:
        """Up to ``size`` records drawn uniformly at random."""
        ...


# What a source must have besides its batches() and sample() methods.
SOURCE_ATTRIBUTES = tuple(name for name in ChunkSource.__annotations__)


def check_source(source: object) -> None:
    """Raise ``TypeError`` naming what ``source`` lacks of the :class:`ChunkSource` protocol."""
    missing = [name for name in ("batches", "sample", *SOURCE_ATTRIBUTES) if not hasattr(source, name)]
    if missing:
        raise TypeError(
            f"{type(source).__name__} is not a source: it has no {', '.join(missing)} "
            "(see streamgmm.io.sources.chunk_source.ChunkSource)"
        )


def weight_scale(weights: np.ndarray) -> float:
    """The mean of the positive ``weights`` (finite, >= 0), computed without overflow: the unit a
    fit measures record weights in, so that weights of any scale fit alike. Records of weight
    zero are as good as absent, so they do not change the unit.

    >>> weight_scale(np.array([1e308, 0.0, 1e308])), weight_scale(np.array([1e-300, 3e-300]))
    (1e+308, 2e-300)
    """
    positive = weights[weights > 0]
    if positive.size == 0:
        raise ValueError("every record has weight zero (the weights sum to 0): there is nothing to fit")
    # Divided by a power of two near the largest (exact), the mean of ratios in (0, 1] cannot overflow.
    exponent = int(np.frexp(positive.max())[1])
    return float(np.ldexp(np.mean(np.ldexp(positive, -exponent)), exponent))


def scaled_weights(batch: Batch, scale: float) -> Batch:
    """A weighted batch with its weights divided by ``scale``; ``ValueError`` when a ratio is
    not representable.

    >>> scaled_weights(Batch(np.array([[1.0], [2.0]]), np.array([2e-300, 6e-300])), 4e-300).weights.tolist()
    [0.5, 1.5]
    """
    if scale == 1.0 or batch.n_records == 0:
        return batch
    with np.errstate(over="ignore"):
        weights = batch.weights / scale
    if not np.isfinite(weights).all():
        top = float(batch.weights.max())
        raise ValueError(
            f"a record weight of {top:g} is more than 1.8e308 times the fit's unit of weight ({scale:g}, the mean "
            f"positive weight of its initialisation sample): the weights' range is not representable in float64"
        )
    return Batch(batch.features, weights)


class ScaledWeights:
    """A weighted source whose record weights are divided by ``scale``; everything else is the
    wrapped source's. Record weights are relative: a fit divides them by one scale (the mean
    positive weight of its initialisation sample), so that its thresholds and step sizes, which count
    records, see weights of about one whatever unit the user's weights are in.

    ``scale=None`` fixes the scale from the first batch with a positive weight (a fit that drew
    no sample); ``on_scale`` is then called with it.

    >>> source = ScaledWeights(ArraySource(np.zeros((2, 1)), weights=np.array([1.0, 3.0]) * 2.0**-69), 2.0**-68)
    >>> source.weighted, next(source.batches(2)).weights.tolist()
    (True, [0.5, 1.5])
    """

    def __init__(self, source: Any, scale: float | None, on_scale: Callable[[float], None] | None = None):
        self.source = source
        self.scale = scale
        self.on_scale = on_scale

    def __getattr__(self, name: str) -> Any:
        # Only reached for names this wrapper does not define: the source's own attributes.
        if name == "source":
            raise AttributeError(name)
        return getattr(self.source, name)

    def batches(self, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[Batch]:
        for batch in self.source.batches(batch_size, rng):
            if self.scale is None and batch.n_records and batch.weights.max() > 0:
                self.scale = weight_scale(batch.weights)
                if self.on_scale is not None:
                    self.on_scale(self.scale)
            yield batch if self.scale is None else scaled_weights(batch, self.scale)

    def sample(self, size: int, rng: np.random.Generator) -> Batch:
        sample = self.source.sample(size, rng)
        return sample if self.scale is None else scaled_weights(sample, self.scale)


def is_dask_collection(data: Any) -> bool:
    """A Dask DataFrame or Array (without importing dask when the input is anything else)."""
    if not type(data).__module__.startswith("dask."):
        return False
    from dask.base import is_dask_collection as is_collection

    return bool(is_collection(data))


class ArraySource:
    """An in-memory array; batches are views, or random rows when shuffled.

    With ``weights`` (one per record) the source is weighted: the weights are stored as a last
    column next to the features (one copy), so a record and its weight move together; ``X``
    stays the features.

    >>> source = ArraySource(np.array([[1.0], [2.0]]), weights=np.array([3.0, 0.5]))
    >>> batch = next(source.batches(2))
    >>> source.weighted, source.n_features, batch.features.tolist(), batch.weights.tolist()
    (True, 1, [[1.0], [2.0]], [3.0, 0.5])
    """

    reiterable = True
    shuffle_modes = ("records",)
    start_progress: Callable[[int], None] | None = None
    sampled_every_record: bool | None = None

    def __init__(self, X: np.ndarray, feature_names: list[str] | None = None, weights: np.ndarray | None = None):
        if weights is None:
            self.data = X
        else:
            self.data = np.column_stack([X, np.asarray(weights, dtype=np.float64)])
        self.weighted = weights is not None
        self.n_features = X.shape[1]
        self.feature_names = feature_names
        self.skipped_records = 0

    @classmethod
    def with_weight_column(cls, matrix: np.ndarray, feature_names: list[str] | None = None) -> ArraySource:
        """A weighted source over a matrix whose last column already holds the weights (no copy)."""
        source = cls(matrix[:, :-1], feature_names)
        source.data, source.weighted = matrix, True
        return source

    @property
    def X(self) -> np.ndarray:
        """The features (without the weight column of a weighted source)."""
        return self.data[:, :-1] if self.weighted else self.data

    @property
    def weights(self) -> np.ndarray | None:
        """The record weights, or None when the source has none."""
        return self.data[:, -1] if self.weighted else None

    def __len__(self) -> int:
        return self.data.shape[0]

    def batches(self, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[Batch]:
        n = self.data.shape[0]
        if rng is None:
            for start in range(0, n, batch_size):
                yield Batch.of(self.data[start : start + batch_size], self.weighted)
            return
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            yield Batch.of(self.data[np.sort(order[start : start + batch_size])], self.weighted)

    def sample(self, size: int, rng: np.random.Generator) -> Batch:
        n = self.data.shape[0]
        if size >= n:
            return Batch.of(self.data, self.weighted)
        return Batch.of(self.data[np.sort(rng.choice(n, size, replace=False))], self.weighted)


class IterableSource:
    """An iterable of 2-D chunks (arrays, or anything ``np.asarray`` takes).

    A list or tuple of chunks, or a callable returning a fresh iterable, can be streamed many
    times (several passes, batch EM). A plain iterator or generator is one-shot: its head is
    buffered for the initialisation sample and replayed, so every record is still used once.
    """

    shuffle_modes: tuple[str, ...] = ()
    start_progress: Callable[[int], None] | None = None
    # Whether the last sample saw every record of the stream (then it is the whole data).
    sampled_every_record = False

    def __init__(
        self,
        chunks: Iterable[Any] | Callable[[], Iterable[Any]],
        n_features: int | None = None,
        feature_names: list[str] | None = None,
        *,
        weighted: bool = False,
        allow_nan: bool = False,
        nan_policy: str | None = None,
    ):
        self.feature_names = feature_names
        # weighted: each chunk's last column is the record weights (n_features counts features only).
        self.weighted = weighted
        # allow_nan: chunks may hold NaN (missing features), passed on as they are (a reader
        # upstream applied the policy). nan_policy: this source applies it, leaving out the rows
        # with a missing value ("skip") or with nothing observed ("marginalize").
        self.allow_nan = allow_nan or nan_policy not in (None, "raise")
        self.nan_policy = nan_policy
        self._dropped = 0
        self._factory: Callable[[], Iterable[Any]] | None
        if callable(chunks) and not hasattr(chunks, "__iter__"):
            self._factory = chunks
            self._iterator = None
        elif isinstance(chunks, Sequence):
            self._factory = lambda: chunks
            self._iterator = None
        else:
            self._factory = None
            self._iterator = iter(chunks)
        self.reiterable = self._factory is not None
        self.n_features = n_features
        self._head: list[np.ndarray] = []
        self._pulled = 0  # chunks taken from a one-shot iterator so far, empty ones included
        self._consumed = False

    def _checked(self, chunks: Iterable[Any], first_index: int = 0) -> Iterator[np.ndarray]:
        extra = int(self.weighted)
        for i, chunk in enumerate(chunks, start=first_index):
            where = f"chunk {i}"
            width = None if self.n_features is None else self.n_features + extra
            arr = as_float_matrix(chunk, where=where, n_features=width, min_records=0, allow_nan=self.allow_nan)
            if self.weighted:
                check_weights(arr[:, -1], where)
            if self.n_features is None:
                self.n_features = arr.shape[1] - extra
            if self.nan_policy is not None:
                arr, skipped = drop_missing(arr, self.nan_policy, self.weighted)
                self._dropped += skipped
            if arr.shape[0]:
                yield arr

    def _rest(self) -> Iterator[np.ndarray]:
        """The one-shot iterator's remaining chunks, checked. They are numbered by their place in
        the stream, not in the buffered head: empty chunks are never buffered but still count,
        so an error names the chunk the caller yielded."""

        def counted() -> Iterator[Any]:
            for chunk in self._iterator:
                self._pulled += 1
                yield chunk

        return self._checked(counted(), first_index=self._pulled)

    def _chunks(self) -> Iterator[np.ndarray]:
        if self._factory is not None:
            yield from self._checked(self._factory())
            return
        if self._consumed:
            raise ValueError(
                "this iterator of chunks has already been streamed once; pass a list of chunks or "
                "a callable returning a fresh iterator to stream it several times"
            )
        self._consumed = True
        head, self._head = self._head, []
        yield from head
        yield from self._rest()

    @property
    def skipped_records(self) -> int:
        """Rows the last pass left out under ``nan_policy``."""
        return self._dropped

    def batches(self, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[Batch]:
        self._dropped = 0
        return (Batch.of(batch, self.weighted) for batch in rebatch(self._chunks(), batch_size))

    def sample(self, size: int, rng: np.random.Generator) -> Batch:
        if self._factory is not None:
            sample, seen = reservoir_sample_counted(self._chunks(), size, rng)
            self.sampled_every_record = seen <= size
            return Batch.of(sample if seen else self._empty(), self.weighted)
        if self._consumed:
            raise ValueError("this iterator of chunks has already been streamed; it cannot be sampled")
        # One-shot: the sample is the head of the stream (documented: a sorted stream biases it).
        have = sum(c.shape[0] for c in self._head)
        self.sampled_every_record = True
        for chunk in self._rest():
            self._head.append(chunk)
            have += chunk.shape[0]
            if have >= size:
                # More may follow: only an exhausted stream was sampled whole.
                self.sampled_every_record = have == size and self._exhausted()
                break
        if not self._head:
            return Batch.of(self._empty(), self.weighted)
        return Batch.of(np.concatenate(self._head)[:size], self.weighted)

    def _empty(self) -> np.ndarray:
        return np.empty((0, (self.n_features or 0) + int(self.weighted)))

    def _exhausted(self) -> bool:
        """Whether the one-shot iterator has no chunk with records left (a peeked chunk is
        kept in the head, so nothing is lost)."""
        for chunk in self._rest():
            self._head.append(chunk)
            return False
        return True


def drop_missing(matrix: np.ndarray, nan_policy: str, weighted: bool = False) -> tuple[np.ndarray, int]:
    """The rows a fit uses under ``nan_policy``, and how many were left out: under ``"skip"``
    every row with a missing feature (NaN) goes, under ``"marginalize"`` only the rows with
    every feature missing (EM has nothing to learn from them); ``weighted``: the last column is
    the record weights, never a feature.

    >>> X = np.array([[1.0, np.nan], [np.nan, np.nan], [3.0, 4.0]])
    >>> drop_missing(X, "skip")[0].tolist(), drop_missing(X, "marginalize")[1]
    ([[3.0, 4.0]], 1)
    """
    features = matrix[:, :-1] if weighted else matrix
    missing = np.isnan(features)
    if nan_policy == "raise" or not missing.any():
        return matrix, 0
    drop = missing.any(axis=1) if nan_policy == "skip" else missing.all(axis=1)
    return matrix[~drop], int(np.count_nonzero(drop))


def rebatch(chunks: Iterable[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    """Regroup chunks of any sizes into batches of exactly ``batch_size`` records (last shorter).

    Chunks that already have the right size pass through without a copy."""
    pending: list[np.ndarray] = []
    held = 0
    for chunk in chunks:
        start = 0
        n = chunk.shape[0]
        while start < n:
            if held == 0 and n - start >= batch_size:
                yield chunk[start : start + batch_size]
                start += batch_size
                continue
            take = min(batch_size - held, n - start)
            # A copy, not a view: a view would keep the whole chunk alive until the batch fills.
            pending.append(chunk[start : start + take].copy())
            held += take
            start += take
            if held == batch_size:
                yield np.concatenate(pending)
                pending, held = [], 0
    if held:
        yield np.concatenate(pending)


def rebatch_batches(batches: Iterable[Batch], batch_size: int) -> Iterator[Batch]:
    """:func:`rebatch` of batches: a record and its weight stay together.

    >>> pieces = [Batch(np.ones((3, 1)), np.ones(3)), Batch(np.zeros((2, 1)), np.zeros(2))]
    >>> [(b.n_records, b.weights.tolist()) for b in rebatch_batches(pieces, 4)]
    [(4, [1.0, 1.0, 1.0, 0.0]), (1, [0.0])]
    """
    weighted = False

    def stacked() -> Iterator[np.ndarray]:
        nonlocal weighted
        for batch in batches:
            weighted = batch.weights is not None
            yield batch.stacked()

    for matrix in rebatch(stacked(), batch_size):
        yield Batch.of(matrix, weighted)


def reservoir_sample(chunks: Iterable[np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    """A uniform sample of ``size`` records from a stream of chunks, in one pass (Algorithm R,
    vectorised per chunk); the whole stream if it is shorter."""
    return reservoir_sample_counted(chunks, size, rng)[0]


def reservoir_sample_counted(
    chunks: Iterable[np.ndarray], size: int, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """:func:`reservoir_sample` and the number of records the stream had."""
    reservoir: np.ndarray | None = None
    seen = 0
    for chunk in chunks:
        if reservoir is None:
            reservoir = np.empty((size, chunk.shape[1]))
        n = chunk.shape[0]
        fill = min(max(size - seen, 0), n)
        if fill:
            reservoir[seen : seen + fill] = chunk[:fill]
        if fill < n:
            positions = np.arange(seen + fill, seen + n)
            slots = rng.integers(0, positions + 1)
            keep = slots < size
            # Later records overwrite earlier ones in the same slot, as in the sequential algorithm.
            reservoir[slots[keep]] = chunk[fill:][keep]
        seen += n
    if reservoir is None:
        return np.empty((0, 0)), 0
    return reservoir[: min(seen, size)], seen
