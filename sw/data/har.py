"""UCI HAR (smartphone activity recognition) split by subject group, as in the paper:
group 1 subjects are the source domain, group 2 subjects the target domain.

Only the UCI *training* split has features here, so the target domain is cut from the
group-2 subjects' own recordings.  Windows are 2.56 s with 50 % overlap and are in time
order within a subject, so a random split would put near-duplicate neighbours into both
fine-tune and test; the split is by contiguous time blocks instead, with the one window
that straddles the boundary dropped.
"""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path

import numpy as np

from .dataset import Dataset, Split
from .errors import DataCorruptError
from .har_archive import obtain_from_uci_archive
from .lookup import locate, locate_any

__all__ = ["TITLE", "GROUP2_SUBJECTS", "FINETUNE_FRACTION", "PRETRAIN_TEST_FRACTION", "N_ROWS",
           "N_FEATURES", "required_files", "read_har_train", "group1_split", "group2_split",
           "load_har"]

TITLE = "UCI HAR"
GROUP2_SUBJECTS = (9, 14, 16, 19, 25)
"""The paper's group 2 (target domain); subject 9 is in the UCI test split, absent here."""
FINETUNE_FRACTION = 0.6
"""Share of each group-2 protocol segment (from its start) used for fine-tuning."""
PRETRAIN_TEST_FRACTION = 0.1
"""Share of each group-1 protocol segment (from its end) held out as pretrain_test."""
N_ROWS, N_FEATURES = 7352, 561
_X_FILES = ("uci-har/X_train.txt.gz", "uci-har/X_train.txt")
_Y_FILE, _SUBJECT_FILE = "uci-har/y_train.txt", "uci-har/subject_train.txt"


def required_files(name: str) -> list[tuple[str, ...]]:
    """The files ``load_har`` reads (each a tuple of interchangeable ones)."""
    return [_X_FILES, (_Y_FILE,), (_SUBJECT_FILE,)]


