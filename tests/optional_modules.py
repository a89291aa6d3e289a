"""Optional packages a test needs (onnx, torch): skip with the install hint, fail under CI."""

import importlib

import pytest
from conftest import in_ci


def need_module(name: str, install: str | None = None):
    """The imported module ``name``; skips the test when it is missing (fails when CI is set)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        hint = install or f"pip install {name}"
        if in_ci():
            pytest.fail(f"{name} is required under CI ({hint})")
        pytest.skip(f"{name} is not installed ({hint})")
