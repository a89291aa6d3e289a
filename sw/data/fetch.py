"""Getting a file into the data root safely: download over HTTP(S) with a progress bar,
and atomic, verified writes (a temp file beside the target, checked against its sha256,
then renamed into place with ``os.replace``), so nothing half-written is ever found by
the look-up.  Folders are created only for a write and removed again if it fails.

Only the standard library is used: the package must install with numpy alone.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from ..progress import Progress
from .catalogue import DataFile
from .errors import DataCorruptError, DataError
from .integrity import sha256_file

__all__ = ["READ_TIMEOUT", "FetchError", "download", "write_verified", "new_folders"]

READ_TIMEOUT = 30.0
"""Seconds a single connect or read may block before a download is given up."""

_CHUNK = 1 << 20


class FetchError(Exception):
    """A network-level failure of ``url`` (the look-up turns it into DataNotFoundError)."""

    def __init__(self, url: str, reason: str):
        super().__init__(reason)
        self.url = url
        self.reason = reason


@contextlib.contextmanager
def new_folders(folder: Path) -> Iterator[None]:
    """Create ``folder`` and its missing parents for the block; if the block fails, remove
    the folders it created again (only while empty), so a failed download leaves none."""
    missing = []
    p = Path(folder)
    while not os.path.lexists(p) and p != p.parent:
        missing.append(p)
        p = p.parent
    created = []
    try:
        for d in reversed(missing):
            try:
                d.mkdir()
                created.append(d)
            except FileExistsError:
                pass
        yield
    except BaseException:
        for d in reversed(created):
            try:
                d.rmdir()
            except OSError:
                break  # not empty (another writer) or gone: leave it and its parents
        raise


def write_verified(dest: Path, spec: DataFile, produce: Callable[[BinaryIO], None]) -> str:
    """Write ``dest`` atomically: ``produce(file)`` fills a temp file, which is checked
    against ``spec.sha256`` and then renamed into place.  Nothing is left on failure,
    not even a folder this call created."""
    with new_folders(dest.parent):
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                produce(f)
            actual = sha256_file(tmp)
            if actual != spec.sha256:
                raise DataCorruptError(
                    f"{spec.relpath}: the downloaded bytes have sha256 {actual}, expected "
                    f"{spec.sha256}; nothing was saved. The source or mirror serves a corrupt or "
                    f"different file; try again later or fetch the file by hand.")
            os.replace(tmp, dest)
            return actual
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


def _report(label: str, received: int, ok: bool, bar: Progress) -> None:
    if bar.enabled:
        bar.close("done" if ok else "failed")
    else:  # logs get a start and an end line, not one line per chunk
        state = "done" if ok else "failed after"
        print(f"skip2lora: {label}: {state} {received} bytes", file=sys.stderr, flush=True)


def download(url: str, out: BinaryIO, label: str, dest: str | os.PathLike) -> None:
    """Stream ``url`` into ``out``, saying on stderr what goes where (``dest``) with a
    progress bar on a terminal; network failures become FetchError."""
    bar = None
    received = 0
    ok = False
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "skip2lora-data/1"})
        with urllib.request.urlopen(req, timeout=READ_TIMEOUT) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            size = f" ({total / 1e6:.1f} MB)" if total else ""
            print(f"skip2lora: downloading {label}{size} from {url} to {dest}", file=sys.stderr, flush=True)
            bar = Progress(total, label, unit=" MB", scale=1e6)
            while chunk := resp.read(_CHUNK):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            if total is not None and received != total:
                raise FetchError(url, f"connection closed after {received} of {total} bytes")
        ok = True
    except (DataError, FetchError):
        raise
    except urllib.error.HTTPError as e:
        raise FetchError(url, f"HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError,
            OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise FetchError(url, f"{type(e).__name__}: {reason}") from e
    finally:
        if bar is not None:
            _report(label, received, ok, bar)
