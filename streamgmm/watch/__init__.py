"""``streamgmm watch``: keep a model current as Parquet files land (:mod:`.watcher`), with an
append-only ledger and checkpoints (:mod:`.checkpoint`) over a landing directory
(:mod:`.landing`)."""
