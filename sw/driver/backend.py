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

Run-time geometry: one build runs any model within its maxima (`AcceleratorConfig.check_geometry`).
A backend runs the jobs of one model at a time, ``backend.geometry`` (default: the model the build
is named for, ``config.geometry``), set by `Backend.set_geometry` (the `Session` sets its base
model's); ``backend.layout`` is that model's layout (its entries' lines, what the DDR reader
reads), ``backend.build_layout`` the build's (the sizes of the streams it takes and sends).
Changing the geometry forgets the loaded entries and adapters (they are the other model's).
"""

from __future__ import annotations

import numpy as np

from ..fixed.config import AcceleratorConfig
from ..fixed.cycles import DDR_OUTSTANDING, FETCH_REQUEST, KV260_DDR, DDRTiming, job_cycles
from ..fixed.model import Adapters, CacheEntries, Geometry, JobConfig, run_job
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
        #: the build's layout: the sizes of the cache entries and adapter images its streams carry
        self.build_layout = Layout(config.build_geometry, config.lanes)
        #: the job's model (`set_geometry`) and its layout
        self.geometry = config.geometry
        self.layout = Layout(config.geometry, config.lanes)
        #: the ``cache=`` setting: "auto", "chip" or "ddr"
        self.cache_placement = cache
        self._ddr_timing_given = ddr_timing  # None: the default for the job's entries (`_default_ddr_timing`)
        if ddr_timing is None and config.ddr:
            try:
                ddr_timing = self._default_ddr_timing(self.layout)
            except ValueError:
                if cache != "chip":
                    raise
        #: the memory the cycle figures of DDR jobs assume (None: the build has no DDR path)
        self.ddr_timing = ddr_timing if config.ddr else None

    # -- the job's geometry -----------------------------------------------------------------------
    def _default_ddr_timing(self, layout: Layout) -> DDRTiming:
        """The memory DDR jobs of ``layout``'s entries assume unless told (`default_ddr_timing`)."""
        return default_ddr_timing(layout)

    def _ddr_timing_for(self, layout: Layout) -> DDRTiming | None:
        """The DDR timing of jobs of ``layout``'s model (the one given, checked against its entries,
        or the default), None when none applies (no DDR path; entries the cycle model does not time
        from DDR and a placement that can stay on chip); a ValueError when the placement needs one."""
        if not self.config.ddr:
            return None
        given = self._ddr_timing_given
        try:
            if given is not None:
                try:
                    given.fetch_cycles(layout, 1)
                except ValueError as exc:
                    raise ValueError(f"ddr_timing: {exc}") from None
                return given
            return self._default_ddr_timing(layout)
        except ValueError:
            if self.cache_placement == "chip":
                return None
            if self.cache_placement == "auto" and given is None:
                return None  # a job of more entries than the on-chip cache holds is refused (check_ddr_job)
            raise

    def set_geometry(self, geometry: Geometry | None = None) -> Geometry:
        """Run the jobs of ``geometry`` from now on (None: the build's own model, ``config.geometry``);
        a ValueError naming the limit if the build does not run it. A new geometry forgets the loaded
        cache entries and adapters (load them again); the same one changes nothing."""
        g = self.config.check_geometry(self.config.geometry if geometry is None else geometry)
        if g == self.geometry:
            return g
        layout = Layout(g, self.config.lanes)
        ddr_timing = self._ddr_timing_for(layout)  # may refuse: nothing has changed yet
        self._forget_job_state()
        self.geometry, self.layout, self.ddr_timing = g, layout, ddr_timing
        return g

    def _forget_job_state(self) -> None:
        """Drop the loaded cache entries and adapters (the geometry changes)."""
        raise NotImplementedError

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
        """A job run from DDR takes mini-batches of at most DDR_BATCH samples: refuse it before it runs
        (and one whose entries the cycle model does not time from DDR)."""
        c = self.config
        if self.ddr_timing is None:
            raise ValueError(f"a job from the DDR cache needs cache entries of at least {FETCH_REQUEST} lines (the "
                             f"cycle model's DDR timing); this model's take {self.layout.sample_lines} on the "
                             f"{c.name} build: load at most {c.cache_depth} entries to run on chip")
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
                          ddr=self.ddr_timing if ddr else None, build=self.config)


class FixedBackend(Backend):
    """The bit-exact model standing in for the accelerator: it runs the job's geometry as it is (the
    build's padding changes no result), its cycles the cycle model's of that geometry on the build."""

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

    def _forget_job_state(self) -> None:
        self._cache, self._adapters = [], None

    def load_adapters(self, adapters):
        self._adapters = adapters.copy().validate(self.geometry)

    def read_adapters(self):
        if self._adapters is None:
            raise RuntimeError("no adapters loaded")
        return self._adapters.copy()

    def run(self, job):
        if self._adapters is None:
            raise RuntimeError("load adapters before running a job")
        if not self._cache:
            raise ValueError("the cache is empty: load cache entries first")
        job.validate(self.geometry, self.n_loaded)
        mode = self.cache_mode
        if mode == "ddr":
            self.check_ddr_job(job)
        cycles = self.expected_cycles(job, mode)
        cache = CacheEntries.concatenate(self._cache)
        result = run_job(self.geometry, cache, self._adapters, job)  # the job's own model, bit-exact
        self._adapters = result.adapters
        return {"cycles": cycles, "cache": mode, **epoch_stats(result.correct, result.loss, result.saturated)}

