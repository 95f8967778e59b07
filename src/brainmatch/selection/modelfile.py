"""The model file: NPZ arrays + JSON metadata, loaded without executing any code.

``np.load(..., allow_pickle=False)`` refuses object arrays, so a model file can hold only
numbers and text.  The metadata (JSON stored as bytes) records the brainmatch version,
the file format version, feature names, arms, preprocessing, feature provenance (atlas and
extraction options), the training data hash, the validation summary, and a SHA-256 over
every array so that an edited file is detected.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from brainmatch import __version__
from brainmatch._io import write_bytes
from brainmatch.errors import BrainmatchInputError

FORMAT = "brainmatch-selection-model"
FORMAT_VERSION = 1
_META = "__meta__"


def _content_hash(arrays: dict[str, NDArray[Any]], meta: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    body = {k: v for k, v in meta.items() if k != "content_sha256"}
    digest.update(json.dumps(body, sort_keys=True, allow_nan=False).encode("utf-8"))
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        digest.update(a.tobytes())
    return "sha256:" + digest.hexdigest()


def save_model(path: str | Path, arrays: dict[str, NDArray[Any]], meta: dict[str, Any]) -> Path:
    """Write arrays and metadata atomically to ``path`` (an ``.npz`` file)."""
    clean = {k: np.asarray(v) for k, v in arrays.items()}
    for k, v in clean.items():
        if v.dtype == object:
            raise TypeError(f"model array {k!r} has dtype object")
    full = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "brainmatch_version": __version__,
        **meta,
    }
    full["content_sha256"] = _content_hash(clean, full)
    buffer = io.BytesIO()
    blob = np.frombuffer(json.dumps(full, allow_nan=False).encode("utf-8"), dtype=np.uint8)
    members: dict[str, Any] = {**clean, _META: blob}
    np.savez_compressed(buffer, **members)
    write_bytes(path, buffer.getvalue())
    return Path(path)


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def load_model(path: str | Path) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
    """Read a model file, refusing anything that is not an intact brainmatch model.

    Raises
    ------
    BrainmatchInputError
        Not a model file, written by a newer brainmatch or format version, or modified
        after it was written (content hash mismatch).
    """
    path = Path(path)
    if not path.is_file():
        raise BrainmatchInputError("model file not found", path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise BrainmatchInputError(
            f"not a brainmatch model file (cannot read it as NPZ without code execution: {exc})",
            path,
        ) from None
    if _META not in arrays or not all(isinstance(a, np.ndarray) for a in arrays.values()):
        raise BrainmatchInputError(
            "not a brainmatch model file (no metadata, or members that are not plain arrays)", path
        )
    try:
        meta = json.loads(arrays.pop(_META).tobytes().decode("utf-8"))
    except ValueError:
        raise BrainmatchInputError("the model metadata is corrupt", path) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BrainmatchInputError("not a brainmatch treatment-selection model", path)
    version = str(meta.get("brainmatch_version", "0"))
    if int(meta.get("format_version", 0)) > FORMAT_VERSION or (
        _version_tuple(version) > _version_tuple(__version__)
    ):
        raise BrainmatchInputError(
            f"the model was written by a newer brainmatch ({version}, model format "
            f"{meta.get('format_version')}) than this one ({__version__}, format "
            f"{FORMAT_VERSION}); upgrade brainmatch to use it",
            path,
        )
    if meta.get("content_sha256") != _content_hash(arrays, meta):
        raise BrainmatchInputError(
            "the model file was modified after it was written (its content does not match the "
            "recorded SHA-256); retrain or restore the original file",
            path,
        )
    return arrays, meta
