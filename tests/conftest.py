"""Test configuration: the ``--runslow`` switch, and what a test needs from the machine.

* ``@pytest.mark.requires_data("fmnist-rot75", ...)``: data sets by name, or data files /
  folders (``"cooling-fan/raw/"``) by their path in the data root, found by the loaders' own
  look-up (``$SKIP2LORA_DATA``, then the user cache; nothing is downloaded).
* ``@pytest.mark.requires_pynq``: the ``.venv-pynq`` environment with the real pynq package
  (the virtual-KV260 tests and notebooks), created by ``scripts/setup.sh``.

A test whose requirement is missing is skipped with the reason and what to do, except when
the environment variable CI is set (to anything but 0/false/no): CI must never skip
silently, so there the test fails with the same reason.
"""

import os

from skip2lora.blas_env import apply_defaults  # BLAS threads and kernels, before NumPy loads

apply_defaults()

import functools  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from skip2lora.data import dataset_title, missing_files, resolve_data_dir  # noqa: E402
from skip2lora.data.catalogue import FILES  # noqa: E402
from skip2lora.data.lookup import DATA_ENV, find_any, search_dirs  # noqa: E402

# amaranth.sim compiles each domain's logic to nested Python expressions; the KV260 build's head
# units (8 taps x 16 classes x rank 4) nest deeper than Python's default limit of 1000.
sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))

ROOT = Path(__file__).resolve().parents[1]
PYNQ_PYTHON = ROOT / ".venv-pynq" / "bin" / "python"
_MISSING = pytest.StashKey[str]()  # why a test cannot run, under CI


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run slow tests")
    parser.addoption("--runsynth", action="store_true", default=False,
                     help="run the KV260 synthesis tests (yosys, 15-50 min of one core; `skip2lora hw report`)")
    parser.addoption("--case-seed", action="store", default=None, metavar="SEED[,SEED...]",
                     help="tests/test_rtl_sim.py: run only these random RTL cases (as printed on failure; "
                          "same as SKIP2LORA_CASE=...)")


def pytest_configure(config):
    config.addinivalue_line("markers", "requires_data(*names): needs these data sets (or data-root files / "
                                       "folders ending in '/'); skips when absent, fails when CI is set")
    config.addinivalue_line("markers", "requires_pynq: needs .venv-pynq (scripts/setup.sh); skips when "
                                       "absent, fails when CI is set")


# The longest single tests (CI's --durations), started first, one on each worker: under
# pytest-xdist's load scheduling a worker that draws one of them near the end of the run leaves the
# other cores idle for most of its length, and two of them in one worker's first batch run back to
# back (the small build's synthesis alone is 4-10 min).
LONGEST_FIRST = (
    "tests/test_timing_proxy.py::test_accelerator_",                # one synthesis of the small build
    "tests/test_virtual_kv260.py::test_notebook_runs_on_the_virtual_kv260",  # 2-3 min each
)


def longest_first_rank(nodeid: str) -> int:
    """The position of ``nodeid`` among LONGEST_FIRST (len(LONGEST_FIRST) for every other test)."""
    return next((i for i, prefix in enumerate(LONGEST_FIRST) if nodeid.startswith(prefix)), len(LONGEST_FIRST))


