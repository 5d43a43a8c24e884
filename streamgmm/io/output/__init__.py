"""Output: atomic writes to a filesystem and to an object store."""
