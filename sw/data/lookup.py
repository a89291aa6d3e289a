"""Where the data files are: the data root (``data_dir``, else ``$SKIP2LORA_DATA``, else
the user cache), the folders searched, and ``locate``, which returns a verified copy of a
catalogue file and, when it is missing and downloads are allowed, obtains it.

A look-up never creates anything.  Only an obtained file creates folders (in the data
root if it is writable, else in the user cache), and only if it succeeds.  Files that are
not plain downloads (extracted from an archive, built from other files) are obtained by an
``obtain`` function the loader of that data set passes in, so this module does not
depend on any loader.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

from .catalogue import FILES, MIRROR_ENV, DataFile, canonical_url, mirror_url
from .errors import DataNotFoundError
from .fetch import FetchError, download, write_verified
from .integrity import verify_file

__all__ = ["DATA_ENV", "Obtain", "user_cache_dir", "resolve_data_dir", "search_dirs",
           "find_any", "locate", "locate_any"]

DATA_ENV = "SKIP2LORA_DATA"
"""Environment variable naming the data root (second in the look-up order)."""

Obtain = Callable[[DataFile, Path, Path], None]
"""``obtain(spec, dest, root)`` creates ``dest`` (the file ``spec`` in the folder chosen for
it) by other means than a plain download; ``root`` is the data root of the look-up, for
the files it is made from.  Network failures are raised as ``FetchError``."""


def user_cache_dir() -> Path:
    """The per-user cache for data: the default root and the fallback for downloads."""
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    else:
        base = os.environ.get("XDG_CACHE_HOME", "")
        if not os.path.isabs(base):  # the XDG spec says relative values are ignored
            base = str(Path.home() / ".cache")
    return Path(base) / "skip2lora" / "data"


def _env_root() -> Path | None:
    env = os.environ.get(DATA_ENV, "")
    return Path(env).expanduser().absolute() if env else None


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: ``data_dir`` if given, else ``$SKIP2LORA_DATA``, else the user cache."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser().absolute()
    return _env_root() or user_cache_dir().absolute()


def search_dirs(root: Path) -> list[Path]:
    """Where files are looked for: the root, then the cache that downloads fall back to."""
    cache = user_cache_dir().absolute()
    return [root] if cache == root else [root, cache]


def _first_copy(specs: Sequence[DataFile], root: Path) -> tuple[Path, DataFile] | None:
    for d in search_dirs(root):
        for spec in specs:
            p = d / spec.relpath
            if p.is_file():
                return p, spec
    return None


def find_any(relpaths: Sequence[str], data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first existing copy of one of ``relpaths`` in the searched folders (root first,
    then the user cache; files in list order), unverified; None if there is none."""
    hit = _first_copy([FILES[r] for r in relpaths], resolve_data_dir(data_dir))
    return hit[0] if hit else None


def _root_note(data_dir) -> str:
    """A note for error messages when the data root was configured but does not exist
    (the loaders pass the resolved root on as ``data_dir``, so $SKIP2LORA_DATA is
    recognised by its value)."""
    root = resolve_data_dir(data_dir)
    if root == user_cache_dir().absolute() or root.is_dir():
        return ""
    origin = f"${DATA_ENV}" if root == _env_root() else "--data-dir / data_dir"
    return f" Note: the data folder {root} (set by {origin}) does not exist."


def locate(relpath: str, data_dir: str | os.PathLike | None = None, *,
           download: bool = True, obtain: Obtain | None = None) -> Path:
    """Path of a verified copy of ``relpath``, obtaining it if it is missing."""
    return locate_any([relpath], data_dir, download=download, obtain=obtain)


def locate_any(relpaths: Sequence[str], data_dir: str | os.PathLike | None = None, *,
               download: bool = True, obtain: Obtain | None = None) -> Path:
    """Like :func:`locate` for interchangeable files (first found wins, in list order)."""
    specs = [FILES[r] for r in relpaths]
    root = resolve_data_dir(data_dir)
    hit = _first_copy(specs, root)
    if hit is not None:
        verify_file(*hit)
        return hit[0]
    searched = [str(d / s.relpath) for d in search_dirs(root) for s in specs]
    if not download:
        raise DataNotFoundError(
            f"{' or '.join(relpaths)} not found (searched: {', '.join(searched)}) and "
            f"download=False. Place the file there, or point {DATA_ENV} / --data-dir at a "
            f"folder that has it, or allow the download.{_root_note(data_dir)}")
    return _obtain(specs, root, searched, obtain, data_dir)


def _not_found(specs: list[DataFile], searched: list[str], tried: list[tuple[str, str]],
               data_dir) -> DataNotFoundError:
    names = " or ".join(s.relpath for s in specs)
    attempts = "; ".join(f"tried {url}: {why}" for url, why in tried) or "no source available"
    return DataNotFoundError(
        f"{names} is missing (searched: {', '.join(searched)}) and could not be "
        f"downloaded ({attempts}). Download it yourself and place it at one of the searched "
        f"paths, or set {DATA_ENV} / --data-dir to a folder that has it "
        f"(layout: <root>/{specs[0].relpath}).{_root_note(data_dir)}")


def _obtain(specs: list[DataFile], root: Path, searched: list[str], obtain: Obtain | None,
            data_dir) -> Path:
    """Fetch the first obtainable of ``specs``: from the mirror if one is set (and then
    only from it), else from the canonical source (a URL, or ``obtain``)."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    tried: list[tuple[str, str]] = []
    for spec in specs:
        if mirror:
            url = mirror_url(mirror, spec)
        elif spec.kind == "url":
            url = canonical_url(spec)
        elif obtain is not None and spec.kind != "mirror":
            url = None
        else:
            continue
        dest = _target(root, spec) / spec.relpath
        try:
            if url is None:
                obtain(spec, dest, root)
                verify_file(dest, spec)
            else:
                write_verified(dest, spec, lambda f, url=url: download(url, f, spec.relpath, dest))
        except FetchError as e:
            tried.append((e.url, e.reason))
            continue
        return dest
    raise _not_found(specs, searched, tried, data_dir)


def _writable(folder: Path) -> bool:
    """Whether ``folder`` exists and is writable, or could be created (its nearest
    existing ancestor is a writable folder); checked without creating anything."""
    p = folder
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p.is_dir() and os.access(p, os.W_OK | os.X_OK)


def _target(root: Path, spec: DataFile) -> Path:
    """The data root if the file's folder there is writable, else the user cache."""
    candidates = [root, user_cache_dir().absolute()]
    for base in candidates:
        if _writable((base / spec.relpath).parent):
            return base
    raise DataNotFoundError(
        f"{spec.relpath} is missing and neither {root} nor {candidates[1]} is writable; "
        f"place the file yourself or set {DATA_ENV} / --data-dir to a writable folder.")
