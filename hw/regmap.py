"""The accelerator's control/status registers: the single definition of the register map.

`skip2lora hw export` (and `python -m skip2lora.hw.regmap`) writes it to ``sw/regmap.json``,
which the host driver reads without Amaranth; a test fails when that file is stale.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path

from .params import MAX_TAPS
from .registers import Access, Field, Register, RegisterMap
from .system import system_dict

__all__ = ["ACCEL_ID", "VERSION", "ErrorCode", "REGISTER_MAP", "regmap_dict", "REGMAP_JSON", "write_regmap"]

ACCEL_ID = 0x53324C52  # "S2LR"
VERSION = (1, 0)       # major (register map / wire format), minor


class ErrorCode(enum.IntEnum):
    """STATUS.ERROR_CODE values: the first error since the last soft reset is kept."""

    NONE = 0
    STREAM_UNEXPECTED = 1  # stream data arrived with no load command armed (drained to TLAST)
    TLAST_EARLY = 2        # TLAST before the expected end of a load (nothing committed)
    TLAST_LATE = 3         # no TLAST on the expected last beat (rest drained to TLAST)
    CACHE_OVERFLOW = 4     # LOAD_CACHE would exceed the cache depth (stream drained)
    BUSY = 5               # a command arrived while a job or transfer was running (ignored)
    BAD_CONFIG = 6         # START with samples/batch/epochs/lr/tap exponents out of range


def _rw(name, width, doc, reset=0):
    return Field(name, 0, width, Access.RW, reset, doc)


def _ro(name, width, doc, offset=0):
    return Field(name, offset, width, Access.RO, 0, doc)


REGISTER_MAP = RegisterMap([
    Register("ID", 0x00, [_ro("value", 32, "accelerator identifier 0x53324C52 ('S2LR')")]),
    Register("VERSION", 0x04, [_ro("minor", 16, "minor version"), _ro("major", 16, "major version", 16)]),
    Register("CTRL", 0x08, [
        Field("start", 0, 1, Access.W1P, doc="run a fine-tuning job with the configured registers"),
        Field("soft_reset", 1, 1, Access.W1P, doc="abort everything, clear errors, empty the cache"),
        Field("load_cache", 2, 1, Access.W1P, doc="arm the stream input for LOAD_COUNT cache entries"),
        Field("load_adapters", 3, 1, Access.W1P, doc="arm the stream input for one adapter image"),
        Field("read_adapters", 4, 1, Access.W1P, doc="send the adapter image on the stream output"),
        Field("clear_cache", 5, 1, Access.W1P, doc="forget all cache entries (N_LOADED = 0)"),
    ], "commands (write 1 to a bit)"),
    Register("STATUS", 0x0C, [
        _ro("busy", 1, "a job, load or read-back is running"),
        _ro("done", 1, "the last job finished (cleared by the next command)", 1),
        _ro("error", 1, "an error is latched (see ERROR_CODE); cleared by a soft reset", 2),
        _ro("loading", 1, "the stream input is armed or draining", 3),
        _ro("sending", 1, "the stream output is sending", 4),
        _ro("error_code", 8, "first error since the last soft reset (ErrorCode)", 8),
    ]),
    Register("IRQ", 0x10, [Field("done", 0, 1, Access.W1C, doc="job finished (write 1 to clear)")]),
    Register("IRQ_ENABLE", 0x14, [_rw("done", 1, "drive the interrupt line from IRQ.done")]),
    Register("SAMPLES", 0x18, [_rw("value", 16, "cache entries 0..SAMPLES-1 are trained on")]),
    Register("BATCH", 0x1C, [_rw("value", 16, "mini-batch size (1..256)")]),
    Register("EPOCHS", 0x20, [_rw("value", 16, "passes over the samples (1..65535)")]),
    Register("LR", 0x24, [_rw("value", 24, "learning rate / batch in 0.24 fixed point (formats.lr_register)")]),
    Register("LOAD_COUNT", 0x28, [_rw("value", 16, "cache entries in the next LOAD_CACHE stream")]),
    Register("N_LOADED", 0x2C, [_ro("value", 16, "cache entries held")]),
    Register("CYCLES_LO", 0x30, [_ro("value", 32, "cycles of the last job, low word")]),
    Register("CYCLES_HI", 0x34, [_ro("value", 32, "cycles of the last job, high word")]),
    Register("CORRECT", 0x38, [_ro("value", 16, "training samples classified right in the last epoch")]),
    Register("GEOMETRY", 0x40, [
        _ro("taps", 8, "K, adapter taps"), _ro("rank", 8, "R, adapter rank", 8),
        _ro("classes", 16, "C, classes", 16),
    ]),
    Register("LANES", 0x44, [_ro("value", 16, "P, cache codes per cycle (stream beat = 4P bits)")]),
    Register("CACHE_DEPTH", 0x48, [_ro("value", 16, "cache entries the accelerator can hold")]),
    *[Register(f"TAP{k}_DIM", 0x80 + 4 * k, [_ro("value", 16, f"d_{k}, input size of tap {k} (0: absent)")])
      for k in range(MAX_TAPS)],
    *[Register(f"TAP{k}_CFG", 0xC0 + 4 * k, [
        _rw("exponent", 6, f"tap {k} scale exponent e (two's complement): a code c stands for c * 2**e"),
        Field("signed", 6, 1, Access.RW, doc=f"tap {k} codes are signed (-8..7) instead of unsigned (0..15)"),
    ]) for k in range(MAX_TAPS)],
])


def regmap_dict() -> dict:
    d = REGISTER_MAP.to_dict()
    d["id"] = ACCEL_ID
    d["version"] = list(VERSION)
    d["error_codes"] = {e.name: int(e) for e in ErrorCode}
    d["max_taps"] = MAX_TAPS
    d["system"] = system_dict()
    return d


def _sw_dir() -> Path:
    from .. import __file__ as package_init  # the host package: sw/ in the source tree

    return Path(package_init).resolve().parent


REGMAP_JSON = _sw_dir() / "regmap.json"


def write_regmap(path: Path = REGMAP_JSON) -> Path:
    text = json.dumps(regmap_dict(), indent=1, sort_keys=True) + "\n"
    Path(path).write_text(text)
    return Path(path)


if __name__ == "__main__":
    print(write_regmap())
