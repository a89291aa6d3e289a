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

Where the cache entries are computed (``fill=``): ``"host"`` as above; ``"pl"`` on the backend's
PL base (a build with ``config.fill_base``, `Backend.fill`): the host only quantizes the samples'
inputs (`IntBase.quantize_input`) and streams them, the PL computes the integer base's taps and
logits and the cache codes at the base's calibration exponents (``calibration["cache_exponents"]``:
no pass over the samples). The session's model is then that integer base: `logits`, `predict`
and `accuracy` run its forward (`IntBase.encode` at the same exponents) with the adapters, as
the entries trained on were made; on a backend that predicts on the PL (`Backend.has_predict`)
they run there (the PREDICT command: images in, y out), bit for bit the same (``on="host"`` runs
them on the host). ``"auto"`` (the default) is "pl" when the backend has a PL base
and the session's base is its float model (the shipped pretrained weights of the same key, or
the `IntBase` itself), else "host"; and "host" after all when the first samples added need the
DDR cache (PL-filled entries exist on chip only). ``finetune``'s report says which ran (``fill``).

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
from ..fixed.base_int import IntBase
from ..recipe import DEFAULT_ORDER, DEFAULT_SCHEDULE, accelerator_recipe
from .health import training_health
from .adapters_io import load_adapters_file, save_adapters_file
from .backend import Backend, fill_images

__all__ = ["Session", "geometry_of", "GeometryError", "InputRangeError", "InputRangeWarning", "FILL_CHOICES",
           "PREDICT_CHOICES", "is_float_model_of"]

FORWARD_CHUNK = 512
#: Where `Session.logits` / `predict` run (``on=``): see `Session.predicts_on_pl`.
PREDICT_CHOICES = ("auto", "pl", "host")
#: The accelerator's default optimizer, and each optimizer's rate tuned on held-out Fashion-MNIST
#: (`skip2lora.hparams`: Quant Skip2-LoRA, a new order every epoch, warm-up + linear decay).
DEFAULT_OPTIMIZER = "adam-pow2"
DEFAULT_RATES = {"adam-pow2": 0.03, "sgd": 0.12}
#: Where a session's cache entries are computed (``Session(fill=)``): see the module's docstring.
FILL_CHOICES = ("auto", "pl", "host")


class InputRangeError(ValueError):
    """Samples far outside the range of the base model's pretraining inputs."""


class InputRangeWarning(UserWarning):
    """Samples somewhat outside the range of the base model's pretraining inputs."""


def geometry_of(net, rank: int = 4) -> Geometry:
    """The accelerator geometry a base model needs: its tap dims, the rank, its classes."""
    return Geometry(tuple(net.tap_dims), rank, net.classes)


class GeometryError(ValueError):
    """The base model's geometry is beyond what the backend's build runs (the message names the limit)."""


_SHIPPED_DIGESTS: dict = {}  # pretrained key -> digest of its shipped float weights (or None)


