"""Backends: where a fine-tuning job runs. Same calls, bit-identical results.

* `FixedBackend` - the bit-exact model (no HDL tools; the fastest way to try things)
* ``SimBackend``  - the accelerator's RTL under cocotb (skip2lora.driver.sim_backend)
* ``PynqBackend`` - a KV260 through PYNQ (skip2lora.driver.pynq_backend)

Backends are built by name through the registry in the package (`skip2lora.driver.make_backend`);
this module knows none of the others. A backend holds the cache entries and adapters the accelerator would hold; the `Session` builds
what it loads. Every backend reports the job's cycle count (the fixed backend from the cycle
model, the others from the accelerator's cycle counter).

Where the cache entries live (``cache=``, every backend): ``"chip"`` the on-chip cache only
(``config.cache_depth`` entries); ``"ddr"`` always a cache buffer in DDR (builds with the DDR
path: up to ``config.ddr_samples`` entries, mini-batches up to ``config.ddr_batch``); ``"auto"``
(the default) on chip while the loaded entries fit, from DDR beyond (if the build has the path).
``backend.cache_mode`` says where the next job's entries are, a job's result says where they were
(``"cache"``), and ``backend.ddr_timing`` is the memory the cycle figures of DDR jobs assume.
"""

from __future__ import annotations

import numpy as np

from ..fixed.config import AcceleratorConfig
from ..fixed.cycles import DDR_OUTSTANDING, FETCH_REQUEST, KV260_DDR, DDRTiming, job_cycles
from ..fixed.model import Adapters, CacheEntries, JobConfig, run_job
from ..fixed.packing import Layout

__all__ = ["Backend", "FixedBackend", "AcceleratorError", "BackendUnavailable", "MissingPackageError",
           "epoch_stats", "CACHE_PLACEMENTS", "default_ddr_timing", "largest_ddr_latency", "check_cache_args"]

#: Where a backend keeps the loaded cache entries (``cache=``): see the module's docstring.
CACHE_PLACEMENTS = ("auto", "chip", "ddr")


def _layout_of(layout_or_config) -> Layout:
    if isinstance(layout_or_config, Layout):
        return layout_or_config
    if isinstance(layout_or_config, AcceleratorConfig):
        return Layout(layout_or_config.geometry, layout_or_config.lanes)
    raise TypeError(f"expected a Layout or an AcceleratorConfig, not {layout_or_config!r}")


def largest_ddr_latency(layout_or_config) -> int | None:
    """The largest DDR latency (cycles to a burst's first beat) the cycle model covers for a build's
    entries (`DDRTiming.fetch_cycles`), or None when it covers none (entries under 6 lines)."""
    s = _layout_of(layout_or_config).sample_lines
    largest = (DDR_OUTSTANDING - 1) * s - FETCH_REQUEST
    return largest if s >= FETCH_REQUEST and largest >= 0 else None


def default_ddr_timing(layout_or_config) -> DDRTiming:
    """The memory a backend's DDR cycle figures assume unless told otherwise: the KV260's assumed
    memory (`cycles.KV260_DDR`) if the cycle model covers its latency for this build's entries,
    else the largest latency the model covers (its ``source`` says so)."""
    layout = _layout_of(layout_or_config)
    largest = largest_ddr_latency(layout)
    if largest is None:
        raise ValueError(f"the cycle model covers no DDR latency for {layout.sample_lines}-line cache entries "
                         f"(at least {FETCH_REQUEST} lines are needed)")
    if KV260_DDR.latency <= largest:
        return KV260_DDR
    return DDRTiming(largest, f"the largest latency the cycle model covers for {layout.sample_lines}-line entries "
                              f"(the KV260's assumed {KV260_DDR.latency} cycles is beyond it), then a line a cycle")


