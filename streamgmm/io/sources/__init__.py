"""Chunk sources: the ChunkSource protocol and its sources (arrays, iterables, Arrow data,
Parquet lakes), read ahead of the consumer."""
