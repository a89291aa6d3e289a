"""The accelerator's control/status registers: the single definition of the register map.

`skip2lora hw regmap` writes it, with the identity, error codes and system description, to the
host package's ``regmap.json`` (`skip2lora.driver.registers.REGMAP_PATH`), which the driver reads
without Amaranth; a test fails when that file is stale. docs/interface.md is generated from here.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path

from ..fixed.optimizer import Optimizer
from .params import MAX_TAPS
from .registers import Access, Field, Register, RegisterMap
from .system import system_dict

__all__ = ["DDR_ADDR_BITS", "ACCEL_ID", "VERSION", "ErrorCode", "ERROR_DOCS", "REGISTER_MAP", "regmap_dict", "write_regmap",
           "config_register_patterns"]

ACCEL_ID = 0x53324C52  # "S2LR"
VERSION = (3, 2)       # major (register map / wire format / job semantics), minor


class ErrorCode(enum.IntEnum):
    """STATUS.ERROR_CODE values: the first error since the last soft reset or CLEAR_ERROR is kept
    (later ones set STATUS.OVERRUN); while an error is latched every command but SOFT_RESET and
    CLEAR_ERROR is ignored."""

    NONE = 0
    STREAM_UNEXPECTED = 1
    TLAST_EARLY = 2
    TLAST_LATE = 3
    CACHE_OVERFLOW = 4
    BUSY = 5
    BAD_CONFIG = 6
    NO_ADAPTERS = 7
    DDR_READ = 8


#: What sets each error code (docs/interface.md prints this table).
ERROR_DOCS = {
    ErrorCode.NONE: "no error",
    ErrorCode.STREAM_UNEXPECTED: "stream data arrived with no load, fill or PREDICT armed; it is drained up to TLAST",
    ErrorCode.TLAST_EARLY: "TLAST before the last expected beat of a load, fill or PREDICT: nothing is committed (a "
                           "cache load or fill adds no entries; an adapter load leaves no valid adapters; a "
                           "PREDICT's output frame ends with a beat of 0xFFFF words and TLAST)",
    ErrorCode.TLAST_LATE: "no TLAST on the last expected beat: nothing is committed (as for TLAST_EARLY); "
                          "the rest of the stream is drained up to TLAST",
    ErrorCode.CACHE_OVERFLOW: "LOAD_CACHE or FILL would exceed CACHE_DEPTH entries (nothing armed)",
    ErrorCode.BUSY: "a command arrived while a job, load, fill, PREDICT or read-back was running (ignored)",
    ErrorCode.BAD_CONFIG: "START with SAMPLES, BATCH, EPOCHS, LR, OPT or a tap exponent out of range (in "
                          "DDR mode: no DDR path, SAMPLES above DDR_SAMPLES, BATCH above DDR_BATCH or "
                          "DDR_ADDR not 4 KB aligned), or LOAD_CACHE with LOAD_COUNT = 0, or FILL with no PL base, "
                          "LOAD_COUNT = 0, TAPk_DIM / CLASSES not the base's taps / classes (also PREDICT, which also "
                          "takes START's tap exponent range), or a tap's "
                          "TAPk_CFG.signed not the base's or exponent outside its LSB exponent + 0..31; or a job geometry "
                          "the build does not run (no tap, a tap after an absent one, more tap lines than "
                          "TAP_LINES, CLASSES outside 2..GEOMETRY.classes): found during the job's INIT, "
                          "which then ends without DONE and without changing the adapters",
    ErrorCode.NO_ADAPTERS: "START, READ_ADAPTERS or PREDICT with no valid adapters (after a reset, a soft reset or "
                           "a failed adapter load)",
    ErrorCode.DDR_READ: "a read of the DDR cache buffer returned an error response (or a malformed burst): "
                        "the job ran to its end on the data received, its results are not valid (latched once "
                        "a job: its later bad beats are not overruns)",
}


DDR_ADDR_BITS = 40  # the DDR cache reader's AXI address (the ZynqMP's HP ports take 49 bits; 1 TB suffices)


def _rw(name, width, doc, reset=0):
    return Field(name, 0, width, Access.RW, reset, doc)


def _ro(name, width, doc, offset=0):
    return Field(name, offset, width, Access.RO, 0, doc)


REGISTER_MAP = RegisterMap([
    Register("ID", 0x00, [_ro("value", 32, "accelerator identifier 0x53324C52 ('S2LR')")]),
    Register("VERSION", 0x04, [_ro("minor", 16, "minor version"), _ro("major", 16, "major version", 16)]),
    Register("CTRL", 0x08, [
        Field("start", 0, 1, Access.W1P, doc="run a fine-tuning job with the configured registers"),
        Field("soft_reset", 1, 1, Access.W1P, doc="abort everything: idle, no error, empty cache, no valid "
                                                  "adapters, DONE and IRQ.done cleared (an output frame being "
                                                  "sent ends without TLAST: reset the receiving DMA too)"),
        Field("load_cache", 2, 1, Access.W1P, doc="arm the stream input for LOAD_COUNT cache entries"),
        Field("load_adapters", 3, 1, Access.W1P, doc="arm the stream input for one adapter image"),
        Field("read_adapters", 4, 1, Access.W1P, doc="send the adapter image on the stream output"),
        Field("clear_cache", 5, 1, Access.W1P, doc="forget all cache entries (N_LOADED = 0)"),
        Field("clear_error", 6, 1, Access.W1P, doc="clear ERROR, ERROR_CODE and OVERRUN (nothing else)"),
        Field("fill", 7, 1, Access.W1P, doc="arm the stream input for LOAD_COUNT images for the PL base "
                                            "(FILL_INFO): their cache entries follow the N_LOADED held; "
                                            "N_LOADED grows when every entry is written"),
        Field("predict", 8, 1, Access.W1P, doc="arm the stream input for LOAD_COUNT images in FILL's format and "
                                               "send each one's result on the stream output: y = z + sum_k B_k A_k "
                                               "x_k (GEOMETRY.classes int16 words, zero past CLASSES), then its "
                                               "class; the cache and the adapters are unchanged"),
    ], "commands (write 1 to a bit)"),
    Register("STATUS", 0x0C, [
        _ro("busy", 1, "a job, load, fill, PREDICT or read-back is running"),
        _ro("done", 1, "the last job finished; cleared by the next START and by a soft reset", 1),
        _ro("error", 1, "an error is latched (see ERROR_CODE): commands other than SOFT_RESET and "
                        "CLEAR_ERROR are ignored", 2),
        _ro("loading", 1, "the stream input is armed (a load, or a fill until its commit) or draining", 3),
        _ro("sending", 1, "the stream output is sending", 4),
        _ro("adapters", 1, "the adapters are valid (loaded, or trained by a job)", 5),
        _ro("overrun", 1, "another error happened while one was latched", 6),
        _ro("error_code", 8, "the first latched error (ErrorCode)", 8),
    ]),
    Register("IRQ", 0x10, [Field("done", 0, 1, Access.W1C, doc="job finished (write 1 to clear; a soft "
                                                                "reset clears it too)")]),
    Register("IRQ_ENABLE", 0x14, [_rw("done", 1, "drive the interrupt line from IRQ.done")]),
    Register("SAMPLES", 0x18, [_rw("value", 16, "cache entries 0..SAMPLES-1 are trained on")]),
    Register("BATCH", 0x1C, [_rw("value", 16, "mini-batch size (1..256)")]),
    Register("EPOCHS", 0x20, [_rw("value", 16, "passes over the samples (1..65535)")]),
    Register("LR", 0x24, [_rw("value", 28, "peak step size eta in Q24 (formats.lr_register)")]),
    Register("LOAD_COUNT", 0x28, [_rw("value", 16, "cache entries (LOAD_CACHE) or images (FILL) in the next stream")]),
    Register("N_LOADED", 0x2C, [_ro("value", 16, "cache entries held")]),
    Register("CYCLES_LO", 0x30, [_ro("value", 32, "cycles of the last job, low word")]),
    Register("CYCLES_HI", 0x34, [_ro("value", 32, "cycles of the last job, high word")]),
    Register("CORRECT", 0x38, [_ro("value", 16, "training samples classified right in the last epoch (after a "
                                                "PREDICT: its images whose class is their label)")]),
    Register("EPOCH", 0x3C, [_ro("value", 16, "epochs finished by the running (or last) job")]),
    Register("GEOMETRY", 0x40, [
        _ro("taps", 8, "the build's most taps (TAPk_DIM slots a job may use)"),
        _ro("rank", 8, "R, adapter rank (a job of a lower rank runs padded with zero rows)", 8),
        _ro("classes", 16, "the build's most classes", 16),
    ], "the build's maxima: a job's own geometry is TAPk_DIM and CLASSES"),
    Register("LANES", 0x44, [_ro("value", 16, "P, cache codes per cycle (stream beat = 4P bits)")]),
    Register("CACHE_DEPTH", 0x48, [_ro("value", 16, "cache entries the accelerator can hold")]),
    Register("ORDER", 0x4C, [_rw("shuffle", 1, "a new pseudo-random sample order every epoch (fixed.order), "
                                               "else cache order")]),
    Register("SEED", 0x50, [_rw("value", 32, "the sample order's seed")]),
    Register("WARMUP", 0x54, [_rw("value", 32, "learning-rate warm-up steps (fixed.schedule); 0: none")]),
    Register("SCHED", 0x58, [_rw("decay", 1, "after the warm-up, decay the learning rate linearly to "
                                             "eta / (T - W) at the last step")]),
    Register("OPT", 0x5C, [_rw("kind", 4, "the optimizer (fixed.optimizer.Optimizer)")]),
    Register("STAT_EPOCH", 0x60, [_rw("value", 16, "the epoch whose statistics STAT_* show (kept for the "
                                                   "last 1024 epochs: slot = epoch mod 1024)")]),
    Register("STAT_CORRECT", 0x64, [_ro("value", 16, "training samples classified right in that epoch")]),
    Register("STAT_LOSS", 0x68, [_ro("value", 32, "sum of the samples' -log2 p(label) in Q8 in that epoch")]),
    Register("STAT_SAT", 0x6C, [_ro("value", 32, "weight updates clamped to the weight range in that epoch")]),
    Register("CACHE_MODE", 0x70, [_rw("ddr", 1, "the job's cache entries are in DDR at DDR_ADDR (entry i at "
                                                "DDR_ADDR + i * DDR_STRIDE), not in the on-chip cache")]),
    Register("DDR_ADDR_LO", 0x74, [_rw("value", 32, "the DDR cache buffer's bus address, low word (4 KB aligned)")]),
    Register("DDR_ADDR_HI", 0x78, [_rw("value", DDR_ADDR_BITS - 32, "the DDR cache buffer's bus address, high bits")]),
    Register("DDR_SAMPLES", 0x7C, [_ro("value", 16, "most samples of a DDR-mode job (0: this build has no DDR path)")]),
    *[Register(f"TAP{k}_DIM", 0x80 + 4 * k, [_rw("value", 16, f"d_{k}, the job's input size of tap {k} (0: absent; "
                                                               f"taps after an absent one must be absent)")])
      for k in range(MAX_TAPS)],
    Register("CLASSES", 0xA0, [_rw("value", 8, "C, the job's classes (2..GEOMETRY.classes)")]),
    Register("TAP_LINES", 0xA4, [_ro("value", 16, "the build's most cache lines of taps: a job's sum of "
                                                  "ceil(TAPk_DIM / LANES) over its taps")]),
    Register("ENTRY_LINES", 0xA8, [_ro("value", 16, "lines (stream beats) of a cache entry as LOAD_CACHE takes it "
                                                    "and as the DDR buffer holds it: the job's entry, zero padded")]),
    *[Register(f"TAP{k}_CFG", 0xC0 + 4 * k, [
        _rw("exponent", 6, f"tap {k} scale exponent e (two's complement): a code c stands for c * 2**e"),
        Field("signed", 6, 1, Access.RW, doc=f"tap {k} codes are signed (-8..7) instead of unsigned (0..15)"),
    ]) for k in range(MAX_TAPS)],
    Register("DDR_BATCH", 0xE0, [_ro("value", 16, "largest mini-batch of a DDR-mode job")]),
    Register("DDR_STRIDE", 0xE4, [_ro("value", 16, "bytes between two cache entries in the DDR buffer")]),
    Register("FILL_INFO", 0xE8, [
        _ro("present", 1, "the build has a PL base: FILL computes cache entries from images, PREDICT "
                          "results"),
        _ro("image_beats", 16, "stream beats of one FILL image: ceil((2 + the base's input bytes) / "
                               "(4 LANES / 8)): its label (2 bytes, little-endian), its quantized input "
                               "(NHWC), zeros", 16),
    ], "the PL base (the cache fill on the PL); 0 when the build has none"),
    Register("FILL_CYCLES", 0xEC, [_ro("value", 32, "cycles of the last FILL: from the cycle the loader "
                                                    "is armed (two cycles after its command) to the cycle "
                                                    "before its commit (or abort)")]),
    Register("PREDICT_CYCLES", 0xF0, [_ro("value", 32, "cycles of the last PREDICT: from the cycle the loader "
                                                       "is armed (two cycles after its command) to the cycle its "
                                                       "last result beat is taken")]),
])


def regmap_dict() -> dict:
    d = REGISTER_MAP.to_dict()
    d["id"] = ACCEL_ID
    d["version"] = list(VERSION)
    d["error_codes"] = {e.name: int(e) for e in ErrorCode}
    d["error_docs"] = {e.name: ERROR_DOCS[e] for e in ErrorCode}
    d["max_taps"] = MAX_TAPS
    d["optimizers"] = {o.name.lower(): int(o) for o in Optimizer}
    d["system"] = system_dict()
    return d


def config_register_patterns() -> list:
    """Regular expressions naming the register bank's read-write storage (a job's configuration):
    the timing proxy flags logic deeper than a few levels behind them."""
    return [rf"(^|\.)regs\.{reg.name}_{f.name}$" for reg in REGISTER_MAP.registers for f in reg.fields
            if f.access is Access.RW]


def write_regmap(path) -> Path:
    """Write the register map's JSON form (the host package's regmap.json) to ``path``."""
    text = json.dumps(regmap_dict(), indent=1, sort_keys=True) + "\n"
    Path(path).write_text(text)
    return Path(path)
