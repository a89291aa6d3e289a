"""The host driver: one API for a fine-tuning session on any backend (fixed, sim, pynq).

    from skip2lora.driver import Session, make_backend
    backend = make_backend("fixed", KV260)     # or "sim" (RTL under cocotb), "pynq" (a KV260)
    backend = make_backend("fixed", KV260, cache="ddr")   # the entries in a DDR cache buffer
    session = Session(base_model, backend)     # any model within the build's maxima (run-time geometry):
                                               # the backend runs its geometry (backend.set_geometry)

Backends are found through a registry (name -> module and class, imported on first use, as
hls4ml's backends are): importing the driver needs neither cocotb nor pynq, and the backend
modules import `backend` without anything importing them back. ``SimBackend`` and
``PynqBackend`` are importable from here too; they are loaded when first named.
"""

from __future__ import annotations

from importlib import import_module

from .adapters_io import AdapterFileError, load_adapters_file, save_adapters_file
from .backend import CACHE_PLACEMENTS, AcceleratorError, Backend, FixedBackend, default_ddr_timing
from .session import FILL_CHOICES, GeometryError, InputRangeError, Session, geometry_of

__all__ = ["Session", "FILL_CHOICES", "Backend", "FixedBackend", "SimBackend", "PynqBackend", "make_backend", "backend_class",
           "register_backend", "BACKEND_NAMES", "AcceleratorError", "AdapterFileError", "InputRangeError", "GeometryError",
           "save_adapters_file", "load_adapters_file", "geometry_of", "default_ddr_timing", "CACHE_PLACEMENTS"]

# name -> (module inside this package, class name); the module is imported when the backend is used.
_REGISTRY: dict[str, tuple[str, str]] = {
    "fixed": (".backend", "FixedBackend"),
    "sim": (".sim_backend", "SimBackend"),
    "pynq": (".pynq_backend", "PynqBackend"),
}
BACKEND_NAMES = tuple(_REGISTRY)  # the built-in ones


def register_backend(name: str, module: str, class_name: str) -> None:
    """Make ``make_backend(name, ...)`` build ``module.class_name`` (an absolute module path, or one
    relative to this package), e.g. a backend for another board."""
    _REGISTRY[name] = (module, class_name)


def backend_class(name: str) -> type:
    """The class registered as ``name`` (its module is imported now; no hardware is touched)."""
    try:
        module, class_name = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(_REGISTRY)}") from None
    return getattr(import_module(module, __name__), class_name)


def make_backend(name: str, config, **kwargs) -> Backend:
    """A ready backend of the registered name for an `AcceleratorConfig` (kwargs go to its class)."""
    return backend_class(name)(config, **kwargs)


def __getattr__(name: str):  # PEP 562: SimBackend / PynqBackend on first use
    for backend_name, (_, class_name) in _REGISTRY.items():
        if class_name == name:
            return backend_class(backend_name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
