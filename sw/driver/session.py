"""A fine-tuning session: the host's side of Skip2-LoRA with the accelerator.

    session = Session(base_model, backend)          # backend: fixed, sim or pynq
    session.add_samples(x, y)                       # base forward once, 4-bit codes, into the cache
    report = session.finetune(epochs=10, batch=16, lr=0.1)
    session.predict(x_test)                         # base forward + the trained adapters
    session.save_adapters("adapters.npz")           # atomic; load_adapters() checks it

The host owns the base model: it runs each sample's base forward once, quantizes the adapter
inputs with per-tap power-of-two scales fixed by the first samples (`TapQuantizer`), converts
the base logits to the accelerator's format and streams cache entries to the backend. More
samples can be added between jobs (online fine-tuning); they reuse the same scales. Where the
backend keeps them (its on-chip cache or, past it, a DDR cache buffer: the backend's ``cache=``)
changes nothing here: the results are the same bit for bit, ``finetune`` says where they were.

The accelerator runs the base model's geometry (its taps, its classes, the adapters' rank): any
that the backend's build runs (`AcceleratorConfig.check_geometry`: one bitstream, many models);
one beyond the build's maxima is refused with the limit it breaks.

Samples must be scaled as the base model's pretraining data were: a pretrained base carries the
range of its pretraining inputs (``base.input_range``, recorded by `skip2lora.nn.pretrained`).
Values a little outside it give a warning; values far outside it (more than the range's width
beyond either end: raw 0..255 pixels for a model trained on 0..1, or overflowing scales) are
refused, since they would fine-tune to nonsense without any error.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from ..fixed import formats as F
from ..fixed.config import AcceleratorConfig
from ..fixed.model import Adapters, CacheEntries, Geometry, JobConfig, forward
from ..fixed.quantize import TapQuantizer
from ..recipe import DEFAULT_ORDER, DEFAULT_SCHEDULE, accelerator_recipe
from .health import training_health
from .adapters_io import load_adapters_file, save_adapters_file
from .backend import Backend

__all__ = ["Session", "geometry_of", "GeometryError", "InputRangeError", "InputRangeWarning"]

FORWARD_CHUNK = 512
#: The accelerator's default optimizer, and each optimizer's rate tuned on held-out Fashion-MNIST
#: (`skip2lora.hparams`: Quant Skip2-LoRA, a new order every epoch, warm-up + linear decay).
DEFAULT_OPTIMIZER = "adam-pow2"
DEFAULT_RATES = {"adam-pow2": 0.03, "sgd": 0.12}


class InputRangeError(ValueError):
    """Samples far outside the range of the base model's pretraining inputs."""


class InputRangeWarning(UserWarning):
    """Samples somewhat outside the range of the base model's pretraining inputs."""


def geometry_of(net, rank: int = 4) -> Geometry:
    """The accelerator geometry a base model needs: its tap dims, the rank, its classes."""
    return Geometry(tuple(net.tap_dims), rank, net.classes)


class GeometryError(ValueError):
    """The base model's geometry is beyond what the backend's build runs (the message names the limit)."""


