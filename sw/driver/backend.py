"""Backends: where a fine-tuning job runs. Same calls, bit-identical results.

* `FixedBackend` - the bit-exact model (no HDL tools; the fastest way to try things)
* ``SimBackend``  - the accelerator's RTL under cocotb (skip2lora.driver.sim_backend)
* ``PynqBackend`` - a KV260 through PYNQ (skip2lora.driver.pynq_backend)

Backends are built by name through the registry in the package (`skip2lora.driver.make_backend`);
this module knows none of the others. A backend holds the cache entries and adapters the accelerator would hold; the `Session` builds
what it loads. Every backend reports the job's cycle count (the fixed backend from the cycle
model, the others from the accelerator's cycle counter).
"""

from __future__ import annotations

from ..fixed.config import AcceleratorConfig
from ..fixed.cycles import job_cycles
from ..fixed.model import Adapters, CacheEntries, JobConfig, run_job
from ..fixed.packing import Layout

__all__ = ["Backend", "FixedBackend", "AcceleratorError", "BackendUnavailable", "MissingPackageError",
           "epoch_stats"]


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

    def __init__(self, config: AcceleratorConfig):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        self.config = config
        self.layout = Layout(config.geometry, config.lanes)

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
        """Run a job on the loaded cache and adapters; returns its ``cycles`` and the per-epoch
        training statistics the accelerator keeps (`epoch_stats`)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- shared checks -------------------------------------------------------------------------
    def check_room(self, count: int) -> None:
        if self.n_loaded + count > self.config.cache_depth:
            raise ValueError(f"the cache holds {self.config.cache_depth} entries: {self.n_loaded} are loaded, "
                             f"{count} more do not fit")


class FixedBackend(Backend):
    """The bit-exact model standing in for the accelerator."""

    name = "fixed"
    reports_epoch_stats = True

    def __init__(self, config: AcceleratorConfig):
        super().__init__(config)
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
        cache = CacheEntries.concatenate(self._cache)
        result = run_job(self.config.geometry, cache, self._adapters, job)
        self._adapters = result.adapters
        return {"cycles": job_cycles(self.layout, job.samples, job.batch, job.epochs, shuffle=job.shuffle),
                **epoch_stats(result.correct, result.loss, result.saturated)}

