"""Adapters on disk: an .npz with the integer A_k, B_k, the geometry, the tap scales and a checksum.

Writes are atomic (temporary file in the same directory, fsync, rename), so a crash mid-save
leaves either the old file or the new one, never half a file. Loading checks the format, the
checksum and the geometry, and names the problem when something does not match.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ..fixed.model import Adapters, Geometry
from ..fixed.quantize import TapQuantizer

__all__ = ["save_adapters_file", "load_adapters_file", "AdapterFileError", "FORMAT"]

FORMAT = "skip2lora-adapters-1"


class AdapterFileError(ValueError):
    """An adapters file is corrupt, truncated, of another format or of another geometry."""


def _digest(arrays: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_adapters_file(path, adapters: Adapters, geometry: Geometry, quantizer: TapQuantizer | None) -> Path:
    path = Path(path)
    adapters.validate(geometry)
    arrays = {f"a{k}": np.asarray(a, np.int16) for k, a in enumerate(adapters.a)}
    arrays.update({f"b{k}": np.asarray(b, np.int16) for k, b in enumerate(adapters.b)})
    meta = {"format": FORMAT, "geometry": geometry.to_dict(), "sha256": _digest(arrays),
            "quantizer": quantizer.to_dict() if quantizer is not None else None}
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_adapters_file(path, geometry: Geometry):
    """(Adapters, TapQuantizer or None) from a file written by `save_adapters_file`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            contents = {name: f[name] for name in f.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise AdapterFileError(f"{path}: not a readable adapters file ({exc})") from None
    if "meta" not in contents:
        raise AdapterFileError(f"{path}: no metadata: not a skip2lora adapters file")
    try:
        meta = json.loads(contents.pop("meta").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterFileError(f"{path}: corrupt metadata ({exc})") from None
    if meta.get("format") != FORMAT:
        raise AdapterFileError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("sha256") != _digest(contents):
        raise AdapterFileError(f"{path}: checksum mismatch: the file is corrupt")
    stored = meta.get("geometry")
    if stored != geometry.to_dict():
        raise AdapterFileError(f"{path}: adapters for geometry {stored}, but this accelerator has "
                               f"{geometry.to_dict()}")
    k = geometry.taps
    try:
        adapters = Adapters([contents[f"a{i}"] for i in range(k)], [contents[f"b{i}"] for i in range(k)])
        adapters.validate(geometry)
    except (KeyError, ValueError, TypeError) as exc:
        raise AdapterFileError(f"{path}: {exc}") from None
    q = meta.get("quantizer")
    return adapters, (TapQuantizer(q["exponents"], q["signed"]) if q else None)