def _ceil_frac(n: int, frac: float) -> int:
    """ceil(frac * n) in integer arithmetic (0.6 * 5 must be 3, not 3.0000000000000004)."""
    tenths = round(frac * 10)
    return -(-tenths * n // 10)


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataCorruptError(f"{path}: cannot be read/decompressed ({e}); delete it and re-download") from e


def _read_ints(path: Path, lo: int, hi: int) -> np.ndarray:
    try:
        v = np.loadtxt(path, dtype=np.int64, ndmin=1)
    except ValueError as e:
        raise DataCorruptError(f"{path}: not a column of integers ({e})") from e
    if v.shape != (N_ROWS,) or v.min() < lo or v.max() > hi:
        raise DataCorruptError(f"{path}: expected {N_ROWS} integers in {lo}..{hi}, got shape "
                               f"{v.shape}, range {v.min()}..{v.max()}")
    return v


def read_har_train(data_dir=None, *, download: bool = True
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X float64 (7352, 561), y int64 0..5, subject int64) of the UCI HAR train split."""
    fetch = dict(download=download, obtain=obtain_from_uci_archive)
    x_path = locate_any(_X_FILES, data_dir, **fetch)
    y_path = locate(_Y_FILE, data_dir, **fetch)
    s_path = locate(_SUBJECT_FILE, data_dir, **fetch)
    y = _read_ints(y_path, 1, 6) - 1
    subject = _read_ints(s_path, 1, 30)
    try:
        x = np.loadtxt(io.BytesIO(_read_bytes(x_path)), dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise DataCorruptError(f"{x_path}: malformed feature table ({e})") from e
    if x.shape != (N_ROWS, N_FEATURES):
        raise DataCorruptError(f"{x_path}: shape {x.shape}, expected {(N_ROWS, N_FEATURES)}")
    if not np.isfinite(x).all() or x.min() < -1.0 or x.max() > 1.0:
        raise DataCorruptError(f"{x_path}: features outside [-1, 1]")
    return x, y, subject


def _runs(labels: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of every maximal run of identical labels."""
    cut = np.flatnonzero(np.diff(labels)) + 1
    bounds = np.concatenate([[0], cut, [len(labels)]])
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _segments(y: np.ndarray, subject: np.ndarray, subjects) -> list[np.ndarray]:
    """Row indices of every protocol segment (a maximal run of one label of one subject,
    in row = time order) of the given subjects."""
    out = []
    for s in subjects:
        rows = np.flatnonzero(subject == s)
        out += [rows[a:b] for a, b in _runs(y[rows])]
    return out


def _time_split(segments: list[np.ndarray], head) -> tuple[np.ndarray, np.ndarray]:
    """Split each segment into its first ``head(L)`` windows and the rest minus the first
    of the rest, which shares half its raw samples with the last head window."""
    first, second = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for seg in segments:
        k = head(len(seg))
        first.append(seg[:k])
        second.append(seg[k + 1:])
    return np.concatenate(first), np.concatenate(second)


def group1_split(y: np.ndarray, subject: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (pretrain, pretrain_test) of group 1: the last ceil(10 %) of every
    protocol segment is held out, minus its first window (overlap with pretrain).

    Per segment, not per subject: the protocol ends with the stair walks, so the last
    10 % of each subject's rows would hold only WALKING_UPSTAIRS/DOWNSTAIRS."""
    subjects = [s for s in np.unique(subject) if s not in GROUP2_SUBJECTS]
    return _time_split(_segments(y, subject, subjects),
                       lambda n: n - _ceil_frac(n, PRETRAIN_TEST_FRACTION))


def group2_split(y: np.ndarray, subject: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (finetune, test) of group 2.  Every protocol segment (L windows) gives
    its first ceil(0.6 L) windows to fine-tune and the rest to test, minus the first test
    window, which shares half its raw samples with the last fine-tune window."""
    return _time_split(_segments(y, subject, GROUP2_SUBJECTS),
                       lambda n: _ceil_frac(n, FINETUNE_FRACTION))


def load_har(root: Path, *, download: bool = True) -> Dataset:
    """UCI HAR, source = group 1 subjects, target = group 2 subjects (see module doc)."""
    x, y, subject = read_har_train(root, download=download)
    x = x.astype(np.float32)
    pre, pre_test = group1_split(y, subject)
    ft, te = group2_split(y, subject)
    present = [s for s in GROUP2_SUBJECTS if (subject == s).any()]
    missing = [s for s in GROUP2_SUBJECTS if s not in present]
    n_g1 = len(np.unique(subject[~np.isin(subject, GROUP2_SUBJECTS)]))
    n_g2 = int(np.isin(subject, GROUP2_SUBJECTS).sum())
    if missing:
        who = f"subject {missing[0]} is" if len(missing) == 1 else f"subjects {missing} are"
        absent = (f"{who} absent (in the UCI test split, whose features are not available), "
                  f"so group 2 here is {present}")
    else:
        absent = "all present"
    notes = (
        f"UCI HAR (Anguita et al., ESANN 2013), training split only: X_test.txt is not "
        f"available, so only the 21 training subjects are used. Labels 0..5 = WALKING, "
        f"WALKING_UPSTAIRS, WALKING_DOWNSTAIRS, SITTING, STANDING, LAYING; 561 features. "
        f"Source domain = group 1, the other {n_g1} subjects ({len(pre)} + {len(pre_test)} "
        f"windows): every protocol segment (a contiguous run of one label of one subject, in "
        f"row = time order) keeps its head for pretrain and holds out its last ceil(10 %) as "
        f"pretrain_test, minus the held-out block's first window (50 % overlap); per segment, "
        f"since the last 10 % of each subject would hold only the stair walks. Target "
        f"domain = group 2 = subjects {list(GROUP2_SUBJECTS)}; {absent} ({len(ft) + len(te)} "
        f"of {n_g2} windows used). Each group-2 protocol segment of L windows is split in "
        f"time, never randomly: the first ceil(0.6 L) windows -> finetune, the rest -> test, "
        f"dropping the first test window because windows overlap by 50 % and it shares raw "
        f"samples with the last fine-tune window. No validation split (too little target data).")
    return Dataset(
        name="har", classes=6, input_shape=(N_FEATURES,),
        pretrain=Split(x[pre], y[pre]), pretrain_test=Split(x[pre_test], y[pre_test]),
        finetune=Split(x[ft], y[ft]), validation=None, test=Split(x[te], y[te]),
        notes=notes)
