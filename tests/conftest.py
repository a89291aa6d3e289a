"""Test configuration: the shared real-data folder and the ``--runslow`` switch."""

import os

from skip2lora.blas_env import apply_defaults  # BLAS threads and kernels, before NumPy loads

apply_defaults()

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

# The real data sets live next to the checkout (<repo>/../shared/data); point the data
# layer at them unless the user already chose a folder.
_SHARED_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
if "SKIP2LORA_DATA" not in os.environ and _SHARED_DATA.is_dir():
    os.environ["SKIP2LORA_DATA"] = str(_SHARED_DATA)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run slow tests")
    parser.addoption("--case-seed", action="store", default=None, metavar="SEED[,SEED...]",
                     help="tests/test_rtl_sim.py: run only these random RTL cases (as printed on failure; "
                          "same as SKIP2LORA_CASE=...)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="need --runslow option to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
