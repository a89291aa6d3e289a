"""Skip-LoRA, Skip2-LoRA and Quant Skip2-LoRA: rank-R adapters from every layer input to the output.

Per sample, with tap inputs x_k and base logits z:  y = z + sum_k B_k A_k x_k.  The base model is
frozen and the adapters only add to its output, so (Skip2) each sample's taps and logits are
computed once, cached, and every later step touches only the cache and the adapters.

All taps are handled at once: the cache holds the concatenated taps (N, D) and the adapters are a
block-diagonal (D, K*R) matrix, so a training step is a handful of NumPy calls whatever K is.
"""

from __future__ import annotations

import numpy as np

from ..fixed.quantize import TapQuantizer
from .base import Method

__all__ = ["SkipAdapters", "SkipLora", "Skip2Lora", "QuantSkip2Lora"]

FILL_CHUNK = 128  # samples per base-forward call while filling the cache


class SkipAdapters:
    """The K skip adapters: ``a[k]`` holds A_k (R, d_k), row block k of ``b`` holds B_k^T (R, C).

    All taps of a batch are handled with 2K small matrix products and no copies of the taps.
    """

    def __init__(self, dims, classes, rank, rng, dtype=np.float32):
        self.dims = [int(d) for d in dims]
        self.classes, self.rank = int(classes), int(rank)
        self.offsets = np.concatenate([[0], np.cumsum(self.dims)]).astype(int)
        r = self.rank
        self.segs = [slice(self.offsets[k], self.offsets[k + 1]) for k in range(len(self.dims))]
        self.cols = [slice(k * r, (k + 1) * r) for k in range(len(self.dims))]
        # LoRA's usual init: A small random, B = 0 (the output starts equal to the base model's)
        self.a = [(rng.uniform(-1, 1, (r, d)) / np.sqrt(d)).astype(dtype) for d in self.dims]
        self.b = np.zeros((len(self.dims) * r, self.classes), dtype)

    def A(self, k: int) -> np.ndarray:
        return self.a[k]

    def B(self, k: int) -> np.ndarray:
        return self.b[self.cols[k]].T

    def forward(self, xcat, z):
        u = np.empty((xcat.shape[0], self.b.shape[0]), self.b.dtype)
        for seg, col, a in zip(self.segs, self.cols, self.a):
            np.matmul(xcat[:, seg], a.T, out=u[:, col])
        y = u @ self.b
        y += z
        return y, u

    def grads(self, xcat, u, g):
        """Gradients for the loss whose output gradient is g: dA_k (R, d_k) and dB^T (K*R, C)."""
        st = self.b @ g.T  # s_k = B_k^T g for all taps at once, (K*R, n)
        return [st[col] @ xcat[:, seg] for seg, col in zip(self.segs, self.cols)], u.T @ g


def _output_gradient(y, labels, rows, scale):
    """Softmax cross-entropy on logits y (overwritten): the labels' probabilities (the loss is
    -mean(log p)) and scale * dL/dy per sample."""
    y -= y.max(axis=1, keepdims=True)
    np.exp(y, out=y)
    y /= y.sum(axis=1, keepdims=True)
    p_label = y[rows, labels]
    y[rows, labels] = p_label - 1
    y *= scale
    return p_label, y


