"""Input and output: chunk sources (arrays, streams, Parquet lakes, Arrow data), columns, lake
paths, the model file and its checks, atomic writes, and input validation."""
