"""The host driver: one API for a fine-tuning session on any backend (fixed, sim, pynq)."""

from .adapters_io import AdapterFileError, load_adapters_file, save_adapters_file
from .backend import BACKEND_NAMES, AcceleratorError, Backend, FixedBackend, make_backend
from .session import Session, geometry_of

__all__ = ["Session", "Backend", "FixedBackend", "make_backend", "BACKEND_NAMES", "AcceleratorError",
           "AdapterFileError", "save_adapters_file", "load_adapters_file", "geometry_of"]
