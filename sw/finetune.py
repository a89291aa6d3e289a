"""One fine-tuning run of the float reference (any method, any data set) and its measured result.

This is what ``skip2lora finetune --backend float`` and ``skip2lora compare`` run. Hyper-parameter
defaults live in `hparams`; every figure in a result is measured in this run.

The data set is a built-in name or the user's own data (an .npz file, an image folder, a `Dataset`
from `skip2lora.data.from_arrays`), the base model the data set's pretrained one or the user's
(``model``: .onnx, TorchScript .pt, project .npz, or a `Network`; see `skip2lora.workload`). The
result's ``hparams`` says which settings were used and where they come from (tuned for a built-in
data set, or the defaults for a new one).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from . import hparams, optim
from .methods import method_class
from .methods.skip_methods import LOGITS_CHUNK
from .nn.train import DivergenceError
from .fixed.order import epoch_order
from .progress import Progress
from .recipe import DEFAULT_ORDER, DEFAULT_SCHEDULE, ORDERS, SCHEDULES

__all__ = ["ORDERS", "SCHEDULES", "DEFAULT_ORDER", "DEFAULT_SCHEDULE", "FinetuneResult", "finetune", "schedule_lrs",
           "select_samples", "validate_run", "used_hparams"]

# The recipe's names (`skip2lora.recipe`): warm-up avoids divergence from the first large gradients
# of a mismatched base model; the decay leaves final weights that no longer bounce with SGD's noise.


def schedule_lrs(lr: float, epoch: int, epochs: int, steps: int, schedule: str) -> np.ndarray:
    """The learning rates of the ``steps`` steps of epoch ``epoch`` (0-based) of ``epochs``."""
    if schedule == "constant":
        return np.full(steps, float(lr))
    t = np.arange(epoch * steps + 1, (epoch + 1) * steps + 1)  # 1-based step of the job
    total = epochs * steps
    decay = (total - t + 1) / max(total - steps, 1)  # 1 right after the warm-up epoch, 1/(T-W) last
    return lr * np.where(t <= steps, t / steps, decay)


@dataclass
class FinetuneResult:
    method: str
    dataset: str
    backend: str
    samples: int
    epochs: int
    batch: int
    lr: float
    seed: int
    rank: int
    order: str = DEFAULT_ORDER
    schedule: str = DEFAULT_SCHEDULE
    optimizer: str = "sgd"  # a `skip2lora.optim` spec
    accuracy_before: float | None = None
    accuracy: float | None = None
    ft_seconds: float | None = None
    epoch_seconds: float | None = None  # mean wall time of the epochs after the first
    epoch_times: list = field(default_factory=list)
    time_per_batch: dict = field(default_factory=dict)  # forward / backward / update seconds
    curve: list = field(default_factory=list)  # test accuracy after each epoch (with --plot)
    losses: list = field(default_factory=list)  # mean training loss per epoch
    max_abs_params: dict = field(default_factory=dict)  # largest |value| of the trained arrays, by kind (a, b, w, ...)
    cache_bytes: int | None = None
    base_forward_samples: int | None = None
    diverged: bool = False
    error: str | None = None
    model: str | None = None  # where the base model came from ("pretrained <key>", a file name)
    hparams: dict = field(default_factory=dict)  # the settings used, their source, and which were given

    def to_dict(self) -> dict:
        return asdict(self)


def validate_run(*, samples, epochs, batch, lr, rank, pool: int, order: str = DEFAULT_ORDER,
                 schedule: str = DEFAULT_SCHEDULE, optimizer: str = "sgd") -> None:
    """Reject impossible run parameters with a message that names the problem."""
    optim.make(optimizer)  # an unknown name or setting raises its own one-line ValueError
    if order not in ORDERS:
        raise ValueError(f"sample order must be one of {', '.join(ORDERS)}, not {order!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"learning-rate schedule must be one of {', '.join(SCHEDULES)}, not {schedule!r}")
    for name, value in (("samples", samples), ("epochs", epochs), ("batch", batch), ("rank", rank)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, not {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be at least 1, not {value}")
    if samples > pool:
        raise ValueError(f"samples ({samples}) exceeds the {pool} fine-tuning samples available")
    if batch > samples:
        raise ValueError(f"batch ({batch}) is larger than the number of samples ({samples})")
    if not isinstance(lr, (int, float, np.floating)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"learning rate must be a positive finite number, not {lr!r}")


def select_samples(pool: int, samples: int, seed: int) -> np.ndarray:
    """The fine-tuning samples of a run: a seeded random subset of the pool, in random order."""
    return np.random.default_rng(seed).permutation(pool)[:samples]


def finetune(method: str, dataset="fmnist-rot75", *, model=None, samples: int | None = None,
             epochs: int | None = None, batch: int | None = None, lr: float | None = None,
             seed: int = 0, rank: int = 4, data_dir=None, curves: bool = False,
             eval_split: str = "test", order: str = DEFAULT_ORDER, schedule: str = DEFAULT_SCHEDULE,
             optimizer: str | None = None, progress: bool | None = None, cache: dict | None = None) -> FinetuneResult:
    """Fine-tune ``method`` on ``dataset`` (a built-in name, an .npz file, an image folder or a `Dataset`)
    from base model ``model`` (None: the built-in data set's pretrained base) and evaluate it on ``eval_split``.

    ``optimizer`` is a `skip2lora.optim` spec (default: the method's in `hparams`); without ``lr``
    the rate tuned for that optimizer is used. ``cache``: a dict kept across runs of one process
    (sweeps) that holds the loaded data set, the base model and the base model's forward pass of
    the evaluation split, so that a run costs only its fine-tuning and the adapters' evaluation.
    """
    from .workload import base_for, hparams_key, open_data

    cls = method_class(method)
    ds = _memo(cache, ("dataset", dataset, data_dir), lambda: open_data(dataset, data_dir))
    pool, evaluation = _pool_and_evaluation(ds, eval_split)
    d = hparams.defaults(hparams_key(ds), method, optimizer=optimizer, pool=len(pool))
    given = [k for k, v in (("samples", samples), ("epochs", epochs), ("batch", batch), ("lr", lr),
                            ("optimizer", optimizer)) if v is not None]
    optimizer = d["optimizer"]
    if lr is None and d["lr"] is None:
        raise ValueError(f"no learning rate was tuned for optimizer {optimizer} with {method} on {ds.name}; "
                         "give one (lr=...)")
    samples = len(pool) if samples is None and d["samples"] is None else (samples or d["samples"])
    epochs = d["epochs"] if epochs is None else epochs
    batch = d["batch"] if batch is None else batch
    lr = d["lr"] if lr is None else lr
    validate_run(samples=samples, epochs=epochs, batch=batch, lr=lr, rank=rank, pool=len(pool), order=order,
                 schedule=schedule, optimizer=optimizer)

    where = (dataset,) if model is None else (dataset, model)  # cache keys: the data set and its base model
    base, label = _memo(cache, ("base", *where, data_dir),
                        lambda: base_for(ds, model, data_dir, progress=progress))
    idx = select_samples(len(pool), samples, seed)
    x, y = np.asarray(pool.x[idx]), np.asarray(pool.y[idx])
    result = FinetuneResult(method, ds.name, "float", samples, epochs, batch, float(lr), seed, rank, order, schedule,
                            optim.make(optimizer).spec, model=label)
    result.hparams = used_hparams(d, samples=samples, epochs=epochs, batch=batch, lr=lr, order=order,
                                  schedule=schedule, optimizer=result.optimizer, given=given)
    result.accuracy_before = _memo(cache, ("accuracy before", *where, data_dir, eval_split),
                                   lambda: base.accuracy(evaluation.x, evaluation.y))

    model = cls(base, lr=lr, rank=rank, seed=seed, optimizer=optimizer)  # from here on: the run's model
    evaluate = None
    if curves or (cache is not None and model.uses_output_adapters):
        evaluate = _evaluator(model, evaluation, cache, (*where, data_dir, eval_split))
    order_rng = np.random.default_rng(seed + 1)
    steps = -(-samples // batch)
    try:
        # A diverging run overflows on its way to NaN: detected below, no need for warnings.
        with Progress(epochs, f"{method} {dataset}", enabled=progress, unit=" epochs") as bar, \
                np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for epoch in range(epochs):
                t_epoch = time.perf_counter()
                if epoch == 0:
                    model.prepare(x, y)  # Skip2-LoRA's cache fill belongs to the first epoch
                # fixed: batches are slices of the (seeded random) sample order, the same every epoch
                if order == "shuffle":
                    perm = order_rng.permutation(samples)
                elif order == "feistel":  # the accelerator's order (SEED = the run's seed)
                    perm = epoch_order(samples, seed & 0xFFFF_FFFF, epoch)
                else:
                    perm = None
                lrs = schedule_lrs(lr, epoch, epochs, steps, schedule)
                epoch_loss = model.run_epoch(perm, batch, lrs, epoch + 1)
                result.epoch_times.append(time.perf_counter() - t_epoch)
                result.losses.append(epoch_loss)
                bar.update(1)
                if curves:  # after the epoch's clock stopped: not fine-tuning time
                    result.curve.append(evaluate())
    except (DivergenceError, FloatingPointError) as exc:
        result.diverged, result.error = True, str(exc)
        return result
    for name, p in model.trainable().items():
        if not np.all(np.isfinite(p)):
            result.diverged, result.error = True, f"training diverged: parameter {name} is not finite"
            return result
    for name, p in model.trainable().items():
        kind = name.rsplit(".", 1)[-1]
        result.max_abs_params[kind] = max(result.max_abs_params.get(kind, 0.0), float(np.abs(p).max(initial=0)))
    result.ft_seconds = float(sum(result.epoch_times))
    result.base_forward_samples = model.net.forward_samples
    result.epoch_seconds = float(np.mean(result.epoch_times[1:])) if epochs > 1 else None
    result.time_per_batch = model.timer.per_batch()
    result.accuracy = evaluate() if evaluate is not None else _accuracy(model, evaluation)
    result.cache_bytes = getattr(model, "cache_bytes", None)
    return result


def _memo(cache: dict | None, key, make):
    if cache is None:
        return make()
    if key not in cache:
        cache[key] = make()
    return cache[key]


def _pool_and_evaluation(ds, eval_split: str):
    """Fine-tuning pool and evaluation data. ``holdout`` tunes hyper-parameters on data sets without a
    validation split: every 4th block of 16 consecutive fine-tuning rows is held out (blocks keep
    overlapping HAR windows together), the rest is the pool; the test split is never touched."""
    if eval_split == "holdout":
        held = (np.arange(len(ds.finetune)) // 16) % 4 == 3
        return ds.finetune.subset(np.flatnonzero(~held)), ds.finetune.subset(np.flatnonzero(held))
    if eval_split not in ("test", "validation"):
        raise ValueError(f"evaluation split must be test, validation or holdout, not {eval_split!r}")
    evaluation = getattr(ds, eval_split)
    if evaluation is None:
        raise ValueError(f"data set {ds.name} has no {eval_split} split (use holdout)")
    return ds.finetune, evaluation


def _accuracy(model, split) -> float:
    return float((model.logits(split.x).argmax(axis=1) == split.y).mean())


def _evaluator(model, split, cache=None, key=None):
    """Accuracy of the current model; adapter-on-output methods reuse one base forward of the split
    (in the chunks `logits` uses, so the result is the same), kept in ``cache`` across runs."""
    if not model.uses_output_adapters:
        return lambda: _accuracy(model, split)
    seen = model.net.forward_samples
    starts = range(0, len(split.x), LOGITS_CHUNK)
    chunks = _memo(cache, ("base forward",) + tuple(key or ()),
                   lambda: [model.base_forward(split.x[i:i + LOGITS_CHUNK]) for i in starts])
    model.net.forward_samples = seen  # evaluation is not part of fine-tuning

    def evaluate():  # the quantizer exists only once prepare() filled the cache
        correct = 0
        for i, (xcat, z) in enumerate(chunks):
            if hasattr(model, "quantizer"):
                xcat = model.dequantized(xcat)
            labels = split.y[i * LOGITS_CHUNK:(i + 1) * LOGITS_CHUNK]
            correct += int((model.logits_from(xcat, z).argmax(axis=1) == labels).sum())
        return correct / len(split.y)

    return evaluate


def used_hparams(defaults: dict, *, given=(), **used) -> dict:
    """The settings a run used (``used``), where the defaults come from, and which the caller gave."""
    return {**used, "source": defaults["source"], "given": sorted(given)}
