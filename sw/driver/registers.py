"""Register access by name from the generated register map (sw/regmap.json), without Amaranth.

The map is generated from the hardware description (`skip2lora hw regmap`); this module only
reads it. `RegisterFile` wraps any 32-bit ``read(offset)`` / ``write(offset, value)`` pair: a PYNQ
``DefaultIP``, an MMIO object, or a simulation.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from ..hw.registers import RegisterMap, decode, encode

__all__ = ["regmap", "register_map", "RegisterFile", "REGMAP_PATH", "job_registers", "cache_registers",
           "fill_registers"]

REGMAP_PATH = Path(__file__).resolve().parent.parent / "regmap.json"


@lru_cache(maxsize=None)
def regmap() -> dict:
    return json.loads(REGMAP_PATH.read_text())


@lru_cache(maxsize=None)
def register_map() -> RegisterMap:
    return RegisterMap.from_dict({k: v for k, v in regmap().items() if k in ("data_width", "address_width", "registers")})


def job_registers(job, geometry=None) -> dict:
    """Register name -> value for a job (`skip2lora.fixed.model.JobConfig`), encoded with the
    generated register map: what the driver and the testbenches write before START. ``geometry``
    (`skip2lora.fixed.model.Geometry`): the job's model, written as TAPk_DIM (0 for the slots it
    does not use) and CLASSES (the rank is the build's: a lower one runs padded with zero rows)."""
    rm = register_map()
    regs = {"SAMPLES": job.samples, "BATCH": job.batch, "EPOCHS": job.epochs, "LR": job.lr,
            "ORDER": encode(rm["ORDER"], shuffle=int(bool(job.shuffle))), "SEED": int(job.seed),
            "WARMUP": int(job.warmup), "SCHED": encode(rm["SCHED"], decay=int(bool(job.decay))),
            "OPT": encode(rm["OPT"], kind=int(job.optimizer))}
    for k, (e, s) in enumerate(zip(job.exponents, job.signed)):
        reg = rm[f"TAP{k}_CFG"]
        width = reg.field("exponent").width  # two's complement in the field
        regs[reg.name] = encode(reg, exponent=int(e) & ((1 << width) - 1), signed=int(bool(s)))
    if geometry is not None:
        slots = regmap()["max_taps"]
        if geometry.taps > slots:
            raise ValueError(f"the register map has {slots} tap slots; this geometry has {geometry.taps} taps")
        for k in range(slots):
            regs[f"TAP{k}_DIM"] = geometry.dims[k] if k < geometry.taps else 0
        regs["CLASSES"] = geometry.classes
    return regs


def fill_registers(base, exponents) -> dict:
    """Register name -> value a FILL needs before CTRL.fill (LOAD_COUNT aside): the PL base's
    geometry (TAPk_DIM, 0 for the slots it does not use; CLASSES) and each tap's cache exponent and
    signedness (TAPk_CFG: ``exponents``, the base's ``tap_signed``)."""
    rm = register_map()
    slots = regmap()["max_taps"]
    dims = list(base.tap_dims)
    if len(dims) > slots:
        raise ValueError(f"the register map has {slots} tap slots; this base has {len(dims)} taps")
    regs = {f"TAP{k}_DIM": dims[k] if k < len(dims) else 0 for k in range(slots)}
    regs["CLASSES"] = int(base.classes)
    for k, (e, s) in enumerate(zip(exponents, base.tap_signed)):
        reg = rm[f"TAP{k}_CFG"]
        width = reg.field("exponent").width  # two's complement in the field
        regs[reg.name] = encode(reg, exponent=int(e) & ((1 << width) - 1), signed=int(bool(s)))
    return regs


def cache_registers(ddr_address: int | None) -> dict:
    """Register name -> value saying where a job's cache entries are, written before its registers
    and START: the on-chip cache (None: CACHE_MODE.ddr = 0), or the DDR cache buffer at that bus
    address (CACHE_MODE.ddr = 1 and DDR_ADDR, 4 KB aligned, 40 bits)."""
    rm = register_map()
    if ddr_address is None:
        return {"CACHE_MODE": encode(rm["CACHE_MODE"], ddr=0)}
    hi_bits = rm["DDR_ADDR_HI"].field("value").width
    a = int(ddr_address)
    if a < 0 or a % 4096 or a >> (32 + hi_bits):
        raise ValueError(f"the DDR cache buffer's address must be a 4 KB aligned {32 + hi_bits}-bit bus address, "
                         f"not {a:#x}")
    return {"CACHE_MODE": encode(rm["CACHE_MODE"], ddr=1), "DDR_ADDR_LO": a & 0xFFFF_FFFF, "DDR_ADDR_HI": a >> 32}


class RegisterFile:
    def __init__(self, read, write):
        self._read, self._write = read, write
        self.map = register_map()

    def address(self, name: str) -> int:
        return self.map.address(name)

    def read(self, name: str) -> int:
        """A register's value; for a register of one field, that field's value."""
        reg = self.map[name]
        raw = int(self._read(reg.address))
        if len(reg.fields) == 1:
            return decode(reg, raw)[reg.fields[0].name]
        return raw

    def read_fields(self, name: str) -> dict:
        return decode(self.map[name], int(self._read(self.map.address(name))))

    def write(self, name: str, value: int | None = None, **fields) -> None:
        reg = self.map[name]
        if value is None:
            value = encode(reg, **fields)
        elif fields:
            raise TypeError("give a whole register value or fields, not both")
        self._write(reg.address, int(value))
