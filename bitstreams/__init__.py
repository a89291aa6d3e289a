"""The overlays the PYNQ driver loads by default: ``kv260/skip2lora.bit`` + ``skip2lora.hwh``.

They are build outputs (Vivado), not shipped: `skip2lora hw bitstream` builds and installs them
here (see kv260/README.md). `require_kv260_bitstream` names what is missing and how to get it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["KV260_DIR", "kv260_bitfile", "missing_bitstream_message", "require_kv260_bitstream",
           "BitstreamMissing"]

KV260_DIR = Path(__file__).resolve().parent / "kv260"


class BitstreamMissing(FileNotFoundError):
    """The overlay's .bit or its .hwh is not there; the message says how to build or obtain it."""


def kv260_bitfile() -> Path:
    """Where the driver looks by default: this package's ``kv260/skip2lora.bit``."""
    return KV260_DIR / "skip2lora.bit"


def missing_bitstream_message(bitfile) -> str:
    from ..hw.vivado.design import MIN_VIVADO  # no Amaranth needed: plain constants

    bitfile = Path(bitfile)
    hwh = bitfile.with_suffix(".hwh")
    missing = [str(p) for p in (bitfile, hwh) if not p.is_file()] or [str(bitfile)]
    return (f"no KV260 overlay: {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing. "
            f"The package ships no bitstream (building one needs Vivado): on a PC with Vivado {MIN_VIVADO} or "
            f"newer and the Kria KV260 board files, run `skip2lora hw bitstream` (hours; it writes "
            f"skip2lora.bit, skip2lora.hwh and manifest.json into that install's skip2lora/bitstreams/kv260/), "
            f"then copy the three files to {bitfile.parent}/ on the board, or pass the path of a skip2lora.bit "
            f"with its skip2lora.hwh beside it. Details: bitstreams/kv260/README.md")


def require_kv260_bitstream(bitfile=None) -> Path:
    """``bitfile`` (default `kv260_bitfile`) if it and its ``.hwh`` exist, else `BitstreamMissing`."""
    path = Path(bitfile) if bitfile else kv260_bitfile()
    if not (path.is_file() and path.with_suffix(".hwh").is_file()):
        raise BitstreamMissing(missing_bitstream_message(path))
    return path
