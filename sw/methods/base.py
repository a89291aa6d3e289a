"""What every fine-tuning method provides, and the phase timer the comparison tables need."""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np

from .. import optim
from ..nn.train import check_finite

__all__ = ["Method", "PhaseTimer"]


class PhaseTimer:
    """Accumulates wall time per phase (forward / backward / update) over the training steps."""

    PHASES = ("forward", "backward", "update")

    def __init__(self):
        self.seconds = dict.fromkeys(self.PHASES, 0.0)
        self.steps = 0
        self._t = 0.0
        self._phase = None

    def start(self, phase: str) -> None:
        now = time.perf_counter()
        if self._phase is not None:
            self.seconds[self._phase] += now - self._t
        self._phase, self._t = phase, now

    def stop(self) -> None:
        if self._phase is not None:
            self.seconds[self._phase] += time.perf_counter() - self._t
        self._phase = None
        self.steps += 1

    @contextmanager
    def paused(self):
        """Exclude some work (e.g. a per-epoch evaluation) from every phase."""
        phase = self._phase
        self.stop()
        self.steps -= 1
        try:
            yield
        finally:
            if phase is not None:
                self.start(phase)

    def per_batch(self) -> dict[str, float]:
        n = max(self.steps, 1)
        return {k: v / n for k, v in self.seconds.items()}


class Method:
    """A fine-tuning method bound to one copy of the base model.

    ``prepare`` runs once before the first step with all fine-tuning samples (Skip2-LoRA fills
    its cache there); ``step`` does one mini-batch of forward, backward and optimizer update
    (``optimizer``: a `skip2lora.optim` spec, on the gradient averaged over the batch's samples)
    and returns the batch loss; ``run_epoch`` does one pass over the samples; ``logits``
    evaluates the current model.
    """

    name = ""
    #: whether the method can read the cached test-set base forward (adapters on the output only)
    uses_output_adapters = False

    def __init__(self, base, *, lr: float, rank: int = 4, seed: int = 0, optimizer="sgd"):
        self.opt = optim.make(optimizer, lr)
        self.net = base.copy()
        self.rank = int(rank)
        self.rng = np.random.default_rng(seed)
        self.timer = PhaseTimer()

    @property
    def lr(self) -> float:
        """The optimizer's learning rate for the next step."""
        return self.opt.lr

    def set_lr(self, lr: float) -> None:
        """The learning rate of the following steps (a schedule changes it from step to step)."""
        self.opt.lr = float(lr)

    def prepare(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def run_epoch(self, order, batch: int, lrs=None, epoch: int = 1) -> float:
        """One epoch: mini-batches of ``batch`` samples taken from ``order`` (an index array, or None
        for 0..n-1 as slices), step k at learning rate ``lrs[k]`` (default: the current one); returns
        the epoch's mean training loss. A NaN/Inf loss raises `DivergenceError` naming epoch and step."""
        n = len(self.y)
        total = 0.0
        for k, s in enumerate(range(0, n, batch)):
            if lrs is not None:
                self.set_lr(lrs[k])
            loss = self.step(slice(s, s + batch) if order is None else order[s:s + batch])
            if loss is not None:
                check_finite(loss, f"epoch {epoch}, step {s // batch + 1}")
                total += loss * (min(n, s + batch) - s)
        epoch_loss = self.finish_epoch()
        epoch_loss = total / n if epoch_loss is None else epoch_loss
        check_finite(epoch_loss, f"epoch {epoch}")
        return epoch_loss

    def step(self, idx) -> float | None:
        """One mini-batch; returns its mean loss, or None when the method reports it per epoch."""
        raise NotImplementedError

    def finish_epoch(self) -> float | None:
        """The epoch's mean training loss, for methods whose steps return None."""
        return None

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.net.predict_logits(x)

    def trainable(self) -> dict[str, np.ndarray]:
        """Name -> array of every trainable parameter (the finite-difference checks use it)."""
        raise NotImplementedError

    def loss_and_grads(self, idx: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        """Loss and analytic gradients of one batch without updating (for gradient checks)."""
        raise NotImplementedError
