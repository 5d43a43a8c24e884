"""Lakes: paths and listings on a filesystem, Parquet discovery and footers, table formats
(Delta, Iceberg), object-store options and credentials."""
