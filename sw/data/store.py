"""Where the data files live, how they are checked, and how a missing one is fetched.

Every file the loaders read is listed in ``FILES`` with its path relative to the data
root (the layout of the shared data folder), its sha256 and where it comes from.  A file
is sha256-verified before anything parses it, so a truncated or tampered file never
loads silently.  A missing file is downloaded (into the data root, or into the user
cache directory when the root is not writable), written to a temporary file, verified
and only then moved into place with ``os.replace``.

Only the standard library is used: the package must install with numpy alone.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Sequence

__all__ = [
    "DATA_ENV", "MIRROR_ENV", "READ_TIMEOUT",
    "FMNIST_BASE_URL", "HAR_ZIP_URL", "FAN_RAW_BASE_URL",
    "DataError", "DataNotFoundError", "DataCorruptError",
    "DataFile", "FILES",
    "user_cache_dir", "resolve_data_dir", "search_dirs",
    "sha256_file", "verify_file", "locate", "locate_any", "write_verified",
]

DATA_ENV = "SKIP2LORA_DATA"
"""Environment variable naming the data root (second in the look-up order)."""
MIRROR_ENV = "SKIP2LORA_DATA_MIRROR"
"""Environment variable with a base URL laid out like the data root; overrides every source."""
READ_TIMEOUT = 30.0
"""Seconds a single connect or read may block before a download is given up."""

# Canonical public sources.  They are read at call time (not captured in FILES), so tests
# and users can point them elsewhere.
FMNIST_BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"
HAR_ZIP_URL = ("https://archive.ics.uci.edu/static/public/240/"
               "human+activity+recognition+using+smartphones.zip")
FAN_RAW_BASE_URL = ("https://raw.githubusercontent.com/matutani/cooling-fan/"
                    "fcd19b750f7c50bf145907063b0ff1047e73c010/DATA")


class DataError(Exception):
    """Base class of every data-layer error."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data file is missing and could not be obtained."""


class DataCorruptError(DataError, ValueError):
    """A data file exists but its bytes or its structure are wrong."""


@dataclass(frozen=True)
class DataFile:
    """One file of the data root.

    ``kind`` says how it is obtained when missing: ``"url"`` (plain download of ``name``
    below the base URL in ``base``), ``"har-zip"`` (extracted from the UCI archive,
    member ``member``), ``"build"`` (built from other files by ``skip2lora.data.fan``) or
    ``"mirror"`` (only available from a mirror).  ``sidecar`` files are also accepted
    when their hash matches ``<file>.sha256`` written by the builder.
    """

    relpath: str
    sha256: str
    kind: str
    base: str = ""
    member: str = ""
    sidecar: bool = False

    @property
    def name(self) -> str:
        return self.relpath.rsplit("/", 1)[-1]

    def source_description(self) -> str:
        """Human-readable canonical source, for error messages."""
        if self.kind == "url":
            return _canonical_url(self)
        if self.kind == "har-zip":
            return f"{HAR_ZIP_URL} (member {self.member!r} of the inner 'UCI HAR Dataset.zip')"
        if self.kind == "build":
            return f"built from the raw zips below {FAN_RAW_BASE_URL}"
        return f"a mirror set with {MIRROR_ENV}"


def _fan_raw(name: str, sha: str) -> DataFile:
    return DataFile(f"cooling-fan/raw/{name}.zip", sha, "url", base="FAN_RAW_BASE_URL")


