"""The model file: a versioned zip of one JSON document and numpy arrays, never pickle.

Layout (format ``streamgmm.model``, version 1)::

    model.json        {"format": "streamgmm.model", "version": 1, ...document...}
    arrays/NAME.npy   one array per name, written and read with allow_pickle=False

The document holds everything that is not an array (estimator parameters, scalars of the fit,
the online step counter, the scalars of the births' and merges' state under ``online.moves``);
arrays hold parameters, running statistics and, for a model with births and merges, their
state (``moves.*``: the reservoir of novel records and the novel records' share of the
statistics). Arrays and the document's numbers round-trip bit for bit. Files are written under a
temporary name in the target directory, flushed and renamed, so a crash never leaves a
half-written file under the final name.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from streamgmm.io.lake.paths import describe_non_file
from streamgmm.io.model.checks import ModelContentError, check_shapes, covariance_type_of, validate_model
from streamgmm.io.model.consistency import check_array_names, check_consistent
from streamgmm.io.output.atomic_write import atomic_path, create_new
from streamgmm.mixture.params import MixtureParams

FORMAT_NAME = "streamgmm.model"
FORMAT_VERSION = 1
DOCUMENT = "model.json"
ARRAY_DIR = "arrays/"


# Bounds checked before anything is inflated (a small zip can declare gigabytes): the JSON
# document, its nesting, and each array, whose size must be what its declared shape needs.
MAX_DOCUMENT_BYTES = 8 << 20
MAX_JSON_DEPTH = 64
MAX_ARRAY_BYTES = 1 << 30
# All arrays together (a model's largest arrays, of K d-by-d matrices, are at most five), and
# how many times their stored bytes they may inflate to (the writer stores them as they are).
MAX_MODEL_BYTES = 5 << 30
MAX_INFLATION = 16
JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


class ModelFileError(ValueError):
    """Exception raised for a file that is not a readable streamgmm model.

    A subclass of ``ValueError``.

    Examples
    --------
    >>> import os, tempfile
    >>> from streamgmm import ModelFileError, StreamingGaussianMixture
    >>> path = os.path.join(tempfile.mkdtemp(), "model.sgmm")
    >>> with open(path, "w") as file:
    ...     _ = file.write("not a model")
    >>> try:
    ...     StreamingGaussianMixture.load(path)
    ... except ModelFileError:
    ...     print("not a model file")
    not a model file
    """


def write_model(path: str | os.PathLike[str], document: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write a model file atomically; a model :func:`validate_model` refuses is not written."""
    _check_before_writing(path, document, arrays)
    with atomic_path(path) as tmp, create_new(tmp) as raw:
        write_model_to(raw, document, arrays)


def write_model_to(raw: BinaryIO, document: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """The model file's bytes, to an open binary file (for callers that own the commit, such as
    the watcher's checkpoint)."""
    _check_before_writing(getattr(raw, "name", "model"), document, arrays)
    body = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **document, "arrays": sorted(arrays)}
    with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(DOCUMENT, json.dumps(body, indent=1, sort_keys=True))
        for name, value in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(value), allow_pickle=False)
            archive.writestr(f"{ARRAY_DIR}{name}.npy", buffer.getvalue())