class Session:
    def __init__(self, base, backend: Backend, *, seed: int = 0, quantizer: TapQuantizer | None = None,
                 input_range="base", rank: int | None = None):
        """``rank``: the adapters' rank (default: the build's; a lower one runs too). ``input_range``:
        (low, high) of the inputs the base model was trained on; "base" takes the base model's own
        (``base.input_range``, if it has one); None checks nothing. The backend then runs this base
        model's geometry (`Backend.set_geometry`: its loaded entries and adapters are forgotten if it
        ran another)."""
        if not isinstance(backend, Backend):
            raise TypeError(f"backend must be a Backend, not {backend!r}")
        config = backend.config
        if rank is None:
            rank = config.geometry.rank
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
            raise ValueError(f"rank must be a positive integer, not {rank!r}")
        try:
            geometry = geometry_of(base, int(rank))
        except ValueError as exc:
            raise GeometryError(f"the base model cannot run on the accelerator: {exc}") from None
        try:
            config.check_geometry(geometry)
        except ValueError as exc:
            raise GeometryError(str(exc)) from None
        if isinstance(input_range, str) and input_range == "base":
            input_range = getattr(base, "input_range", None)
        if input_range is not None:
            lo, hi = (float(v) for v in input_range)
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise ValueError(f"input_range must be (low, high) with low < high, not {input_range!r}")
            input_range = (lo, hi)
        self.input_range = input_range
        self.base = base
        self.backend = backend
        self.geometry = backend.set_geometry(geometry)
        self.quantizer = quantizer
        self.seed = seed
        self.base_forward_samples = 0
        self.backend.load_adapters(Adapters.lora_init(self.geometry, seed))

    @property
    def config(self) -> AcceleratorConfig:
        return self.backend.config

    @property
    def n_loaded(self) -> int:
        return self.backend.n_loaded

    def _check_backend(self) -> None:
        """The backend still runs this session's model (another Session on it may have set another)."""
        if self.backend.geometry != self.geometry:
            raise RuntimeError(f"the backend now runs another model (taps {self.backend.geometry.dims}, rank "
                               f"{self.backend.geometry.rank}, {self.backend.geometry.classes} classes; another "
                               f"Session set it): its cache and adapters are gone; start a new Session")

    # -- host side: cache entries ---------------------------------------------------------------
    def _check_samples(self, x, y=None):
        x = np.asarray(x)
        shape = tuple(self.base.input_shape)
        if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
            raise ValueError(f"samples must have shape (n, {', '.join(map(str, shape))}), not {x.shape}")
        if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
            raise TypeError(f"samples must be numbers, not {x.dtype}")
        if x.shape[0] == 0:
            raise ValueError("no samples given")
        if not np.all(np.isfinite(x)):
            bad = int(np.flatnonzero(~np.isfinite(x).reshape(len(x), -1).all(axis=1))[0])
            raise ValueError(f"sample {bad} contains NaN or Inf")
        self._check_range(x)
        if y is not None:
            y = np.asarray(y)
            if y.shape != (x.shape[0],):
                raise ValueError(f"labels must have shape ({x.shape[0]},), not {y.shape}")
            if not np.issubdtype(y.dtype, np.integer):
                raise TypeError(f"labels must be integers, not {y.dtype}")
            if y.min() < 0 or y.max() >= self.geometry.classes:
                bad = y[(y < 0) | (y >= self.geometry.classes)][0]
                raise ValueError(f"label {bad} is out of range [0, {self.geometry.classes})")
        return x, y

    def _check_range(self, x) -> None:
        if self.input_range is None:
            return
        lo, hi = self.input_range
        xmin, xmax = float(x.min()), float(x.max())
        if lo <= xmin and xmax <= hi:
            return
        span = hi - lo
        where = (f"samples span [{xmin:.4g}, {xmax:.4g}]; the base model was trained on inputs in "
                 f"[{lo:g}, {hi:g}] (its pretraining data's min and max)")
        if xmin < lo - span or xmax > hi + span:
            hint = (" (raw 8-bit values? divide by 255)" if np.issubdtype(x.dtype, np.integer) and xmax > 1 >= hi
                    else "")
            raise InputRangeError(f"{where}: scale them as its pretraining data were{hint}, or pass "
                                  f"Session(..., input_range=None) to skip this check")
        warnings.warn(f"{where}: values outside it may fine-tune and predict poorly", InputRangeWarning,
                      stacklevel=4)

    def _base_forward(self, x):
        """Base logits and taps, in chunks (each sample's only trip through the base model)."""
        logits, taps = [], []
        for i in range(0, len(x), FORWARD_CHUNK):
            z, t = self.base.forward(x[i:i + FORWARD_CHUNK], taps=True)
            logits.append(z)
            taps.append(t)
        self.base_forward_samples += len(x)
        return np.concatenate(logits), [np.concatenate([t[k] for t in taps]) for k in range(self.geometry.taps)]

    def encode(self, x) -> tuple[np.ndarray, np.ndarray]:
        """4-bit codes (N, D) and fixed-point base logits (N, C) of samples (fits the scales once)."""
        z, taps = self._base_forward(x)
        if self.quantizer is None:
            self.quantizer = TapQuantizer.fit(taps)
        codes = np.concatenate(self.quantizer.codes(taps), axis=1)
        return codes, F.to_fixed(z, F.Z_FRAC, F.Z_BITS).astype(np.int16)

    def add_samples(self, x, y) -> int:
        """Append samples to the accelerator's cache; returns how many entries it now holds."""
        self._check_backend()
        x, y = self._check_samples(x, y)
        self.backend.check_room(len(x))
        codes, z = self.encode(x)
        entries = CacheEntries(codes, z, y.astype(np.int64))
        entries.validate(self.geometry, self.quantizer.signed)
        self.backend.load_cache(entries)
        return self.backend.n_loaded

    def clear_samples(self) -> None:
        self.backend.clear_cache()

    # -- fine-tuning -----------------------------------------------------------------------------
    def job(self, *, epochs: int, batch: int, lr: float | None = None, samples: int | None = None,
            order: str = DEFAULT_ORDER, schedule: str = DEFAULT_SCHEDULE, optimizer: str = DEFAULT_OPTIMIZER,
            order_seed: int | None = None) -> JobConfig:
        """The job registers of a fine-tuning run (`skip2lora.recipe` names the recipe's parts).
        Without ``lr``, the rate tuned on held-out Fashion-MNIST data for the optimizer."""
        if self.quantizer is None:
            raise RuntimeError("add samples before fine-tuning")
        self._check_backend()
        if self.n_loaded == 0:
            raise RuntimeError("the cache is empty (clear_samples() emptied it): add samples before fine-tuning")
        if lr is None:
            lr = DEFAULT_RATES.get(optimizer.split(":")[0])
            if lr is None:
                raise ValueError(f"no default learning rate for optimizer {optimizer!r}: pass lr=")
        samples = self.n_loaded if samples is None else samples
        recipe = accelerator_recipe(samples=samples, batch=batch, order=order, schedule=schedule,
                                    optimizer=optimizer)
        seed = self.seed if order_seed is None else order_seed
        job = JobConfig(samples, batch, epochs, F.lr_register(lr), tuple(self.quantizer.exponents),
                        tuple(self.quantizer.signed), seed=seed & 0xFFFF_FFFF, **recipe)
        return job.validate(self.geometry, self.n_loaded)

    def finetune(self, *, epochs: int = 10, batch: int = 16, lr: float | None = None, samples: int | None = None,
                 order: str = DEFAULT_ORDER, schedule: str = DEFAULT_SCHEDULE, optimizer: str = DEFAULT_OPTIMIZER,
                 order_seed: int | None = None) -> dict:
        """Run one job on the accelerator: the adapters stay there and are read back.

        Returns the cycle count, where the cache entries were (``cache``: "chip" or "ddr") and the
        per-epoch training statistics (correct, loss, saturated weight updates:
        `skip2lora.driver.backend.epoch_stats`) with ``diverged`` judged from them.
        """
        job = self.job(epochs=epochs, batch=batch, lr=lr, samples=samples, order=order, schedule=schedule,
                       optimizer=optimizer, order_seed=order_seed)
        t0 = time.perf_counter()
        out = self.backend.run(job)
        out["wall_seconds"] = time.perf_counter() - t0
        out.setdefault("cache", "chip")  # a backend of another package may not say (it then has no DDR cache)
        out.update(samples=job.samples, batch=job.batch, epochs=job.epochs, lr=job.lr / 2 ** F.LR_FRAC,
                   lr_register=job.lr,
                   order=order, schedule=schedule, optimizer=optimizer, order_seed=job.seed)
        out.update(training_health(out, samples=job.samples, batch=job.batch, geometry=self.geometry))
        return out

    @property
    def adapters(self) -> Adapters:
        self._check_backend()
        return self.backend.read_adapters()

    # -- inference -------------------------------------------------------------------------------
    def logits(self, x, adapters: Adapters | None = None) -> np.ndarray:
        """The accelerator's logits y (Z format integers) for samples: base forward + adapters."""
        x, _ = self._check_samples(x)
        if self.quantizer is None:
            raise RuntimeError("add samples first: the cache's scales are not known yet")
        adapters = self.adapters if adapters is None else adapters
        codes, z = self.encode(x)
        return forward(self.geometry, codes, z, adapters, self.quantizer.exponents)

    def predict(self, x, adapters: Adapters | None = None) -> np.ndarray:
        return self.logits(x, adapters).argmax(axis=1)

    def accuracy(self, x, y, adapters: Adapters | None = None) -> float:
        """The fraction of samples ``x`` predicted as their labels ``y``."""
        n, y = np.shape(x)[:1], np.asarray(y)
        if n and y.shape != n:
            raise ValueError(f"labels must have shape ({n[0]},), one per sample, not {y.shape}")
        return float((self.predict(x, adapters) == y).mean())

    # -- adapters on disk ------------------------------------------------------------------------
    def save_adapters(self, path) -> None:
        save_adapters_file(path, self.adapters, self.geometry, self.quantizer)

    def load_adapters(self, path) -> None:
        adapters, quantizer = load_adapters_file(path, self.geometry)
        if self.quantizer is None:
            self.quantizer = quantizer
        elif quantizer is not None and quantizer.to_dict() != self.quantizer.to_dict():
            raise ValueError(f"{path}: its tap scales {quantizer.to_dict()} differ from this cache's "
                             f"{self.quantizer.to_dict()}")
        self._check_backend()
        self.backend.load_adapters(adapters)
