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

The PL base (``config.fill_base``: a build that computes an integer base on the PL, the FILL
command): ``backend.pl_base`` is that `IntBase` (None without one) and `Backend.fill` streams
quantized images whose cache entries the PL computes, appended after the entries held (N_LOADED
grows), bit for bit `IntBase.encode` + `load_cache`. Filled entries exist on chip only (the host
never sees their codes): a fill whose entries would be placed in DDR is refused, and so is a later
`load_cache` that would move a cache holding filled entries to DDR (``cache="chip"``, or fewer
entries). The backend must run the base's geometry (its taps and classes; any rank).

Predictions on the PL (the PREDICT command, docs/pl-predict.md): `Backend.predict_pl` streams
quantized images to the PL base and returns, for each, y = z + sum_k B_k A_k x_k under the
adapters held (bit for bit `fixed.model.forward` of `IntBase.encode`'s entries at the given
exponents) and its class, with the command's cycle count; the cache and the adapters stay as
they are.
"""

from __future__ import annotations

import numpy as np

from ..fixed.config import AcceleratorConfig, fill_base_of
from ..fixed.cycles import DDR_OUTSTANDING, FETCH_REQUEST, KV260_DDR, DDRTiming, job_cycles
from ..fixed.model import Adapters, CacheEntries, Geometry, JobConfig, forward, run_job
from ..fixed.packing import Layout

_FILL_PLANS: dict = {}  # PL base key -> its `fill_plan.plan_fill` (what the core is built with)

__all__ = ["Backend", "FixedBackend", "AcceleratorError", "BackendUnavailable", "MissingPackageError",
           "epoch_stats", "fill_images", "fill_plan_of", "expected_predict_cycles", "PREDICT_CHUNK", "CACHE_PLACEMENTS", "default_ddr_timing", "largest_ddr_latency", "check_cache_args"]

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


def fill_images(base, x_int) -> np.ndarray:
    """The FILL stream's images from a base's quantized samples ``x_int`` (N, *base.input_shape), as
    `IntBase.quantize_input` gives them: (N, in_size) uint8, NHWC, flattened (an int8 input's
    two's complement bytes)."""
    x = np.asarray(x_int)
    if x.ndim == 4:  # NCHW samples -> NHWC, the engine's order
        x = x.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x.reshape(len(x), -1)).astype(np.int64).astype(np.uint8)


def fill_plan_of(config: AcceleratorConfig):
    """The `fill_plan.FillPlan` a build's PL base is generated with (`fill_plan.plan_fill`'s, as
    `hw.core.Skip2LoRACore` takes it), once per process; None without a PL base."""
    if not config.fill_base:
        return None
    if config.fill_base not in _FILL_PLANS:
        from ..fixed.fill_plan import plan_fill

        _FILL_PLANS[config.fill_base] = plan_fill(fill_base_of(config))
    return _FILL_PLANS[config.fill_base]


def expected_fill_cycles(config: AcceleratorConfig, n: int, first_beat: int = 1) -> int:
    """FILL_CYCLES of ``n`` images with the first beat ``first_beat`` cycles after the command and
    the stream never idle (`fill_plan.fill_command_cycles` of the build's PL base and plan)."""
    from ..fixed.fill_plan import fill_command_cycles

    return fill_command_cycles(fill_base_of(config), fill_plan_of(config), int(n),
                               Layout(config.build_geometry, config.lanes).beat_bits, first_beat)


def expected_predict_cycles(config: AcceleratorConfig, n: int, first_beat: int = 1) -> int:
    """PREDICT_CYCLES of ``n`` images, the stream never idle and the output always taken
    (`fill_plan.predict_command_cycles` of the build's PL base and plan)."""
    from ..fixed.fill_plan import predict_command_cycles

    return predict_command_cycles(fill_base_of(config), fill_plan_of(config), int(n), config, first_beat)


#: images a PREDICT command takes at most (the stream buffers a driver allocates for one command);
#: `Backend.predict_pl` splits longer runs, each command paying the first image's latency again
PREDICT_CHUNK = 4096