def check_cache_args(cache, ddr_timing, config: AcceleratorConfig | None = None) -> None:
    """The checks of a backend's ``cache=`` and ``ddr_timing=`` arguments (with ``config``: against
    that build too), made before anything is started."""
    if not isinstance(cache, str):
        raise TypeError(f"cache must be one of {', '.join(map(repr, CACHE_PLACEMENTS))}, not {cache!r}")
    if cache not in CACHE_PLACEMENTS:
        raise ValueError(f"cache must be one of {', '.join(map(repr, CACHE_PLACEMENTS))}, not {cache!r}")
    if ddr_timing is not None and not isinstance(ddr_timing, DDRTiming):
        raise TypeError(f"ddr_timing must be a skip2lora.fixed.cycles.DDRTiming or None, not {ddr_timing!r}")
    if config is None:
        return
    if cache == "ddr" and not config.ddr:
        raise ValueError(f"cache='ddr' needs a build with the DDR cache path; the {config.name} build has none "
                         f"(DDR_SAMPLES = 0): use cache='chip' or 'auto' (its on-chip cache holds "
                         f"{config.cache_depth} entries)")
    if ddr_timing is not None and config.ddr:
        try:
            ddr_timing.fetch_cycles(_layout_of(config), 1)
        except ValueError as exc:
            raise ValueError(f"ddr_timing: {exc}") from None


def epoch_stats(correct, loss, saturated) -> dict:
    """A job's per-epoch statistics as every backend reports them (the STAT_* registers' values):
    training samples classified right, the sum of the per-sample losses (-log2 p in Q8) and the
    weight updates clamped to the weight range; ``correct`` is the last epoch's count."""
    return {"correct": int(correct[-1]), "correct_per_epoch": [int(c) for c in correct],
            "loss_sum_per_epoch": [int(v) for v in loss],
            "saturated_per_epoch": [min(int(v), (1 << 32) - 1) for v in saturated]}


class AcceleratorError(RuntimeError):
    """The accelerator (or its simulation) reported an error, or did not answer in time."""


class BackendUnavailable(RuntimeError):
    """A backend cannot run in this environment: a package, a tool or a bitstream is missing (the
    message says which, and what to do instead)."""


class MissingPackageError(BackendUnavailable, ImportError):
    """A Python package the backend needs is not installed."""