class SkipLora(Method):
    """Skip-LoRA without a cache: the base forward runs every step (backward touches only adapters)."""

    name = "skip-lora"
    uses_output_adapters = True

    def __init__(self, base, *, lr, rank=4, seed=0):
        super().__init__(base, lr=lr, rank=rank, seed=seed)
        self._rows, self._p_label = {}, []
        dtype = self.net.params[self.net.weight_layers[0].w].dtype
        self.adapters = SkipAdapters(self.net.tap_dims, self.net.classes, rank, self.rng, dtype)

    def base_forward(self, x):
        """Base logits and concatenated taps of a batch (one base forward)."""
        z, taps = self.net.forward(x, taps=True)
        return np.concatenate(taps, axis=1), z

    def batch(self, idx):
        return self.base_forward(self.x[idx]) + (self.y[idx],)


    def step(self, idx):
        t, ad = self.timer, self.adapters
        t.start("forward")
        xcat, z, labels = self.batch(idx)
        y, u = ad.forward(xcat, z)
        n = len(labels)
        rows = self._rows.get(n)
        if rows is None:
            rows = self._rows[n] = np.arange(n)
        p_label, g = _output_gradient(y, labels, rows, self.lr / n)  # g carries lr / n
        self._p_label.append(p_label)  # the loss is taken once per epoch (finish_epoch)
        t.start("backward")
        st = ad.b @ g.T  # lr * s_k / n for every tap, (K*R, n)
        t.start("update")
        for a, seg, col in zip(ad.a, ad.segs, ad.cols):
            a -= st[col] @ xcat[:, seg]  # gradient product and SGD step in one
        ad.b -= u.T @ g
        t.stop()

    def finish_epoch(self):
        with np.errstate(divide="ignore", invalid="ignore"):
            loss = -float(np.log(np.concatenate(self._p_label)).mean()) if self._p_label else None
        self._p_label = []
        return loss

    def loss_and_grads(self, idx):
        xcat, z, labels = self.batch(idx)
        y, u = self.adapters.forward(xcat, z)
        p_label, g = _output_gradient(y, labels, np.arange(len(labels)), 1.0 / len(labels))
        loss = -float(np.log(p_label).mean())
        ga, gb = self.adapters.grads(xcat, u, g)
        grads = {}
        for k, col in enumerate(self.adapters.cols):
            grads[f"skip{k}.a"] = ga[k]
            grads[f"skip{k}.b"] = gb[col].T
        return loss, grads

    def trainable(self):
        out = {}
        for k in range(len(self.adapters.dims)):
            out[f"skip{k}.a"] = self.adapters.A(k)
            out[f"skip{k}.b"] = self.adapters.B(k)
        return out

    def logits_from(self, xcat, z):
        return self.adapters.forward(xcat, z)[0]

    def logits(self, x):
        out = [self.logits_from(*self.base_forward(x[i:i + 1024])) for i in range(0, len(x), 1024)]
        return np.concatenate(out)


class Skip2Lora(SkipLora):
    """Skip-LoRA with the forward cache: the base forward runs once per sample, in ``prepare``."""

    name = "skip2-lora"

    def prepare(self, x, y):
        super().prepare(x, y)
        t = self.timer
        t.start("forward")  # the cache fill is the first epoch's forward work
        parts = [self.base_forward(x[i:i + FILL_CHUNK]) for i in range(0, len(x), FILL_CHUNK)]
        self.cache_x = self.encode_cache(np.concatenate([p[0] for p in parts]))
        self.cache_z = np.concatenate([p[1] for p in parts])
        t.stop()
        t.steps -= 1

    def encode_cache(self, xcat):
        return xcat

    def batch(self, idx):
        return self.cache_x[idx], self.cache_z[idx], self.y[idx]

    @property
    def cache_bytes(self) -> int:
        return self.cache_x.nbytes + self.cache_z.nbytes


class QuantSkip2Lora(Skip2Lora):
    """Skip2-LoRA with the activations cached as 4-bit codes (the accelerator's cache format)."""

    name = "quant-skip2-lora"

    def encode_cache(self, xcat):
        off = self.adapters.offsets
        taps = [xcat[:, off[k]:off[k + 1]] for k in range(len(self.adapters.dims))]
        self.quantizer = TapQuantizer.fit(taps)
        codes = self.quantizer.codes(taps)
        self.packed_bytes = sum((c.shape[1] + 1) // 2 for c in codes) * xcat.shape[0]
        # Training reads the dequantized codes; they are exactly what 4 bits can represent.
        return np.concatenate(self.quantizer.values(codes), axis=1)

    def logits(self, x):
        """Inference quantizes the taps with the cache's scales, as the accelerator would see them."""
        out = []
        off = self.adapters.offsets
        for i in range(0, len(x), 1024):
            xcat, z = self.base_forward(x[i:i + 1024])
            taps = [xcat[:, off[k]:off[k + 1]] for k in range(len(self.adapters.dims))]
            deq = np.concatenate(self.quantizer.values(self.quantizer.codes(taps)), axis=1)
            out.append(self.logits_from(deq, z))
        return np.concatenate(out)

    @property
    def cache_bytes(self) -> int:
        return self.packed_bytes + self.cache_z.nbytes
