"""sha256 checks: a data file is verified against the catalogue before anything parses
it, so a truncated or tampered file never loads silently."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .catalogue import DataFile
from .errors import DataCorruptError

__all__ = ["sha256_file", "verify_file"]

_CHUNK = 1 << 20
_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file, memoized per (path, size, mtime_ns) for the life of the process."""
    p = os.path.abspath(os.fspath(path))
    st = os.stat(p)
    key = (p, st.st_size, st.st_mtime_ns)
    digest = _HASHES.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        digest = h.hexdigest()
        _HASHES[key] = digest
    return digest


def _sidecar_hash(path: Path) -> str | None:
    side = path.with_name(path.name + ".sha256")
    try:
        words = side.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return None
    return words[0].lower() if words else None


def verify_file(path: Path, spec: DataFile) -> None:
    """Raise DataCorruptError unless ``path`` has the registered (or sidecar) sha256."""
    actual = sha256_file(path)
    if actual == spec.sha256:
        return
    if spec.sidecar and _sidecar_hash(path) == actual:
        return
    extra = f" or the hash in {path.name}.sha256" if spec.sidecar else ""
    raise DataCorruptError(
        f"{path}: sha256 mismatch: expected {spec.sha256}{extra}, got {actual}. "
        f"The file is truncated, corrupt or a different version. Delete it and load again "
        f"to re-download it (source: {spec.source_description()}), or replace it with a good copy.")
