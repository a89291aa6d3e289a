"""The UCI HAR files from the UCI archive: it is a zip holding 'UCI HAR Dataset.zip',
whose members are the files the HAR loader reads.  The archive is downloaded to a temp
file beside the data, every missing ``har-zip`` file of the catalogue is extracted,
verified and stored, and the temp files are removed."""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import BinaryIO

from . import catalogue
from .catalogue import FILES, DataFile
from .errors import DataCorruptError
from .fetch import download, new_folders, write_verified

__all__ = ["obtain_from_uci_archive", "fetch_har_archive"]

_CHUNK = 1 << 20


def obtain_from_uci_archive(spec: DataFile, dest: Path, root: Path) -> None:
    """The look-up's ``obtain`` for ``har-zip`` files: fetch the canonical UCI archive and
    extract into the data root that ``dest`` lies in."""
    fetch_har_archive(catalogue.HAR_ZIP_URL, dest.parents[1])


def _find_member(z: zipfile.ZipFile, wanted: str) -> str | None:
    """``wanted`` itself, else the one member ending in its last two path parts
    (macOS resource forks ignored), so a re-packed archive still works."""
    names = [n for n in z.namelist() if not n.startswith("__MACOSX/")]
    if wanted in names:
        return wanted
    tail = "/" + "/".join(wanted.split("/")[-2:])
    hits = [n for n in names if ("/" + n).endswith(tail)]
    return hits[0] if len(hits) == 1 else None


def _copy_member(z: zipfile.ZipFile, member: str, out: BinaryIO) -> None:
    with z.open(member) as src:
        shutil.copyfileobj(src, out, _CHUNK)


def fetch_har_archive(url: str, base: Path) -> None:
    """Download the UCI zip (which holds 'UCI HAR Dataset.zip') into a temp file and
    extract, verify and store every ``har-zip`` file that ``base`` does not have yet."""
    folder = base / "uci-har"
    with new_folders(folder):
        temps: list[str] = []
        try:
            fd, outer_path = tempfile.mkstemp(dir=folder, prefix=".uci-har.", suffix=".zip.part")
            temps.append(outer_path)
            with os.fdopen(fd, "wb") as f:
                download(url, f, "the UCI HAR archive", folder)
            _extract(url, outer_path, folder, base, temps)
        finally:
            for t in temps:
                try:
                    os.unlink(t)
                except OSError:
                    pass


def _extract(url: str, outer_path: str, folder: Path, base: Path, temps: list[str]) -> None:
    try:
        with zipfile.ZipFile(outer_path) as outer:
            specs = [s for s in FILES.values() if s.kind == "har-zip"]
            if _find_member(outer, specs[0].member) is not None:
                archive_path = outer_path  # already the dataset zip (no nesting)
            else:
                inner = [n for n in outer.namelist()
                         if n.endswith("UCI HAR Dataset.zip") and not n.startswith("__MACOSX/")]
                if len(inner) != 1:
                    raise DataCorruptError(
                        f"{url}: the archive has no 'UCI HAR Dataset.zip' member "
                        f"(members: {outer.namelist()[:10]})")
                fd, archive_path = tempfile.mkstemp(dir=folder, prefix=".uci-har-inner.",
                                                    suffix=".zip.part")
                temps.append(archive_path)
                with os.fdopen(fd, "wb") as f, outer.open(inner[0]) as src:
                    shutil.copyfileobj(src, f, _CHUNK)
        with zipfile.ZipFile(archive_path) as z:
            for spec in specs:
                dest = base / spec.relpath
                if dest.is_file():
                    continue
                member = _find_member(z, spec.member)
                if member is None:
                    raise DataCorruptError(f"{url}: the archive lacks {spec.member!r}")
                write_verified(dest, spec, lambda f, m=member: _copy_member(z, m, f))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        raise DataCorruptError(f"{url}: the downloaded archive is not a valid zip ({e})") from e
