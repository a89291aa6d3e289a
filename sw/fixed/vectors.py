"""Test vectors for the hardware: a random job in the accelerator's own terms, and its exact outcome.

Every RTL test (amaranth.sim and cocotb) takes its stimulus and its expected results from here;
none of them re-implements the arithmetic. ``make_vector`` draws cache entries, initial adapters,
per-tap scales and a training recipe (sample order, schedule, optimizer) for any geometry, packs
them as the accelerator receives them, and runs the bit-exact model for the expected adapters,
per-epoch statistics and cycle count.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from . import formats as F
from .config import AcceleratorConfig
from .cycles import DDRTiming, job_cycles
from .model import Adapters, CacheEntries, Geometry, JobConfig, JobResult, run_job
from .optimizer import Optimizer
from .packing import Layout, pack_adapters_for, pack_cache_for, pack_ddr_cache_for, unpack_adapters_for
from .quantize import code_range
from .schedule import steps_per_epoch

__all__ = ["TestVector", "make_vector"]


@dataclass
class TestVector:
    config: AcceleratorConfig
    job: JobConfig
    cache: CacheEntries
    adapters: Adapters
    seed: int
    ddr: DDRTiming | None = None  # run in DDR mode (the entries in a DDR buffer) under this memory
    geometry: Geometry | None = None  # the job's model (set by registers); None: the build's own

    def __post_init__(self):
        self.geometry = self.config.check_geometry(self.geometry or self.config.geometry)

    @property
    def layout(self) -> Layout:
        """The build's layout: the sizes of what it takes and sends (entries, adapter images)."""
        return Layout(self.config.build_geometry, self.config.lanes)

    @property
    def job_layout(self) -> Layout:
        """The job's own layout (its geometry's lines)."""
        return Layout(self.geometry, self.config.lanes)

    @cached_property
    def expected(self) -> JobResult:
        return run_job(self.geometry, self.cache, self.adapters, self.job)

    @property
    def cycles(self) -> int:
        j = self.job
        return job_cycles(self.job_layout, j.samples, j.batch, j.epochs, shuffle=j.shuffle, ddr=self.ddr,
                          build=self.config)

    @property
    def cache_bytes(self) -> np.ndarray:
        return pack_cache_for(self.layout, self.job_layout, self.cache)

    @property
    def ddr_bytes(self) -> np.ndarray:
        return pack_ddr_cache_for(self.layout, self.job_layout, self.cache)

    @property
    def adapter_bytes(self) -> np.ndarray:
        return pack_adapters_for(self.layout, self.job_layout, self.adapters)

    @property
    def expected_adapter_bytes(self) -> np.ndarray:
        return pack_adapters_for(self.layout, self.job_layout, self.expected.adapters)

    def unpack_adapters(self, data) -> Adapters:
        return unpack_adapters_for(self.layout, self.job_layout, data)

    def describe(self) -> str:
        g, j = self.geometry, self.job
        return (f"seed={self.seed} dims={list(g.dims)} R={g.rank} C={g.classes} P={self.config.lanes} "
                f"N={j.samples}/{len(self.cache)} batch={j.batch} epochs={j.epochs} lr={j.lr} "
                f"shuffle={int(j.shuffle)} order_seed={j.seed} warmup={j.warmup} decay={int(j.decay)} "
                f"opt={Optimizer(j.optimizer).name.lower()} exps={list(j.exponents)} "
                f"signed={[int(s) for s in j.signed]}")


def make_vector(config: AcceleratorConfig, *, samples: int, batch: int, epochs: int, seed: int,
                lr: int | None = None, cached: int | None = None, extreme: bool = False,
                shuffle: bool | None = None, order_seed: int | None = None, warmup: int | None = None,
                decay: bool | None = None, optimizer: int | None = None, ddr: DDRTiming | None = None,
                geometry: Geometry | None = None) -> TestVector:
    """A random job. ``extreme`` draws adapters and logits near their limits and a large learning
    rate, so the saturating narrowings (u, y, t, A, B) are exercised. Recipe arguments left None
    are drawn at random (shuffle, its seed, a warm-up, the decay, the optimizer). ``geometry``: the
    job's model (any the build runs, set by registers), else the build's own."""
    g: Geometry = config.check_geometry(geometry or config.geometry)
    rng = np.random.default_rng(seed)
    cached = samples if cached is None else cached
    room = config.ddr_samples if ddr is not None else config.cache_depth
    if not samples <= cached <= room:
        raise ValueError(f"need samples <= cached <= {room} (the build's cache), got {samples}, {cached}")
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
    if lr is None:  # eta in Q24: up to 16 when extreme, else 1e-3 .. 1
        lr = int(rng.integers(1 << 24, (1 << F.LR_BITS) - 1)) if extreme else int(rng.integers(1 << 14, 1 << 24))
    total = epochs * steps_per_epoch(samples, batch)
    shuffle = bool(rng.random() < 0.5) if shuffle is None else shuffle
    order_seed = int(rng.integers(0, 1 << 32)) if order_seed is None else order_seed
    if warmup is None:
        warmup = int(rng.choice([0, 1, steps_per_epoch(samples, batch), int(rng.integers(0, total + 2))]))
    decay = bool(rng.random() < 0.5) if decay is None else decay
    optimizer = int(rng.choice([o.value for o in Optimizer])) if optimizer is None else optimizer
    job = JobConfig(samples, batch, epochs, lr, exponents, signed, shuffle=shuffle, seed=order_seed,
                    warmup=warmup, decay=decay, optimizer=optimizer)
    return TestVector(config, job, CacheEntries(codes, logits, labels), Adapters(a, b), seed, ddr, g)
