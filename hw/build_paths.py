"""Where generated hardware goes: one setting for every build output.

``SKIP2LORA_BUILD_DIR`` names the root. Without it, the root is the source checkout when the
package runs from a writable one (an editable install: ``<checkout>/sim_build``,
``<checkout>/build``), else the user cache (``$XDG_CACHE_HOME/skip2lora`` or
``~/.cache/skip2lora``) -- never the installed package in site-packages.

    sim_build_dir()           simulator builds and the cached Verilog  (SKIP2LORA_SIM_BUILD overrides)
    verilog_cache_dir()       <sim_build>/verilog
    bitstream_build_dir(cfg)  <root>/build/bitstream-<config>
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["BUILD_ENV", "SIM_BUILD_ENV", "source_checkout", "user_cache_dir", "build_root", "sim_build_dir",
           "verilog_cache_dir", "bitstream_build_dir"]

BUILD_ENV = "SKIP2LORA_BUILD_DIR"
SIM_BUILD_ENV = "SKIP2LORA_SIM_BUILD"   # only the simulator builds (kept from earlier versions)


def source_checkout() -> Path | None:
    """The source tree this package is imported from (editable install), or None when installed.

    A checkout is recognised by its ``pyproject.toml`` naming the project next to ``hw/`` (this
    package); an installed package has no such file beside it.
    """
    root = Path(__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    try:
        if (root / "hw").is_dir() and 'name = "skip2lora"' in pyproject.read_text():
            return root
    except OSError:
        pass
    return None


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # the XDG spec says relative values are ignored
        base = str(Path.home() / ".cache")
    return Path(base) / "skip2lora"


def build_root() -> Path:
    """``$SKIP2LORA_BUILD_DIR``, else a writable source checkout, else the user cache."""
    env = os.environ.get(BUILD_ENV, "")
    if env:
        return Path(env).expanduser().absolute()
    root = source_checkout()
    if root is not None and os.access(root, os.W_OK):
        return root
    return user_cache_dir()


def sim_build_dir() -> Path:
    env = os.environ.get(SIM_BUILD_ENV, "")
    if env:
        return Path(env).expanduser().absolute()
    return build_root() / "sim_build"


def verilog_cache_dir() -> Path:
    return sim_build_dir() / "verilog"


def bitstream_build_dir(config_name: str) -> Path:
    return build_root() / "build" / f"bitstream-{config_name}"
