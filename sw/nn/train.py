"""Loss, the divergence check and the pretraining loop of the float reference models (the
optimizers live in `skip2lora.optim`)."""

from __future__ import annotations

import numpy as np

from ..optim import Adam
from ..progress import Progress

__all__ = ["softmax", "softmax_xent", "DivergenceError", "check_finite", "pretrain"]


class DivergenceError(RuntimeError):
    """Training produced a NaN/Inf loss or parameter: reported as divergence, never as accuracy."""


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def softmax_xent(logits: np.ndarray, labels: np.ndarray):
    """Mean cross-entropy of a batch and its gradient w.r.t. the logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    n = logits.shape[0]
    rows = np.arange(n)
    loss = float((np.log(s[:, 0]) - z[rows, labels]).mean())  # log-sum-exp: no clamping needed
    p = e / s
    p[rows, labels] -= 1
    return loss, p / n


def check_finite(loss: float, where: str) -> None:
    if not np.isfinite(loss):
        raise DivergenceError(f"training diverged: loss is {loss} at {where} (learning rate too high?)")


def pretrain(net, x, y, *, epochs: int, batch: int, lr: float, seed: int, progress: bool | None = None):
    """Train every base parameter with Adam (batch-norm layers in training mode); returns loss per epoch."""
    rng = np.random.default_rng(seed)
    opt = Adam(lr)
    want = set(net.base_param_names)
    steps = (len(x) + batch - 1) // batch
    losses = []
    with Progress(epochs * steps, f"pretrain {net.arch}", enabled=progress) as bar:
        for epoch in range(epochs):
            order = rng.permutation(len(x))
            total = 0.0
            for i in range(steps):
                idx = order[i * batch:(i + 1) * batch]
                logits, ctxs = net.forward(x[idx], train=True, record=True)
                loss, dlogits = softmax_xent(logits, y[idx])
                check_finite(loss, f"pretraining epoch {epoch + 1}")
                opt.step(net.params, net.backward(ctxs, dlogits, want))
                total += loss * len(idx)
                bar.update(1, f"loss {loss:.3f}")
            losses.append(total / len(x))
    return losses