def _weights_digest(params: dict, names) -> str:
    import hashlib

    h = hashlib.sha256()
    for name in sorted(names):
        a = np.ascontiguousarray(np.asarray(params[name], np.float32))
        h.update(name.encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def is_float_model_of(net, key: str) -> bool:
    """Whether ``net`` (a `skip2lora.nn.network.Network`) is the shipped pretrained base ``key``
    (its float weights equal the package's ``pretrained/<key>.npz``): the model a shipped integer
    base of that key (`base_int.shipped`) was calibrated from."""
    names = getattr(net, "base_param_names", None)
    params = getattr(net, "params", None)
    if not names or not isinstance(params, dict) or not set(names) <= set(params):
        return False
    if key not in _SHIPPED_DIGESTS:
        from ..nn.pretrained import _load, package_dir

        try:
            found = _load(package_dir(), key)
        except (OSError, RuntimeError, ValueError, KeyError):
            found = None
        shipped = found[0] if found else None
        _SHIPPED_DIGESTS[key] = (None if shipped is None else
                                 (tuple(sorted(shipped.base_param_names)),
                                  _weights_digest(shipped.params, shipped.base_param_names)))
    want = _SHIPPED_DIGESTS[key]
    return want is not None and tuple(sorted(names)) == want[0] and _weights_digest(params, names) == want[1]


class Session:
    def __init__(self, base, backend: Backend, *, seed: int = 0, quantizer: TapQuantizer | None = None,
                 input_range="base", rank: int | None = None, fill: str = "auto"):
        """``rank``: the adapters' rank (default: the build's; a lower one runs too). ``input_range``:
        (low, high) of the inputs the base model was trained on; "base" takes the base model's own
        (``base.input_range``, if it has one); None checks nothing. The backend then runs this base
        model's geometry (`Backend.set_geometry`: its loaded entries and adapters are forgotten if it
        ran another). ``fill``: where the cache entries are computed, "auto", "pl" (the backend's PL
        base) or "host" (see the module's docstring); ``quantizer`` with "pl": the exponents the PL
        fills with (default: the PL base's calibration ``cache_exponents``)."""
        if not isinstance(backend, Backend):
            raise TypeError(f"backend must be a Backend, not {backend!r}")
        if not isinstance(fill, str) or fill not in FILL_CHOICES:
            raise ValueError(f"fill must be one of {', '.join(map(repr, FILL_CHOICES))}, not {fill!r}")
        config = backend.config
        pl_base = backend.pl_base
        if fill == "pl" and pl_base is None:
            raise ValueError(f"fill='pl' needs a backend with a PL base; the {config.name} build has none "
                             f"(config.fill_base): use fill='host'")
        #: fill="auto" chose "pl": the first samples may still turn it to "host" (past the on-chip cache)
        self._fill_auto = fill == "auto"
        self._quantizer_given = quantizer is not None
        if fill == "auto":
            fill = "pl" if pl_base is not None and self._is_pl_model(base, pl_base, config.fill_base) else "host"
        if fill == "pl" and (tuple(base.tap_dims) != tuple(pl_base.tap_dims) or base.classes != pl_base.classes):
            raise ValueError(f"fill='pl': the PL base {pl_base.name!r} computes taps {tuple(pl_base.tap_dims)} and "
                             f"{pl_base.classes} classes; this base model has taps {tuple(base.tap_dims)} and "
                             f"{base.classes} classes: use fill='host'")
        if fill == "host" and isinstance(base, IntBase):
            raise ValueError(f"the integer base {base.name!r} fills the cache on the PL only; this backend's build "
                             f"has {'the PL base ' + repr(pl_base.name) if pl_base else 'no PL base'}: "
                             f"pass its float model for a host fill")
        #: where the cache entries are computed: "pl" (the backend's PL base) or "host"
        self.fill = fill
        #: the integer base the PL fills with (fill="pl"): the session's model; None with fill="host"
        self.int_base = pl_base if fill == "pl" else None
        if fill == "pl" and quantizer is None:
            quantizer = TapQuantizer(pl_base.calibration["cache_exponents"], pl_base.tap_signed)
        #: the fills run so far (fill="pl"): the backend's reports (``fill_cycles``)
        self.fills: list[dict] = []
        #: the last `logits` / `predict` call: where it ran ("pl" or "host"), its images, and on the
        #: PL its PREDICT_CYCLES
        self.last_prediction: dict | None = None
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

    @staticmethod
    def _is_pl_model(base, pl_base, key: str) -> bool:
        """``base`` is the PL base's model: that `IntBase` (same name and geometry) or its float model."""
        if isinstance(base, IntBase):
            return (base.name == pl_base.name and list(base.tap_dims) == list(pl_base.tap_dims)
                    and base.classes == pl_base.classes)
        return is_float_model_of(base, key)

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
        """4-bit codes (N, D) and fixed-point base logits (N, C) of samples (fits the scales once).
        With fill="pl", the integer base's (`IntBase.encode` at the PL fill's exponents): what the
        PL computes for these samples."""
        if self.fill == "pl":
            codes, z, _, _ = self.int_base.encode(self.int_base.quantize_input(x), self.quantizer.exponents)
            self.base_forward_samples += len(x)
            return codes, z
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
        if (self.fill == "pl" and self._fill_auto and self.backend.n_loaded == 0 and not isinstance(self.base, IntBase)
                and self.backend.placement_for(len(x)) == "ddr"):
            # PL-filled entries exist on chip only: a first load that needs the DDR cache is made on the host
            self.fill, self.int_base = "host", None
            if not self._quantizer_given:
                self.quantizer = None
        if self.fill == "pl":  # the PL base computes the entries: the host only quantizes the inputs
            images = fill_images(self.int_base, self.int_base.quantize_input(x))
            self.fills.append(self.backend.fill(images, y.astype(np.int64), self.quantizer.exponents))
            return self.backend.n_loaded
        codes, z = self.encode(x)
        entries = CacheEntries(codes, z, y.astype(np.int64))
        entries.validate(self.geometry, self.quantizer.signed)
        self.backend.load_cache(entries)
        return self.backend.n_loaded

    def clear_samples(self) -> None:
        self.backend.clear_cache()
        self.fills = []

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
        out["fill"] = self.fill  # where the cache entries were computed: "pl" or "host"
        if self.fill == "pl":
            out["fill_cycles"] = sum(int(f["fill_cycles"]) for f in self.fills)  # every fill so far
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
    def predicts_on_pl(self, adapters: Adapters | None = None, on: str = "auto") -> bool:
        """Whether `logits` runs on the PL: ``on`` "auto" (when the session fills on the PL, the
        backend predicts there and the adapters are the backend's), "pl" (that, or an error
        saying why not) or "host"."""
        if on not in PREDICT_CHOICES:
            raise ValueError(f"on must be one of {', '.join(map(repr, PREDICT_CHOICES))}, not {on!r}")
        if on == "host":
            return False
        why = None
        if self.fill != "pl":
            why = "the session fills its cache on the host (fill='host'): its model is the float base"
        elif adapters is not None:
            why = "the PL predicts with the adapters the backend holds, not given ones"
        elif not self.backend.has_predict:
            why = f"the {self.backend.name} backend's build has no PREDICT command"
        if why and on == "pl":
            raise ValueError(f"on='pl': {why}; use on='host'")
        return why is None

    def logits(self, x, adapters: Adapters | None = None, *, on: str = "auto") -> np.ndarray:
        """The accelerator's logits y (Z format integers) for samples: base forward + adapters.
        ``on``: where they are computed (`predicts_on_pl`); ``last_prediction`` says where and,
        on the PL, the PREDICT_CYCLES."""
        x, _ = self._check_samples(x)
        if self.quantizer is None:
            raise RuntimeError("add samples first: the cache's scales are not known yet")
        if self.predicts_on_pl(adapters, on) and len(x):
            self._check_backend()
            images = fill_images(self.int_base, self.int_base.quantize_input(x))
            out = self.backend.predict_pl(images, None, self.quantizer.exponents)
            self.last_prediction = {"on": "pl", "images": len(x), "predict_cycles": out["predict_cycles"]}
            return out["y"]
        adapters = self.adapters if adapters is None else adapters
        codes, z = self.encode(x)
        self.last_prediction = {"on": "host", "images": len(x)}
        return forward(self.geometry, codes, z, adapters, self.quantizer.exponents)

    def predict(self, x, adapters: Adapters | None = None, *, on: str = "auto") -> np.ndarray:
        return self.logits(x, adapters, on=on).argmax(axis=1)

    def accuracy(self, x, y, adapters: Adapters | None = None, *, on: str = "auto") -> float:
        """The fraction of samples ``x`` predicted as their labels ``y``."""
        n, y = np.shape(x)[:1], np.asarray(y)
        if n and y.shape != n:
            raise ValueError(f"labels must have shape ({n[0]},), one per sample, not {y.shape}")
        return float((self.predict(x, adapters, on=on) == y).mean())

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