_ENTRIES = [
    DataFile("fashion-mnist/train-images-idx3-ubyte.gz",
             "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", "url", "FMNIST_BASE_URL"),
    DataFile("fashion-mnist/train-labels-idx1-ubyte.gz",
             "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", "url", "FMNIST_BASE_URL"),
    DataFile("fashion-mnist/t10k-images-idx3-ubyte.gz",
             "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", "url", "FMNIST_BASE_URL"),
    DataFile("fashion-mnist/t10k-labels-idx1-ubyte.gz",
             "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", "url", "FMNIST_BASE_URL"),
    # The gzip is how the shared folder stores X_train.txt; the UCI archive yields the
    # uncompressed file, so either is accepted.
    DataFile("uci-har/X_train.txt.gz",
             "54e67d0d2a924605bdbbb99c104196dde48bc3a2a4c9c2fdb8b559d305f13cd3", "mirror"),
    DataFile("uci-har/X_train.txt",
             "9c1246099c8d5463779eec5a3845cc3898df9d8c715441ab2a1232d4421fc42f", "har-zip",
             member="UCI HAR Dataset/train/X_train.txt"),
    DataFile("uci-har/y_train.txt",
             "415b3357e2e2d5e70a45c781947c6bdd80e0410a579d862eedcd6bbce3c694ef", "har-zip",
             member="UCI HAR Dataset/train/y_train.txt"),
    DataFile("uci-har/subject_train.txt",
             "66e1e2fbe9b396fa5155f531dc3348c803f503be663e2318772d49947db9153a", "har-zip",
             member="UCI HAR Dataset/train/subject_train.txt"),
    DataFile("cooling-fan/fan_damage1_spectra256.npz",
             "0adfa04c380daa7e0ed69c0c5248fcec3bbde94c0ba697a0141624b2a1bd57ba", "build", sidecar=True),
    DataFile("cooling-fan/fan_damage2_spectra256.npz",
             "15d138012853d6e61942ce44041a0d8a8e9f1528c262b035ed6ddada70cc26b0", "build", sidecar=True),
    _fan_raw("12cm_hmlo_normal_silentA_1", "5a2b0281bf97e0849001c4cea456b2bb670a463ce1acacc22288d55cdf817f0f"),
    _fan_raw("12cm_hmlo_normal_silentA_2", "c70961379f2020b76ad48d575703278f238b6f6b4a11cf6cc28f5e447fe002ad"),
    _fan_raw("12cm_hmlo_normal_silentB_1", "a7ef8a52e9b80ff32550d5491b1594166a484fc5dfc7a614f5a757964ce62217"),
    _fan_raw("12cm_hmlo_normal_silentB_2", "801f826ae209a15fa4a4f2bceb851455a101604c7626f4dc853e0c7717ef6fbb"),
    _fan_raw("12cm_hmlo_normal_noisy_1", "8266c411194f6aa71b814d1c1c43c141425c0a825c7600e0e943864eaa17a285"),
    _fan_raw("12cm_hmlo_normal_noisy_2", "3ea395d09681c054de21bd6c94161bc92be268df5e1f1630de2dce76d788b7e8"),
    _fan_raw("12cm_hmlo_damage1_silentA_1", "eb41e3d247dccf1ba26eea1717f35ce142d0f704817eb30233bb0d58d701715d"),
    _fan_raw("12cm_hmlo_damage1_silentA_2", "3c00a833387b05ccf2558d37fa564e747dcfa0bf0719a9ca3747e487ec2b0eb1"),
    _fan_raw("12cm_hmlo_damage1_silentB_1", "9c6d20cb1362d176b897b4067a3914b10a364e8e0dffbbd9207384f7957cf9b9"),
    _fan_raw("12cm_hmlo_damage1_silentB_2", "2784a5e76710e906bc74b02cf0cde28de2047ff63d93342fe61c540cc28501eb"),
    _fan_raw("12cm_hmlo_damage1_noisy_1", "7795fd2741062d5c51ffb4b01927ca7ea4d5352eb6b6f1efc65c1c2f8007be0d"),
    _fan_raw("12cm_hmlo_damage1_noisy_2", "b268d5b8cc2b742f60a01ee765267b0084d50a29ccc358adf30d379cb2acfd55"),
    _fan_raw("12cm_hmlo_damage2_silentA_1", "84f31ef22fa241fae8cd96dcb251ac9b5be4297739288bcdf1feca1b8f8fb03d"),
    _fan_raw("12cm_hmlo_damage2_silentA_2", "01ef93c3e1e7473b218011c2ecfd89b16908732b7dae281aa8581b76c00bff2c"),
    _fan_raw("12cm_hmlo_damage2_silentB_1", "756bbcb86107d747ef530e4fd1cf92f084f832779e8d90d4918938180f94eece"),
    _fan_raw("12cm_hmlo_damage2_silentB_2", "49d5b6bba0ed63c9f2bb06012ef505568db809dca47b23cffddf1661526b0a4b"),
    _fan_raw("12cm_hmlo_damage2_noisy_1", "9cce3d67746930fbc31cb332ff70ced1a43f23aefbc36da924c4e12650ba4983"),
    _fan_raw("12cm_hmlo_damage2_noisy_2", "9fee65602474a321328ba4103135bf42de47b5f14eac150a7ab4b451679d37c1"),
]

