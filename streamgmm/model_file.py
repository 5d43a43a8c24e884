"""The model file: a versioned zip of one JSON document and numpy arrays, never pickle.

Layout (format ``streamgmm.model``, version 1)::

    model.json        {"format": "streamgmm.model", "version": 1, ...document...}
    arrays/NAME.npy   one array per name, written and read with allow_pickle=False

The document holds everything that is not an array (estimator parameters, scalars of the fit,
the online step counter); arrays hold parameters and running statistics. Arrays round-trip
bit for bit. Files are written under a temporary name in the target directory, flushed and
renamed, so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .atomic_write import atomic_path, create_new

FORMAT_NAME = "streamgmm.model"
FORMAT_VERSION = 1
DOCUMENT = "model.json"
ARRAY_DIR = "arrays/"


class ModelFileError(ValueError):
    """A file that is not a readable streamgmm model."""


def write_model(path: str | os.PathLike[str], document: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, create_new(tmp) as raw:
        write_model_to(raw, document, arrays)


def write_model_to(raw: BinaryIO, document: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """The model file's bytes, to an open binary file (for callers that own the commit, such as
    the watcher's checkpoint)."""
    body = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **document, "arrays": sorted(arrays)}
    with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(DOCUMENT, json.dumps(body, indent=1, sort_keys=True))
        for name, value in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(value), allow_pickle=False)
            archive.writestr(f"{ARRAY_DIR}{name}.npy", buffer.getvalue())


def read_model(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    try:
        with zipfile.ZipFile(path) as archive:
            try:
                document = json.loads(archive.read(DOCUMENT))
            except KeyError:
                raise ModelFileError(f"{path}: not a streamgmm model file (no {DOCUMENT} inside)") from None
            if not isinstance(document, dict):
                raise ModelFileError(f"{path}: not a streamgmm model file ({DOCUMENT} is not a JSON object)")
            if document.get("format") != FORMAT_NAME:
                raise ModelFileError(f"{path}: not a streamgmm model file (format is {document.get('format')!r})")
            version = document.get("version")
            if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
                raise ModelFileError(
                    f"{path}: model format version {version!r} is not supported "
                    f"(this streamgmm reads versions 1 to {FORMAT_VERSION}); upgrade streamgmm"
                )
            names = document.get("arrays", [])
            if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
                raise ModelFileError(f"{path}: corrupt model file ('arrays' in {DOCUMENT} is not a list of names)")
            arrays = {}
            for name in names:
                try:
                    data = archive.read(f"{ARRAY_DIR}{name}.npy")
                except KeyError:
                    raise ModelFileError(f"{path}: corrupt model file (array {name!r} is missing)") from None
                arrays[name] = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    except zipfile.BadZipFile as exc:
        raise ModelFileError(f"{path}: not a streamgmm model file or corrupt ({exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: corrupt model file (unreadable {DOCUMENT}: {exc})") from None
    except (ValueError, OSError, EOFError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(f"{path}: corrupt model file ({exc})") from None
    return document, arrays
