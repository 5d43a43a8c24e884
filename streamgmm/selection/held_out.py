"""A held-out reservoir: a uniform sample of a stream kept out of training as it goes by
(Algorithm R), for scoring candidates on records none of them learnt from."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from streamgmm.io.sources.chunk_source import Batch


class HeldOutReservoir:
    """A uniform reservoir of ``size`` records of a stream, kept out of training (Algorithm R).

    A record that enters the reservoir is withheld; one evicted later goes back into the
    training stream at that moment, so every record is either held out at the end or trained
    on (evicted ones later than their place in the stream: about size * ln(N / size) records)."""

    def __init__(self, size: int, rng: np.random.Generator):
        self.size = int(size)
        self.rng = rng
        # The held records, with their weights as a last column for a weighted stream.
        self.held: np.ndarray | None = None
        self.weighted = False
        self.seen = 0
        self.evicted = 0

    def withhold(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        """The records of ``batches`` that go to training, in pieces of any size."""
        for pieces in batches:
            self.weighted = pieces.weights is not None
            batch = pieces.stacked()
            if self.held is None:
                self.held = np.empty((self.size, batch.shape[1]))
            n = batch.shape[0]
            positions = np.arange(self.seen, self.seen + n)
            slots = np.where(positions < self.size, positions, self.rng.integers(0, positions + 1))
            enter = np.flatnonzero(slots < self.size)
            taken = slots[enter]
            # As the sequential algorithm: of several entrants to one slot in this batch the
            # last stays; the others, and the records they displace, go back to training.
            last = len(taken) - 1 - np.unique(taken[::-1], return_index=True)[1]
            stays = np.zeros(len(taken), dtype=bool)
            stays[last] = True
            filled = taken[stays][taken[stays] < min(self.seen, self.size)]
            back = [
                batch[np.setdiff1d(np.arange(n), enter, assume_unique=True)],
                batch[enter[~stays]],
                self.held[filled].copy(),
            ]
            self.held[taken[stays]] = batch[enter[stays]]
            self.seen += n
            self.evicted += len(back[1]) + len(back[2])
            rest = np.concatenate(back)
            if rest.shape[0]:
                yield Batch.of(rest, self.weighted)

    def records(self) -> Batch | None:
        """The held-out records (None when the stream had none)."""
        if self.held is None:
            return None
        return Batch.of(self.held[: min(self.seen, self.size)], self.weighted)
