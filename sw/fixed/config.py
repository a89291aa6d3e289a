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

    def __post_init__(self):
        if not isinstance(self.geometry, Geometry):
            raise TypeError(f"geometry must be a Geometry, not {self.geometry!r}")
        p = self.lanes
        if isinstance(p, bool) or not isinstance(p, int) or p < 4 or p & (p - 1):
            raise ValueError(f"lanes must be a power of two >= 4, not {p!r}")
        if isinstance(self.cache_depth, bool) or not isinstance(self.cache_depth, int) or self.cache_depth < 1:
            raise ValueError(f"cache depth must be a positive integer, not {self.cache_depth!r}")

    def to_dict(self) -> dict:
        return {"name": self.name, **self.geometry.to_dict(), "lanes": self.lanes,
                "cache_depth": self.cache_depth}

    @classmethod
    def from_dict(cls, d: dict) -> "AcceleratorConfig":
        """The inverse of `to_dict` (e.g. a configuration passed to the simulator as JSON)."""
        try:
            return cls(d["name"], Geometry(tuple(d["dims"]), d["rank"], d["classes"]), d["lanes"], d["cache_depth"])
        except KeyError as exc:
            raise ValueError(f"an accelerator configuration needs {exc.args[0]!r}: {d!r}") from None


# The KV260 build: LeNet-5's five taps, rank 4, 10 classes, 32 lanes (128 multipliers per pass),
# the whole KV260 job on chip. 32 lanes keep the A and dA memories in block RAM and the logic
# under half the device's LUTs; the job takes 1.75 M cycles (8.8 ms at 200 MHz).
KV260 = AcceleratorConfig("kv260", LENET5_GEOMETRY, lanes=32, cache_depth=1024)
# A small build for fast simulation and tests.
SMALL = AcceleratorConfig("small", Geometry((12, 7, 5), 2, 3), lanes=4, cache_depth=64)

CONFIGS = {c.name: c for c in (KV260, SMALL)}


def config_named(config) -> AcceleratorConfig:
    """An `AcceleratorConfig` given itself or by name (``kv260``, ``small``)."""
    if isinstance(config, AcceleratorConfig):
        return config
    try:
        return CONFIGS[config]
    except KeyError:
        raise ValueError(f"unknown configuration {config!r}; choose one of {', '.join(CONFIGS)}") from None
