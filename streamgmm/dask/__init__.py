"""The optional Dask front: partitions as a chunk source, and EM whose E-steps run on the
workers. Imported only when a Dask input or client is used."""
