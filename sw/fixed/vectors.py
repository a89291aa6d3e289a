"""Test vectors for the hardware: a random job in the accelerator's own terms, and its exact outcome.

Every RTL test (amaranth.sim and cocotb) takes its stimulus and its expected results from here;
none of them re-implements the arithmetic. ``make_vector`` draws cache entries, initial adapters
and per-tap scales for any geometry, packs them as the accelerator receives them, and runs the
bit-exact model for the expected adapters, training statistics and cycle count.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from . import formats as F
from .config import AcceleratorConfig
from .cycles import job_cycles
from .model import Adapters, CacheEntries, Geometry, JobConfig, JobResult, run_job
from .packing import Layout, pack_adapters, pack_cache, unpack_adapters
from .quantize import code_range

__all__ = ["TestVector", "make_vector", "register_values"]


@dataclass
class TestVector:
    config: AcceleratorConfig
    job: JobConfig
    cache: CacheEntries
    adapters: Adapters
    seed: int

    @property
    def layout(self) -> Layout:
        return Layout(self.config.geometry, self.config.lanes)

    @cached_property
    def expected(self) -> JobResult:
        return run_job(self.config.geometry, self.cache, self.adapters, self.job)

    @property
    def cycles(self) -> int:
        return job_cycles(self.layout, self.job.samples, self.job.batch, self.job.epochs)

    @property
    def cache_bytes(self) -> np.ndarray:
        return pack_cache(self.layout, self.cache)

    @property
    def adapter_bytes(self) -> np.ndarray:
        return pack_adapters(self.layout, self.adapters)

    @property
    def expected_adapter_bytes(self) -> np.ndarray:
        return pack_adapters(self.layout, self.expected.adapters)

    def unpack_adapters(self, data) -> Adapters:
        return unpack_adapters(self.layout, data)

    @property
    def registers(self) -> dict:
        return register_values(self.job)

    def describe(self) -> str:
        g, j = self.config.geometry, self.job
        return (f"seed={self.seed} dims={list(g.dims)} R={g.rank} C={g.classes} P={self.config.lanes} "
                f"N={j.samples}/{len(self.cache)} batch={j.batch} epochs={j.epochs} lr={j.lr} "
                f"exps={list(j.exponents)} signed={[int(s) for s in j.signed]}")


def register_values(job: JobConfig) -> dict:
    """Register name -> value for a job, encoded with the generated register map (sw/regmap.json)."""
    from ..driver.registers import register_map
    from ..hw.registers import encode

    rm = register_map()
    regs = {"SAMPLES": job.samples, "BATCH": job.batch, "EPOCHS": job.epochs, "LR": job.lr}
    for k, (e, s) in enumerate(zip(job.exponents, job.signed)):
        reg = rm[f"TAP{k}_CFG"]
        width = reg.field("exponent").width  # two's complement in the field
        regs[reg.name] = encode(reg, exponent=int(e) & ((1 << width) - 1), signed=int(bool(s)))
    return regs


def make_vector(config: AcceleratorConfig, *, samples: int, batch: int, epochs: int, seed: int,
                lr: int | None = None, cached: int | None = None, extreme: bool = False) -> TestVector:
    """A random job. ``extreme`` draws adapters and logits near their limits and a large learning
    rate, so the saturating narrowings (u, y, t, A, B) are exercised."""
    g: Geometry = config.geometry
    rng = np.random.default_rng(seed)
    cached = samples if cached is None else cached
    if not samples <= cached <= config.cache_depth:
        raise ValueError(f"need samples <= cached <= cache depth, got {samples}, {cached}, {config.cache_depth}")
    signed = tuple(bool(s) for s in rng.integers(0, 2, g.taps))
    exponents = tuple(int(e) for e in rng.integers(F.EXP_MIN, F.EXP_MAX + 1, g.taps))
    codes = np.concatenate([rng.integers(code_range(s)[0], code_range(s)[1] + 1, (cached, d))
                            for s, d in zip(signed, g.dims)], axis=1).astype(np.int8)
    zlim = (1 << (F.Z_BITS - 1)) if extreme else (8 << F.Z_FRAC)
    logits = rng.integers(-zlim, zlim, (cached, g.classes)).astype(np.int16)
    labels = rng.integers(0, g.classes, cached)
    wlim = (1 << (F.W_BITS - 1)) if extreme else (1 << (F.A_FRAC - 3))
    a = [rng.integers(-wlim, wlim, (g.rank, d)).astype(np.int16) for d in g.dims]
    b = [rng.integers(-wlim, wlim, (g.classes, g.rank)).astype(np.int16) for _ in g.dims]
    if lr is None:
        lr = int(rng.integers(1 << 16, 1 << 23)) if extreme else int(rng.integers(1 << 10, 1 << 17))
    job = JobConfig(samples, batch, epochs, lr, exponents, signed)
    return TestVector(config, job, CacheEntries(codes, logits, labels), Adapters(a, b), seed)