class Backend:
    name = ""
    # True when run() reports ``correct_per_epoch`` (training samples classified right in each epoch,
    # counted by the accelerator while it trains): what `--plot` draws on the accelerator backends.
    reports_epoch_stats = True  # every backend reports the per-epoch statistics (STAT_*)

    def __init__(self, config: AcceleratorConfig, *, cache: str = "auto", ddr_timing: DDRTiming | None = None):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        check_cache_args(cache, ddr_timing, config)
        self.config = config
        self.layout = Layout(config.geometry, config.lanes)
        #: the ``cache=`` setting: "auto", "chip" or "ddr"
        self.cache_placement = cache
        if ddr_timing is None and config.ddr:
            try:
                ddr_timing = default_ddr_timing(self.layout)
            except ValueError:
                if cache != "chip":
                    raise
        #: the memory the cycle figures of DDR jobs assume (None: the build has no DDR path)
        self.ddr_timing = ddr_timing if config.ddr else None

    # -- what every backend implements ---------------------------------------------------------
    @property
    def n_loaded(self) -> int:
        raise NotImplementedError

    def load_cache(self, entries: CacheEntries) -> None:
        """Append entries to the accelerator's cache."""
        raise NotImplementedError

    def clear_cache(self) -> None:
        raise NotImplementedError

    def load_adapters(self, adapters: Adapters) -> None:
        raise NotImplementedError

    def read_adapters(self) -> Adapters:
        raise NotImplementedError

    def run(self, job: JobConfig) -> dict:
        """Run a job on the loaded cache and adapters; returns its ``cycles``, where its entries were
        (``cache``: "chip" or "ddr", `cache_mode`) and the per-epoch training statistics the
        accelerator keeps (`epoch_stats`)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- where the entries are --------------------------------------------------------------------
    @property
    def cache_limit(self) -> int:
        """The most entries the placement holds: the on-chip cache's depth, or with a DDR path (unless
        ``cache='chip'``) the largest DDR job (DDR_SAMPLES)."""
        if self.cache_placement == "chip" or not self.config.ddr:
            return self.config.cache_depth
        return self.config.ddr_samples

    def _placement_for(self, n_loaded: int) -> str:
        """Where ``n_loaded`` entries are kept under this backend's placement: "chip" or "ddr"."""
        if self.cache_placement == "auto":
            return "ddr" if self.config.ddr and n_loaded > self.config.cache_depth else "chip"
        return self.cache_placement

    @property
    def cache_mode(self) -> str:
        """Where the next job's entries are: "chip" (the on-chip cache) or "ddr" (a DDR buffer)."""
        return self._placement_for(self.n_loaded)

    # -- shared checks -------------------------------------------------------------------------
    def check_room(self, count: int) -> None:
        """Refuse ``count`` more entries when the placement's limit would be passed (before anything is
        loaded), saying which limit and what to do instead."""
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
            raise ValueError(f"count must be a non-negative integer, not {count!r}")
        n, c = self.n_loaded, self.config
        if n + count <= self.cache_limit:
            return
        clear = " or clear the cache (clear_samples) first" if n else ""
        if self.cache_limit == c.cache_depth:  # the on-chip cache's limit
            if c.ddr:
                hint = f"cache='ddr' (or 'auto') runs up to {c.ddr_samples} from DDR{',' + clear if n else ''}"
            else:
                hint = f"the {c.name} build has no DDR cache path: load fewer{clear}"
            raise ValueError(f"the on-chip cache holds {c.cache_depth} entries: {n} are loaded, {count} more do "
                             f"not fit; {hint}")
        raise ValueError(f"the DDR cache runs jobs of up to {c.ddr_samples} entries (DDR_SAMPLES, the SAMPLES "
                         f"register's range): {n} are loaded, {count} more do not fit; load fewer{clear}")

    def check_ddr_job(self, job: JobConfig) -> None:
        """A job run from DDR takes mini-batches of at most DDR_BATCH samples: refuse it before it runs."""
        c = self.config
        if job.batch > c.ddr_batch:
            if self.cache_placement == "auto":
                other = f"or load at most {c.cache_depth} entries to run on chip"
            else:
                other = f"or cache='chip' / 'auto' with at most {c.cache_depth} entries to run on chip"
            raise ValueError(f"a job from the DDR cache takes mini-batches of at most {c.ddr_batch} samples (the "
                             f"{c.name} build's DDR_BATCH), not {job.batch}: use batch <= {c.ddr_batch}, {other}")

    def expected_cycles(self, job: JobConfig, cache_mode: str | None = None) -> int:
        """The cycle model's count for ``job`` where its entries are (DDR: under `ddr_timing`)."""
        ddr = (cache_mode or self.cache_mode) == "ddr"
        return job_cycles(self.layout, job.samples, job.batch, job.epochs, shuffle=job.shuffle,
                          ddr=self.ddr_timing if ddr else None)


class FixedBackend(Backend):
    """The bit-exact model standing in for the accelerator."""

    name = "fixed"
    reports_epoch_stats = True

    def __init__(self, config: AcceleratorConfig, *, cache: str = "auto", ddr_timing: DDRTiming | None = None):
        """``cache``: where the entries are ("auto", "chip", "ddr"); ``ddr_timing``: the memory the
        DDR jobs' cycle counts assume (default: `default_ddr_timing`)."""
        super().__init__(config, cache=cache, ddr_timing=ddr_timing)
        self._cache: list[CacheEntries] = []
        self._adapters: Adapters | None = None

    @property
    def n_loaded(self) -> int:
        return sum(len(c) for c in self._cache)

    def load_cache(self, entries):
        self.check_room(len(entries))
        self._cache.append(entries)

    def clear_cache(self):
        self._cache = []

    def load_adapters(self, adapters):
        self._adapters = adapters.copy().validate(self.config.geometry)

    def read_adapters(self):
        if self._adapters is None:
            raise RuntimeError("no adapters loaded")
        return self._adapters.copy()

    def run(self, job):
        if self._adapters is None:
            raise RuntimeError("load adapters before running a job")
        if not self._cache:
            raise ValueError("the cache is empty: load cache entries first")
        job.validate(self.config.geometry, self.n_loaded)
        mode = self.cache_mode
        if mode == "ddr":
            self.check_ddr_job(job)
        cycles = self.expected_cycles(job, mode)
        cache = CacheEntries.concatenate(self._cache)
        result = run_job(self.config.geometry, cache, self._adapters, job)
        self._adapters = result.adapters
        return {"cycles": cycles, "cache": mode, **epoch_stats(result.correct, result.loss, result.saturated)}