def _check_before_writing(path: Any, document: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    arrays = {name: np.asarray(value) for name, value in arrays.items()}
    try:
        # What the reader refuses to inflate is not written either (checked first: it is cheap).
        largest = max(arrays, key=lambda name: arrays[name].nbytes, default=None)
        if largest is not None and arrays[largest].nbytes > MAX_ARRAY_BYTES:
            raise ModelContentError(
                f"array {largest} holds {arrays[largest].nbytes:,} bytes, more than the {MAX_ARRAY_BYTES:,} "
                "a model array may"
            )
        total = sum(value.nbytes for value in arrays.values())
        if total > MAX_MODEL_BYTES:
            raise ModelContentError(f"its arrays hold {total:,} bytes, more than the {MAX_MODEL_BYTES:,} a model may")
        validate_model(document, arrays)
        check_consistent(document, arrays)
    except ModelContentError as exc:
        raise ModelFileError(f"{path}: not written, the model is not usable ({exc})") from None


def read_model(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The document and arrays of a model file, checked (:func:`validate_model`) before they
    are returned; any problem is a :class:`ModelFileError` naming the file."""
    path = Path(path)
    problem = describe_non_file(path)
    if problem == "no such file":
        raise FileNotFoundError(f"{path}: no such model file")
    if problem is not None:
        raise ModelFileError(f"{path}: {problem}; expected a model file")
    try:
        with zipfile.ZipFile(path) as archive:
            document = _read_document(archive, path)
            arrays = _read_arrays(archive, document, path)
        validate_model(document, arrays)
        check_consistent(document, arrays)
    except zipfile.BadZipFile as exc:
        raise ModelFileError(f"{path}: not a streamgmm model file or corrupt ({exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: corrupt model file (unreadable {DOCUMENT}: {exc})") from None
    except (ValueError, OSError, EOFError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(f"{path}: corrupt model file ({exc})") from None
    return document, arrays


def read_mixture(path: str | os.PathLike[str]) -> tuple[MixtureParams, list[str] | None]:
    """The mixture a model file holds, checked as :func:`read_model` checks it, and the column
    names its features are read by (None for a model fitted on unnamed data): what scoring
    needs, without the estimator."""
    document, arrays = read_model(path)
    names = document["fitted"].get("feature_names_in")
    return mixture_of(document, arrays), None if names is None else [str(name) for name in names]


def mixture_of(document: dict[str, Any], arrays: dict[str, np.ndarray]) -> MixtureParams:
    """The mixture of a model file's document and arrays (as :func:`read_model` returns them)."""
    return MixtureParams(
        means=arrays["means"],
        weights=arrays["weights"],
        covariances=arrays["covariances"],
        precisions_cholesky=arrays["precisions_cholesky"],
        covariance_type=covariance_type_of(document),
    )


def _read_document(archive: zipfile.ZipFile, path: Path) -> dict[str, Any]:
    try:
        info = archive.getinfo(DOCUMENT)
    except KeyError:
        raise ModelFileError(f"{path}: not a streamgmm model file (no {DOCUMENT} inside)") from None
    if info.file_size > MAX_DOCUMENT_BYTES:
        raise ModelFileError(
            f"{path}: corrupt model file ({DOCUMENT} is {info.file_size:,} bytes, "
            f"more than the {MAX_DOCUMENT_BYTES:,} a model's document may hold)"
        )
    document = parse_json(archive.read(DOCUMENT), f"{path}: {DOCUMENT}")
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
    try:
        check_array_names(names)  # before any member is opened: unknown names are never inflated
    except ModelContentError as exc:
        raise ModelFileError(f"{path}: corrupt model file ({exc})") from None
    return document


def parse_json(data: bytes, where: str) -> Any:
    """JSON of bounded nesting: deeper documents are refused before the parser (which recurses)
    sees them. Depth is counted on the text with its strings blanked out."""
    brackets = np.frombuffer(JSON_STRING.sub(b'""', data), dtype=np.uint8)
    depth = np.cumsum(
        np.isin(brackets, (ord("["), ord("{"))).astype(np.int64) - np.isin(brackets, (ord("]"), ord("}")))
    )
    if depth.size and depth.max() > MAX_JSON_DEPTH:
        raise ModelFileError(f"{where}: JSON nested {int(depth.max())} deep, more than {MAX_JSON_DEPTH}")
    return json.loads(data)


def _read_arrays(archive: zipfile.ZipFile, document: dict[str, Any], path: Path) -> dict[str, np.ndarray]:
    """Every array's .npy header first: declared dtypes and shapes checked against the means'
    and against the members' sizes; then the data, only as much as those shapes need."""
    headers = {name: _array_header(archive, name, path) for name in document.get("arrays", [])}
    _check_inflated_size(archive, headers, path)
    if "means" in headers:
        try:
            check_shapes({name: shape for name, (shape, _) in headers.items()}, covariance_type_of(document))
        except ModelContentError as exc:
            raise ModelFileError(f"{path}: corrupt model file ({exc})") from None
    arrays = {}
    for name in headers:
        with archive.open(f"{ARRAY_DIR}{name}.npy") as member:
            arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
    return arrays


def _check_inflated_size(
    archive: zipfile.ZipFile, headers: dict[str, tuple[tuple[int, ...], np.dtype]], path: Path
) -> None:
    """The arrays' declared sizes together: at most ``MAX_MODEL_BYTES``, and at most
    ``MAX_INFLATION`` times the bytes their members take in the file (the writer stores them
    uncompressed, so only a crafted file inflates more)."""
    inflated = sum(math.prod(shape) * dtype.itemsize for shape, dtype in headers.values())
    stored = sum(archive.getinfo(f"{ARRAY_DIR}{name}.npy").compress_size for name in headers)
    if inflated > MAX_MODEL_BYTES:
        raise ModelFileError(
            f"{path}: corrupt model file (its arrays declare {inflated:,} bytes in all, "
            f"more than the {MAX_MODEL_BYTES:,} a model may hold)"
        )
    if inflated > MAX_INFLATION * stored:
        raise ModelFileError(
            f"{path}: corrupt model file (its arrays declare {inflated:,} bytes in all, "
            f"from {stored:,} in the file: more than {MAX_INFLATION} times as much)"
        )


def _array_header(archive: zipfile.ZipFile, name: str, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """The declared shape and dtype of one array, read from its .npy header alone."""
    member = f"{ARRAY_DIR}{name}.npy"
    try:
        info = archive.getinfo(member)
    except KeyError:
        raise ModelFileError(f"{path}: corrupt model file (array {name!r} is missing)") from None
    with archive.open(info) as stream:
        version = np.lib.format.read_magic(stream)
        if version not in ((1, 0), (2, 0)):
            raise ModelFileError(f"{path}: corrupt model file (array {name}: .npy version {version} not supported)")
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = reader(stream)
        header_bytes = stream.tell()
    if dtype.hasobject:
        raise ModelFileError(f"{path}: corrupt model file (array {name} holds pickled objects, never loaded)")
    if dtype.kind != "f":
        raise ModelFileError(f"{path}: corrupt model file (array {name} holds {dtype}, not floats)")
    needed = math.prod(shape) * dtype.itemsize
    if needed > MAX_ARRAY_BYTES:
        raise ModelFileError(
            f"{path}: corrupt model file (array {name} declares shape {shape}, "
            f"{needed:,} bytes, more than the {MAX_ARRAY_BYTES:,} a model array may hold)"
        )
    if info.file_size != header_bytes + needed:
        raise ModelFileError(
            f"{path}: corrupt model file (array {name} is {info.file_size:,} bytes, "
            f"its declared shape {shape} needs {header_bytes + needed:,})"
        )
    return shape, dtype
