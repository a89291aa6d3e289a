"""Build-time parameters of an accelerator instance: geometry, lanes and cache depth.

The RTL is generated from an `AcceleratorConfig`; the host reads the same numbers back from the
accelerator's read-only geometry registers and checks them against the job it is about to run.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import Geometry

__all__ = ["AcceleratorConfig", "KV260", "SMALL", "CONFIGS", "LENET5_GEOMETRY", "config_named"]

LENET5_GEOMETRY = Geometry((784, 1176, 400, 120, 84), 4, 10)


@dataclass(frozen=True)
class AcceleratorConfig:
    name: str
    geometry: Geometry
    lanes: int        # P: cached codes consumed per cycle (one cache line); power of two, >= 4
    cache_depth: int  # N_max: cache entries held on chip
    # The DDR cache path (0, 0: none): a job of up to ddr_samples entries, read from a DDR buffer
    # a mini-batch (of up to ddr_batch samples) ahead into an on-chip batch buffer.
    ddr_samples: int = 0
    ddr_batch: int = 0

    def __post_init__(self):
        if not isinstance(self.geometry, Geometry):
            raise TypeError(f"geometry must be a Geometry, not {self.geometry!r}")
        p = self.lanes
        if isinstance(p, bool) or not isinstance(p, int) or p < 4 or p & (p - 1):
            raise ValueError(f"lanes must be a power of two >= 4, not {p!r}")
        if isinstance(self.cache_depth, bool) or not isinstance(self.cache_depth, int) or self.cache_depth < 1:
            raise ValueError(f"cache depth must be a positive integer, not {self.cache_depth!r}")
        for name in ("ddr_samples", "ddr_batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, not {v!r}")
        if (self.ddr_samples == 0) != (self.ddr_batch == 0):
            raise ValueError("a DDR path needs both ddr_samples and ddr_batch (or neither)")
        if self.ddr_batch % 2:
            raise ValueError(f"ddr_batch must be even (a pass takes a sample pair), not {self.ddr_batch}")

    @property
    def ddr(self) -> bool:
        """The build has the DDR cache path."""
        return self.ddr_samples > 0

    def to_dict(self) -> dict:
        return {"name": self.name, **self.geometry.to_dict(), "lanes": self.lanes,
                "cache_depth": self.cache_depth, "ddr_samples": self.ddr_samples, "ddr_batch": self.ddr_batch}

    @classmethod
    def from_dict(cls, d: dict) -> "AcceleratorConfig":
        """The inverse of `to_dict` (e.g. a configuration passed to the simulator as JSON)."""
        try:
            return cls(d["name"], Geometry(tuple(d["dims"]), d["rank"], d["classes"]), d["lanes"], d["cache_depth"],
                       d.get("ddr_samples", 0), d.get("ddr_batch", 0))
        except KeyError as exc:
            raise ValueError(f"an accelerator configuration needs {exc.args[0]!r}: {d!r}") from None


# The KV260 build: LeNet-5's five taps, rank 4, 10 classes, 32 lanes (two samples a pass), the
# whole KV260 job (1024 samples) in the on-chip cache, and any job up to the SAMPLES register's
# 65535 samples (mini-batches up to 64) from a cache buffer in DDR.
KV260 = AcceleratorConfig("kv260", LENET5_GEOMETRY, lanes=32, cache_depth=1024, ddr_samples=65535, ddr_batch=64)
# A small build for fast simulation and tests.
SMALL = AcceleratorConfig("small", Geometry((12, 7, 5), 2, 3), lanes=4, cache_depth=64, ddr_samples=1024,
                          ddr_batch=8)

CONFIGS = {c.name: c for c in (KV260, SMALL)}


def config_named(config) -> AcceleratorConfig:
    """An `AcceleratorConfig` given itself or by name (``kv260``, ``small``)."""
    if isinstance(config, AcceleratorConfig):
        return config
    try:
        return CONFIGS[config]
    except KeyError:
        raise ValueError(f"unknown configuration {config!r}; choose one of {', '.join(CONFIGS)}") from None
