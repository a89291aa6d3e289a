"""Adapters on disk: an .npz with the integer A_k, B_k, the geometry, the tap scales and a checksum.

Writes are atomic (temporary file in the same directory, fsync, rename), so a crash mid-save
leaves either the old file or the new one, never half a file. A killed writer can leave its
temporary file behind: each is named after its writer (``.<name>.<host>-<pid>.<random>.tmp``), and
the next save of the same target removes those whose writer is gone. The file gets the mode a
new file would (0666 less the umask), not mkstemp's 0600. Loading checks the format, the checksum
and the geometry, and names the problem when something does not match.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import tempfile
import threading
import zipfile
from pathlib import Path

import numpy as np

from ..fixed.model import Adapters, Geometry
from ..fixed.quantize import TapQuantizer

__all__ = ["save_adapters_file", "load_adapters_file", "remove_stale_temporaries", "AdapterFileError", "FORMAT"]

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


_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere: the set-and-restore idiom
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(path) -> list:
    """Delete temporary files of earlier saves of ``path`` whose writer (same host) is no longer
    running; returns the paths removed. Files of live writers, other hosts or other names stay."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    pattern = re.compile(re.escape(f".{path.name}.{_HOST}-") + r"(\d+)\.[^.]+\.tmp")
    removed = []
    try:
        candidates = list(directory.iterdir())
    except OSError:
        return removed
    for p in candidates:
        m = pattern.fullmatch(p.name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def save_adapters_file(path, adapters: Adapters, geometry: Geometry, quantizer: TapQuantizer | None) -> Path:
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"cannot save adapters to {path}: the folder {directory} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"cannot save adapters to {path}: it is a folder; give a file name (.npz)")
    adapters.validate(geometry)
    arrays = {f"a{k}": np.asarray(a, np.int16) for k, a in enumerate(adapters.a)}
    arrays.update({f"b{k}": np.asarray(b, np.int16) for k, b in enumerate(adapters.b)})
    meta = {"format": FORMAT, "geometry": geometry.to_dict(), "sha256": _digest(arrays),
            "quantizer": quantizer.to_dict() if quantizer is not None else None}
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.{_HOST}-{os.getpid()}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # POSIX: mkstemp creates 0600; a saved file is an ordinary file
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def load_adapters_file(path, geometry: Geometry):
    """(Adapters, TapQuantizer or None) from a file written by `save_adapters_file`."""
    path = Path(path)
    if path.is_dir():
        raise AdapterFileError(f"{path}: is a folder, not an adapters file")
    with open(path, "rb") as f:  # FileNotFoundError / PermissionError as they are
        magic = f.read(6)
    if magic.startswith(_NPY_MAGIC):
        raise AdapterFileError(f"{path}: a single NumPy array (.npy), not an adapters file (an .npz written "
                               "by save_adapters)")
    if not magic.startswith(_ZIP_MAGIC):
        raise AdapterFileError(f"{path}: not an adapters file (an .npz written by save_adapters): "
                               f"{'it is empty' if not magic else 'it is not a zip archive'}")
    try:
        with np.load(path, allow_pickle=False) as f:
            contents = {name: f[name] for name in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        reason = "an entry holds Python objects" if "pickle" in str(exc) else str(exc)
        raise AdapterFileError(f"{path}: not a readable adapters file ({reason})") from None
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
        raise AdapterFileError(f"{path}: adapters for geometry {stored}, but this session's model is "
                               f"{geometry.to_dict()}")
    k = geometry.taps
    try:
        adapters = Adapters([contents[f"a{i}"] for i in range(k)], [contents[f"b{i}"] for i in range(k)])
        adapters.validate(geometry)
    except (KeyError, ValueError, TypeError) as exc:
        raise AdapterFileError(f"{path}: {exc}") from None
    q = meta.get("quantizer")
    return adapters, (TapQuantizer(q["exponents"], q["signed"]) if q else None)