FILES: dict[str, DataFile] = {f.relpath: f for f in _ENTRIES}
"""Every known file, keyed by its path relative to the data root."""


# --------------------------------------------------------------------------- directories

def user_cache_dir() -> Path:
    """The per-user cache for data: the default root and the fallback for downloads."""
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    else:
        base = os.environ.get("XDG_CACHE_HOME", "")
        if not os.path.isabs(base):  # the XDG spec says relative values are ignored
            base = str(Path.home() / ".cache")
    return Path(base) / "skip2lora" / "data"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: ``data_dir`` if given, else ``$SKIP2LORA_DATA``, else the user cache."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser().absolute()
    env = os.environ.get(DATA_ENV, "")
    if env:
        return Path(env).expanduser().absolute()
    return user_cache_dir().absolute()


def search_dirs(root: Path) -> list[Path]:
    """Where files are looked for: the root, then the cache that downloads fall back to."""
    cache = user_cache_dir().absolute()
    return [root] if cache == root else [root, cache]


# --------------------------------------------------------------------------- verification

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


# --------------------------------------------------------------------------- look-up

def locate(relpath: str, data_dir: str | os.PathLike | None = None, *,
           download: bool = True) -> Path:
    """Path of a verified copy of ``relpath``, downloading it if it is missing."""
    return locate_any([relpath], data_dir, download=download)


def locate_any(relpaths: Sequence[str], data_dir: str | os.PathLike | None = None, *,
               download: bool = True) -> Path:
    """Like :func:`locate` for interchangeable files (first found wins, in list order)."""
    specs = [FILES[r] for r in relpaths]
    root = resolve_data_dir(data_dir)
    dirs = search_dirs(root)
    for d in dirs:
        for spec in specs:
            p = d / spec.relpath
            if p.is_file():
                verify_file(p, spec)
                return p
    searched = [str(d / s.relpath) for d in dirs for s in specs]
    if not download:
        raise DataNotFoundError(
            f"{' or '.join(relpaths)} not found (searched: {', '.join(searched)}) and "
            f"download=False. Place the file there, or point {DATA_ENV} / --data-dir at a "
            f"folder that has it, or allow the download.")
    return _obtain(specs, root, searched)


def _canonical_url(spec: DataFile) -> str:
    base = globals()[spec.base] if spec.base else ""
    return f"{base.rstrip('/')}/{urllib.parse.quote(spec.name)}"


def _mirror_url(mirror: str, spec: DataFile) -> str:
    return f"{mirror.rstrip('/')}/{urllib.parse.quote(spec.relpath)}"


class _FetchError(Exception):
    """A network-level failure (the reason for a DataNotFoundError)."""


def _not_found(specs: list[DataFile], searched: list[str],
               tried: list[tuple[str, str]]) -> DataNotFoundError:
    names = " or ".join(s.relpath for s in specs)
    attempts = "; ".join(f"tried {url}: {why}" for url, why in tried) or "no source available"
    return DataNotFoundError(
        f"{names} is missing (searched: {', '.join(searched)}) and could not be "
        f"downloaded ({attempts}). Download it yourself and place it at one of the searched "
        f"paths, or set {DATA_ENV} / --data-dir to a folder that has it "
        f"(layout: <root>/{specs[0].relpath}).")


def _obtain(specs: list[DataFile], root: Path, searched: list[str]) -> Path:
    """Fetch the first obtainable of ``specs``: from the mirror if one is set (and then
    only from it), else from the canonical source (URL, UCI archive, or built from the
    raw fan zips)."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    tried: list[tuple[str, str]] = []
    for spec in specs:
        if mirror:
            url = _mirror_url(mirror, spec)
        elif spec.kind == "url":
            url = _canonical_url(spec)
        elif spec.kind == "har-zip":
            url = HAR_ZIP_URL
        elif spec.kind == "build":
            from . import fan  # built from the raw zips, which are located (and fetched) first
            dest = _target(root, spec) / spec.relpath
            fan.build_npz_file(spec.relpath, dest, root)
            verify_file(dest, spec)
            return dest
        else:
            continue
        dest = _target(root, spec) / spec.relpath
        try:
            if not mirror and spec.kind == "har-zip":
                _fetch_har_archive(url, dest.parents[1])
            else:
                write_verified(dest, spec, lambda f, url=url: _download(url, f, spec.relpath))
        except _FetchError as e:
            tried.append((url, str(e)))
            continue
        return dest
    raise _not_found(specs, searched, tried)


def _target(root: Path, spec: DataFile) -> Path:
    """The data root if the file's folder there is writable, else the user cache."""
    candidates = [root, user_cache_dir().absolute()]
    for base in candidates:
        parent = (base / spec.relpath).parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=parent, prefix=".probe-")
            os.close(fd)
            os.unlink(probe)
            return base
        except OSError:
            continue
    raise DataNotFoundError(
        f"{spec.relpath} is missing and neither {root} nor {candidates[1]} is writable; "
        f"place the file yourself or set {DATA_ENV} / --data-dir to a writable folder.")


