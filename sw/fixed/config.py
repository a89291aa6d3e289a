"""Build-time parameters of an accelerator instance: geometry, lanes and cache depth.

The RTL is generated from an `AcceleratorConfig`; the host reads the same numbers back from the
accelerator's read-only geometry registers and checks them against the job it is about to run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .model import Geometry

MAX_TAP_SLOTS = 8  # tap register slots in the (configuration-independent) register map

__all__ = ["MAX_TAP_SLOTS", "AcceleratorConfig", "KV260", "SMALL", "LENET5_FILL", "CONFIGS", "LENET5_GEOMETRY",
           "config_named", "fill_base_of"]

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
    # Run-time geometry: the build's maxima (0: the geometry's own). A build with maxima runs any
    # geometry that fits them (`check_geometry`), set by registers at a job's start; ``geometry``
    # is then the model it is named for (its default job).
    max_taps: int = 0
    max_classes: int = 0
    max_tap_lines: int = 0   # cache lines of all taps together (sum over taps of ceil(d_k / lanes))
    # The PL base (FILL): the key of a shipped integer base (`base_int.shipped`) whose forward pass
    # the build computes to fill the cache from images ("": none, no FILL command).
    fill_base: str = ""

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
        for name in ("max_taps", "max_classes", "max_tap_lines"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, not {v!r}")
        g = self.geometry
        if self.max_taps and not g.taps <= self.max_taps <= MAX_TAP_SLOTS:
            raise ValueError(f"max_taps must be between the geometry's {g.taps} and {MAX_TAP_SLOTS}, not {self.max_taps}")
        if self.max_classes and self.max_classes < g.classes:
            raise ValueError(f"max_classes must be at least the geometry's {g.classes}, not {self.max_classes}")
        own_lines = sum(-(-d // p) for d in g.dims)
        if self.max_tap_lines and self.max_tap_lines < max(own_lines, self.taps_max):
            raise ValueError(f"max_tap_lines must be at least {max(own_lines, self.taps_max)}, not {self.max_tap_lines}")
        if not isinstance(self.fill_base, str):
            raise TypeError(f"fill_base must be the key of a shipped integer base or \"\", not {self.fill_base!r}")
        if self.fill_base:
            try:
                dims, classes = _fill_base_shape(self.fill_base)
                self.check_geometry(Geometry(dims, g.rank, classes))
            except ValueError as exc:
                raise ValueError(f"fill_base {self.fill_base!r}: {exc}") from None

    # -- the build's maxima ------------------------------------------------------------------------
    @property
    def taps_max(self) -> int:
        return self.max_taps or self.geometry.taps

    @property
    def classes_max(self) -> int:
        return self.max_classes or self.geometry.classes

    @property
    def tap_lines_max(self) -> int:
        return self.max_tap_lines or sum(-(-d // self.lanes) for d in self.geometry.dims)

    @property
    def build_geometry(self) -> Geometry:
        """The maxima as a geometry, for sizes only (memories, stream formats): ``taps_max`` taps,
        ``tap_lines_max`` lines (one line a tap, the last tap the rest), ``classes_max`` classes."""
        g, p = self.geometry, self.lanes
        k, lines, c = self.taps_max, self.tap_lines_max, self.classes_max
        if (k, c) == (g.taps, g.classes) and lines == sum(-(-d // p) for d in g.dims):
            return g
        return Geometry((p,) * (k - 1) + (p * (lines - k + 1),), g.rank, c)

    def check_geometry(self, geometry: Geometry) -> Geometry:
        """``geometry`` if this build runs it, else a ValueError naming the limit it breaks."""
        if not isinstance(geometry, Geometry):
            raise TypeError(f"geometry must be a Geometry, not {geometry!r}")
        if geometry == self.geometry:
            return geometry
        lines = sum(-(-d // self.lanes) for d in geometry.dims)
        for what, have, limit in (("taps", geometry.taps, self.taps_max),
                                  ("classes", geometry.classes, self.classes_max),
                                  ("rank", geometry.rank, self.geometry.rank),
                                  (f"cache lines of taps (sum of ceil(d_k / {self.lanes}))", lines, self.tap_lines_max)):
            if have > limit:
                raise ValueError(f"the {self.name} build runs at most {limit} {what}; this model needs {have} "
                                 f"(taps {geometry.dims}, rank {geometry.rank}, {geometry.classes} classes)")
        return geometry

    @property
    def fill_geometry(self) -> Geometry | None:
        """The model the PL base fills entries of (its taps and classes, the build's rank), or None."""
        if not self.fill_base:
            return None
        dims, classes = _fill_base_shape(self.fill_base)
        return Geometry(dims, self.geometry.rank, classes)

    @property
    def ddr(self) -> bool:
        """The build has the DDR cache path."""
        return self.ddr_samples > 0

    def to_dict(self) -> dict:
        return {"name": self.name, **self.geometry.to_dict(), "lanes": self.lanes,
                "cache_depth": self.cache_depth, "ddr_samples": self.ddr_samples, "ddr_batch": self.ddr_batch,
                "max_taps": self.max_taps, "max_classes": self.max_classes, "max_tap_lines": self.max_tap_lines,
                "fill_base": self.fill_base}

    @classmethod
    def from_dict(cls, d: dict) -> "AcceleratorConfig":
        """The inverse of `to_dict` (e.g. a configuration passed to the simulator as JSON)."""
        try:
            return cls(d["name"], Geometry(tuple(d["dims"]), d["rank"], d["classes"]), d["lanes"], d["cache_depth"],
                       d.get("ddr_samples", 0), d.get("ddr_batch", 0),
                       d.get("max_taps", 0), d.get("max_classes", 0), d.get("max_tap_lines", 0),
                       d.get("fill_base", ""))
        except KeyError as exc:
            raise ValueError(f"an accelerator configuration needs {exc.args[0]!r}: {d!r}") from None


@functools.lru_cache(maxsize=None)
def _fill_base_shape(key: str) -> tuple:
    """(tap dims, classes) of the shipped integer base ``key`` (a ValueError naming the shipped ones)."""
    base = fill_base_of(key)
    return tuple(base.tap_dims), base.classes


def fill_base_of(config_or_key):
    """The `IntBase` a build computes on the PL (``config.fill_base``, loaded by `base_int.shipped`),
    or None when it has none."""
    from .base_int import shipped

    key = config_or_key.fill_base if isinstance(config_or_key, AcceleratorConfig) else config_or_key
    return shipped(key) if key else None


# The KV260 build: LeNet-5's five taps, rank 4, 10 classes, 32 lanes (two samples a pass), the
# whole KV260 job (1024 samples) in the on-chip cache, and any job up to the SAMPLES register's
# 65535 samples (mini-batches up to 64) from a cache buffer in DDR.
#
# One bitstream for many models: the geometry is set by registers at a job's start, up to 8 taps,
# 16 classes, rank 4 and 96 cache lines of taps (sum of ceil(d_k / 32): 3,072 codes when each tap
# fills its lines); LeNet-5 takes 82 of them. The limits come from the resources: 1024 on-chip
# entries of 96 + 3 lines fill 50 of the XCK26's 64 UltraRAMs (the DDR path's batch buffer takes
# 8 more), and the head units' products grow with taps x classes x rank.
#
# The base model on the PL (issue 15): the shipped integer LeNet-5 ("lenet5-fmnist") fills the
# on-chip cache from images (the FILL command, docs/pl-fill.md), so the KV260 job runs end to end
# in hardware; any other model (or a job from DDR) is filled on the host as before.
KV260 = AcceleratorConfig("kv260", LENET5_GEOMETRY, lanes=32, cache_depth=1024, ddr_samples=65535, ddr_batch=64,
                          max_taps=8, max_classes=16, max_tap_lines=96, fill_base="lenet5-fmnist")
# A small build for fast simulation and tests.
SMALL = AcceleratorConfig("small", Geometry((12, 7, 5), 2, 3), lanes=4, cache_depth=64, ddr_samples=1024,
                          ddr_batch=8)

# A build with a PL base (the FILL command: the shipped integer LeNet-5 fills the cache from images),
# small enough to simulate: LeNet-5's own geometry, 32 lanes, 64 entries, no DDR path, no maxima.
LENET5_FILL = AcceleratorConfig("lenet5-fill", LENET5_GEOMETRY, lanes=32, cache_depth=64, fill_base="lenet5-fmnist")

CONFIGS = {c.name: c for c in (KV260, SMALL, LENET5_FILL)}


def config_named(config) -> AcceleratorConfig:
    """An `AcceleratorConfig` given itself or by name (``kv260``, ``small``, ``lenet5-fill``)."""
    if isinstance(config, AcceleratorConfig):
        return config
    try:
        return CONFIGS[config]
    except KeyError:
        raise ValueError(f"unknown configuration {config!r}; choose one of {', '.join(CONFIGS)}") from None