def spread_longest(items, workers: int) -> list:
    """``items`` with the longest tests moved forward: the synthesis's tests together (one module
    fixture) at the front, then each notebook one first batch further on. xdist's load scheduling
    hands each of its ``workers`` a first batch of max(2, len(items) // workers // 4) consecutive
    tests and later ones from the front of the rest, so each long test starts as early as a
    worker is free and no two share a batch. Every worker computes the same order."""
    ranks = [longest_first_rank(item.nodeid) for item in items]
    units = [[it for it, r in zip(items, ranks) if r == 0]]
    units += [[it] for it, r in zip(items, ranks) if 0 < r < len(LONGEST_FIRST)]
    units = [u for u in units if u]
    rest = [it for it, r in zip(items, ranks) if r == len(LONGEST_FIRST)]
    batch = max(2, len(items) // max(workers, 1) // 4)
    out: list = []
    for k, unit in enumerate(units):
        while len(out) < k * batch and rest:
            out.append(rest.pop(0))
        out.extend(unit)
    return out + rest


def pytest_collection_modifyitems(config, items):
    """Skip marks for slow tests (without --runslow) and for missing requirements (outside CI;
    under CI the test fails in its setup instead, see pytest_runtest_setup); the longest tests
    spread over the workers' first batches (`spread_longest`)."""
    workers = getattr(config, "workerinput", {}).get("workercount", 1)
    items[:] = spread_longest(items, workers)
    runslow, runsynth = config.getoption("--runslow"), config.getoption("--runsynth")
    skip_slow = pytest.mark.skip(reason="need --runslow option to run")
    skip_synth = pytest.mark.skip(reason="a KV260 synthesis: need --runsynth option to run")
    for item in items:
        if "synth" in item.keywords and not runsynth:
            item.add_marker(skip_synth)
            continue
        if "slow" in item.keywords and not runslow:
            item.add_marker(skip_slow)
            continue
        reason = missing_requirement(item)
        if reason and in_ci():
            item.stash[_MISSING] = reason
        elif reason:
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_runtest_setup(item):
    if _MISSING in item.stash:
        pytest.fail(f"{item.stash[_MISSING]} [CI is set: a missing requirement fails instead of skipping]",
                    pytrace=False)


# -- data ----------------------------------------------------------------------------------------
# Looked up once per session, at collection, before any test fixture can change the environment
# (the data tests point the user cache at a temporary folder).

@functools.cache
def located_data_files() -> dict:
    """Every catalogue file the loaders' look-up finds now: {path in the data root: Path}."""
    found = {rel: find_any([rel]) for rel in FILES}
    return {rel: p for rel, p in found.items() if p is not None}


@functools.cache
def missing_data_reason(want: str) -> str | None:
    """Why the data ``want`` (a data set name, a data-root file or a folder ending in '/')
    is not available, or None if it is."""
    located_data_files()  # the session's snapshot is taken before any test changes the environment
    where = " or ".join(str(d) for d in search_dirs(resolve_data_dir()))
    if "/" in want:
        wanted = [r for r in FILES if r == want or (want.endswith("/") and r.startswith(want))]
        if not wanted:
            raise ValueError(f"requires_data({want!r}): no such file or folder in the data catalogue")
        missing = [r for r in wanted if r not in located_data_files()]
        if not missing:
            return None
        more = f" ({len(missing)} of {len(wanted)} files missing)" if len(wanted) > 1 else ""
        return (f"{want} not found in {where}{more}; set {DATA_ENV} to a folder laid out like the "
                f"data root that has it")
    if not missing_files(want):
        return None
    return (f"{dataset_title(want)} not found in {where}; set {DATA_ENV} to a folder that has it, "
            f"or fetch it with: python -m skip2lora.data {want}")


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A folder laid out like the data root with (symlinks to) every data file the look-up
    found, wherever it found them (``$SKIP2LORA_DATA`` or the user cache)."""
    root = tmp_path_factory.mktemp("data-root")
    for rel, path in located_data_files().items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(path)
    return root


# -- requirements ---------------------------------------------------------------------------------

def missing_requirement(item) -> str | None:
    """Why ``item`` cannot run here (its requires_data / requires_pynq marks), or None."""
    for mark in item.iter_markers("requires_data"):
        for want in mark.args:
            reason = missing_data_reason(want)
            if reason:
                return reason
    if item.get_closest_marker("requires_pynq") and not PYNQ_PYTHON.exists():
        return ("no .venv-pynq (the real pynq package for the virtual-KV260 tests and notebooks); "
                "create it with scripts/setup.sh")
    return None