def write_verified(dest: Path, spec: DataFile, produce) -> str:
    """Write ``dest`` atomically: ``produce(file)`` fills a temp file, which is checked
    against ``spec.sha256`` and then renamed into place.  Nothing is left on failure."""
    dest.parent.mkdir(parents=True, exist_ok=True)
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


# --------------------------------------------------------------------------- download

class _Progress:
    """A compact download progress bar on stderr: redrawn in place on a terminal, two
    lines (start and end) otherwise, so CI logs do not get one line per chunk."""

    def __init__(self, label: str, total: int | None):
        self.label, self.total, self.done = label, total, 0
        self.tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
        self.last = 0.0
        size = f" ({total / 1e6:.1f} MB)" if total else ""
        if not self.tty:
            print(f"skip2lora: downloading {label}{size} ...", file=sys.stderr, flush=True)

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.tty and now - self.last >= 0.1:
            self.last = now
            self._draw()

    def _draw(self) -> None:
        pct = f"{100 * self.done / self.total:5.1f}%" if self.total else "   ?  "
        tot = f"/{self.total / 1e6:.1f}" if self.total else ""
        sys.stderr.write(f"\r{self.label}: {pct} {self.done / 1e6:.1f}{tot} MB")
        sys.stderr.flush()

    def close(self, ok: bool) -> None:
        if self.tty:
            self._draw()
            sys.stderr.write(" done\n" if ok else " failed\n")
            sys.stderr.flush()
        else:
            state = "done" if ok else "failed"
            print(f"skip2lora: {self.label}: {state}, {self.done} bytes", file=sys.stderr, flush=True)


def _download(url: str, out: BinaryIO, label: str) -> None:
    """Stream ``url`` into ``out``; network failures become _FetchError."""
    progress = None
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "skip2lora-data/1"})
        with urllib.request.urlopen(req, timeout=READ_TIMEOUT) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            progress = _Progress(label, total)
            while chunk := resp.read(_CHUNK):
                out.write(chunk)
                progress.update(len(chunk))
            if total is not None and progress.done != total:
                raise _FetchError(f"connection closed after {progress.done} of {total} bytes")
        progress.close(True)
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError,
            OSError, ValueError) as e:
        if progress is not None:
            progress.close(False)
        if isinstance(e, (DataError, _FetchError)):
            raise
        if isinstance(e, urllib.error.HTTPError):
            raise _FetchError(f"HTTP {e.code} {e.reason}") from e
        reason = getattr(e, "reason", None) or e
        raise _FetchError(f"{type(e).__name__}: {reason}") from e
    except _FetchError:
        if progress is not None:
            progress.close(False)
        raise


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


def _fetch_har_archive(url: str, base: Path) -> None:
    """Download the UCI zip (which holds 'UCI HAR Dataset.zip') into a temp file and
    extract, verify and store every ``har-zip`` file that ``base`` does not have yet."""
    base.mkdir(parents=True, exist_ok=True)
    folder = base / "uci-har"
    folder.mkdir(parents=True, exist_ok=True)
    temps: list[str] = []
    try:
        fd, outer_path = tempfile.mkstemp(dir=folder, prefix=".uci-har.", suffix=".zip.part")
        temps.append(outer_path)
        with os.fdopen(fd, "wb") as f:
            _download(url, f, "uci-har archive")
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
    finally:
        for t in temps:
            try:
                os.unlink(t)
            except OSError:
                pass

