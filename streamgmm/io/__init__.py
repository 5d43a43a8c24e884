"""Input and output, one concept per folder: ``records`` (feature columns and array checks),
``lake`` (paths, discovery, table formats, object-store settings), ``sources`` (the chunk
sources), ``model`` (the model file and its checks), ``output`` (atomic writes); and
``background``, the threads that read ahead and write behind."""