def images_to_samples(base, images) -> np.ndarray:
    """The base's integer samples (N, *input_shape) from FILL / PREDICT stream images (`fill_images`)."""
    x = images.astype(np.int64)
    if len(base.input_shape) == 3:  # NHWC bytes -> the base's NCHW samples
        c, h, w = base.input_shape
        x = x.reshape(len(x), h, w, c).transpose(0, 3, 1, 2)
    if base.input_format.signed:
        x = np.where(x > 127, x - 256, x)
    return x.reshape(len(x), *base.input_shape)


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
        self._pl_base = None   # the PL base, loaded when first asked for
        self._pl_filled = 0    # entries held that the PL base filled (on chip only)

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

    # -- the PL base (FILL) -----------------------------------------------------------------------
    @property
    def pl_base(self):
        """The `IntBase` the build computes on the PL (``config.fill_base``), or None without one."""
        if not self.config.fill_base:
            return None
        if getattr(self, "_pl_base", None) is None:
            self._pl_base = fill_base_of(self.config)
        return self._pl_base

    def fill(self, images, labels, exponents) -> dict:
        """Append the cache entries of ``images`` computed by the PL base (the FILL command): ``images``
        (N, in_size) uint8, the base's quantized inputs in NHWC order (`fill_images`), ``labels`` (N,)
        integers, ``exponents`` each tap's cache exponent (`IntBase.encode`'s; the base's calibration
        ``cache_exponents`` need no pass over the samples). Bit for bit ``load_cache`` of
        `IntBase.encode`'s entries. Returns ``fill_cycles`` (FILL_CYCLES) and ``images``."""
        base = self.pl_base
        if base is None:
            raise ValueError(f"the {self.config.name} build has no PL base (config.fill_base is empty): "
                             f"fill needs one; load cache entries made on the host instead (load_cache)")
        images, labels, exponents = self._check_fill(base, images, labels, exponents)
        out = self._fill(base, images, labels, exponents)
        self._pl_filled += len(images)
        return out

    def _fill(self, base, images, labels, exponents) -> dict:
        raise NotImplementedError

    @property
    def has_predict(self) -> bool:
        """The backend predicts on the PL (`predict_pl`): its build has a PL base."""
        return self.pl_base is not None

    def predict_pl(self, images, labels=None, exponents=None) -> dict:
        """Predictions on the PL (the PREDICT command): ``images`` as `fill` takes them, ``labels``
        optional (then ``correct`` counts the images predicted as their label), ``exponents`` the
        cache's tap exponents the adapters were trained at (default: the base's calibration
        ``cache_exponents``, as a PL-filled session's). Returns ``y`` ((n, classes) int64, Z
        format), ``classes`` (n,), ``correct`` (None without labels), ``predict_cycles`` (the
        PREDICT_CYCLES of each command summed; runs longer than `PREDICT_CHUNK` images are split)
        and ``images``. The cache and the adapters are unchanged. (On a board, a PREDICT that fails
        after the receive DMA was armed, or is interrupted, soft-resets the core and the DMA: the
        cache and the adapters must be loaded again.)"""
        base = self.pl_base
        if base is None:
            raise ValueError(f"the {self.config.name} build has no PL base (config.fill_base is empty): "
                             f"predictions on the PL need one; predict on the host instead")
        if exponents is None:
            exponents = base.calibration["cache_exponents"]
        given = labels is not None
        if labels is None:
            labels = np.zeros(len(np.asarray(images)), np.int64)
        images, labels, exponents = self._check_fill(base, images, labels, exponents, room=False)
        ys, classes, cycles = [], [], 0
        for i in range(0, len(images), PREDICT_CHUNK):
            y, c, n_cycles = self._predict_pl(base, images[i:i + PREDICT_CHUNK], labels[i:i + PREDICT_CHUNK],
                                              exponents)
            ys.append(y)
            classes.append(c)
            cycles += int(n_cycles)
        y, classes = np.concatenate(ys), np.concatenate(classes)
        return {"y": y, "classes": classes, "correct": int((classes == labels).sum()) if given else None,
                "predict_cycles": cycles, "images": len(images)}

    def _predict_pl(self, base, images, labels, exponents):
        """One PREDICT: (y, classes, PREDICT_CYCLES)."""
        raise NotImplementedError

    def _check_fill(self, base, images, labels, exponents, room: bool = True):
        """The fill's (or a PREDICT's: ``room`` False) arguments checked against the base, the
        backend's geometry and the cache's room and placement (before anything is sent)."""
        g = self.geometry
        if tuple(g.dims) != tuple(base.tap_dims) or g.classes != base.classes:
            raise ValueError(f"the PL base {base.name!r} fills entries of taps {tuple(base.tap_dims)} and "
                             f"{base.classes} classes; the backend runs taps {g.dims} and {g.classes} classes "
                             f"(set_geometry)")
        size = int(np.prod(base.input_shape))
        images = np.asarray(images)
        if images.ndim != 2 or images.shape[1] != size or images.dtype != np.uint8 or len(images) == 0:
            raise ValueError(f"images must be uint8 of shape (n, {size}) with n >= 1 (the quantized inputs, "
                             f"NHWC: fill_images), not {images.dtype} {images.shape}")
        labels = np.asarray(labels)
        if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be {len(images)} integers, not {labels.dtype} {labels.shape}")
        if labels.min() < 0 or labels.max() >= base.classes:
            raise ValueError(f"labels must be in [0, {base.classes}), found {labels.min()}..{labels.max()}")
        from ..fixed import base_formats as BF

        exps = tuple(exponents)
        if len(exps) != len(base.tap_dims):
            raise ValueError(f"expected {len(base.tap_dims)} tap exponents, got {len(exps)}")
        for k, (e, frac) in enumerate(zip(exps, base.tap_fracs)):
            if isinstance(e, bool) or not isinstance(e, (int, np.integer)):
                raise TypeError(f"tap {k}: exponent must be an integer, not {e!r}")
            lo, hi = max(BF.EXP_MIN, frac), min(BF.EXP_MAX, frac + 31)
            if not lo <= e <= hi:
                raise ValueError(f"tap {k}: the PL base's cache exponent must be in [{lo}, {hi}] (its LSB "
                                 f"exponent {frac} + 0..31), not {e}")
        n = len(images)
        if not room:
            return images, labels.astype(np.int64), tuple(int(e) for e in exps)
        self.check_room(n)
        if self.placement_for(self.n_loaded + n) == "ddr":
            raise ValueError(f"a PL fill writes the on-chip cache only ({self.config.cache_depth} entries; "
                             f"{self.n_loaded} loaded): {n} more would be placed in DDR, where only entries "
                             f"made on the host go; fill fewer, or load host-made entries (load_cache)")
        return images, labels.astype(np.int64), tuple(int(e) for e in exps)

    def _check_load_beside_fill(self, count: int) -> None:
        """A cache holding PL-filled entries (on chip only) cannot move to DDR."""
        if self._pl_filled and self.placement_for(self.n_loaded + count) == "ddr":
            raise ValueError(f"the cache holds {self._pl_filled} entries the PL base filled, which exist on chip "
                             f"only; {count} more would move the cache to DDR: clear the cache first or load at "
                             f"most {self.config.cache_depth - self.n_loaded}")

    # -- where the entries are --------------------------------------------------------------------
    @property
    def cache_limit(self) -> int:
        """The most entries the placement holds: the on-chip cache's depth, or with a DDR path (unless
        ``cache='chip'``) the largest DDR job (DDR_SAMPLES)."""
        if self.cache_placement == "chip" or not self.config.ddr:
            return self.config.cache_depth
        return self.config.ddr_samples

    def placement_for(self, n_loaded: int) -> str:
        """Where ``n_loaded`` entries are kept under this backend's placement: "chip" or "ddr"."""
        if self.cache_placement == "auto":
            return "ddr" if self.config.ddr and n_loaded > self.config.cache_depth else "chip"
        return self.cache_placement

    @property
    def cache_mode(self) -> str:
        """Where the next job's entries are: "chip" (the on-chip cache) or "ddr" (a DDR buffer)."""
        return self.placement_for(self.n_loaded)

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
        self._check_load_beside_fill(len(entries))
        self._cache.append(entries)

    def clear_cache(self):
        self._cache, self._pl_filled = [], 0

    def _forget_job_state(self) -> None:
        self._cache, self._adapters, self._pl_filled = [], None, 0

    def _fill(self, base, images, labels, exponents) -> dict:
        """`IntBase.encode` of the images (what the PL computes, bit for bit) into the cache; its
        ``fill_cycles`` are `fill_plan.fill_command_cycles` with the first beat the cycle after the
        command (``first_beat=1``, a stream waiting for it: `expected_fill_cycles`)."""
        codes, logits, _, signed = base.encode(images_to_samples(base, images), exponents)
        self._cache.append(CacheEntries(codes, logits, labels).validate(self.geometry, signed))
        return {"fill_cycles": expected_fill_cycles(self.config, len(images)), "images": len(images)}

    def _predict_pl(self, base, images, labels, exponents):
        """`fixed.model.forward` of `IntBase.encode`'s entries under the adapters held (what the PL
        computes, bit for bit); PREDICT_CYCLES from `fill_plan.predict_command_cycles`."""
        if self._adapters is None:
            raise RuntimeError("load adapters before predicting")
        codes, logits, _, _ = base.encode(images_to_samples(base, images), exponents)
        y = forward(self.geometry, codes, logits, self._adapters, exponents)
        return y, y.argmax(axis=1), expected_predict_cycles(self.config, len(images))

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

