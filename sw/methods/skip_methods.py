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
from ..nn.train import check_finite
from .base import Method

__all__ = ["SkipAdapters", "BatchPlan", "SkipLora", "Skip2Lora", "QuantSkip2Lora", "LOGITS_CHUNK"]

FILL_CHUNK = 128  # samples per base-forward call while filling the cache
LOGITS_CHUNK = 1024  # samples per base-forward call when evaluating (`logits`)
#: Softmax inputs below -EXP_FLOOR (a class e**-30 = 1e-13 times less likely than the top one) are
#: raised to it: the gradient changes by less than 1e-13, and a confident model's far smaller
#: probabilities would otherwise make subnormal floats downstream, which cost the CPU ~100 cycles
#: each (a 2x slower Skip2-LoRA epoch once Adam has made the model confident).
EXP_FLOOR = 30.0


class SkipAdapters:
    """The K skip adapters: ``a[k]`` holds A_k (R, d_k), row block k of ``b`` holds B_k^T (R, C).

    All taps of a batch are handled with 2K small matrix products (see `BatchPlan`). The adapter
    outputs are kept transposed, u^T (K*R, n): ``A_k @ x_k^T`` was the fastest orientation
    of these skinny products with OpenBLAS, and the B-gradient ``u^T g`` then needs no transpose.
    Every A_k and B are views of one flat array ``flat``, and their gradients views of ``grad``
    (same layout: A_0 .. A_{K-1} row-major, then B^T), so an elementwise optimizer updates all
    adapters with one handful of ufunc calls.
    """

    def __init__(self, dims, classes, rank, rng, dtype=np.float32):
        self.dims = [int(d) for d in dims]
        self.classes, self.rank = int(classes), int(rank)
        self.offsets = np.concatenate([[0], np.cumsum(self.dims)]).astype(int)
        r, kr = self.rank, len(self.dims) * self.rank
        self.segs = [slice(self.offsets[k], self.offsets[k + 1]) for k in range(len(self.dims))]
        self.cols = [slice(k * r, (k + 1) * r) for k in range(len(self.dims))]
        self.a_size = r * int(self.offsets[-1])  # A's share of the flat arrays
        self.flat = np.zeros(self.a_size + kr * self.classes, dtype)
        self.grad = np.zeros_like(self.flat)
        self.a, self.ga = self._views(self.flat), self._views(self.grad)
        self.b = self.flat[self.a_size:].reshape(kr, self.classes)
        self.gb = self.grad[self.a_size:].reshape(kr, self.classes)
        # LoRA's usual init: A small random, B = 0 (the output starts equal to the base model's)
        for a, d in zip(self.a, self.dims):
            a[...] = (rng.uniform(-1, 1, (r, d)) / np.sqrt(d)).astype(dtype)
        self.parts = list(zip(self.a, self.segs, self.cols))  # (A_k, its columns of xcat, its rows of u^T)

    def _views(self, flat):
        r = self.rank
        return [flat[r * s.start:r * s.stop].reshape(r, s.stop - s.start) for s in self.segs]

    def optimizer_arrays(self, elementwise: bool):
        """What an optimizer steps: the flat arrays (elementwise optimizers: fewest calls), or each
        matrix A_k (R, d_k) and B_k^T (R, C) with its gradient (optimizers that see rows and columns)."""
        if elementwise:
            return [self.flat], [self.grad]
        return (self.a + [self.b[col] for col in self.cols], self.ga + [self.gb[col] for col in self.cols])

    def A(self, k: int) -> np.ndarray:
        return self.a[k]

    def B(self, k: int) -> np.ndarray:
        return self.b[self.cols[k]].T

    def forward(self, xcat, z):
        """Logits y (n, C) of concatenated taps xcat (n, D) and base logits z (n, C)."""
        return BatchPlan(self, xcat).logits_t(self.b, z.T).T

    def grads(self, xcat, ut, gt):
        """Gradients for the loss whose output gradient is g^T (C, n): dA_k (R, d_k) and dB^T (K*R, C)."""
        st = self.b @ gt  # s_k = B_k^T g for all taps at once, (K*R, n)
        return [st[col] @ xcat[:, seg] for _, seg, col in self.parts], ut @ gt.T


class BatchPlan:
    """One mini-batch's arrays and every per-tap view of them, made once.

    ``x`` (n, D) holds the batch's taps; ``ut`` / ``st`` (K*R, n) the adapter outputs and the
    backward factors; ``grads`` pairs each A-gradient view with its factors. A reused plan
    (Skip2-LoRA fills ``x`` in place every step) spares each step the ~30 small NumPy objects these
    views are, ~10 % of a step.
    """

    def __init__(self, adapters: SkipAdapters, x: np.ndarray):
        kr = adapters.b.shape[0]
        self.x = x
        self.n = x.shape[0]
        self.cols = np.arange(self.n)
        self.ut = np.empty((kr, self.n), adapters.b.dtype)
        self.st = np.empty((kr, self.n), adapters.b.dtype)
        self.forward = [(a, x[:, seg].T, self.ut[col]) for a, seg, col in adapters.parts]
        self.grads = [(ga, self.st[col], x[:, seg]) for ga, seg, col in zip(adapters.ga, adapters.segs, adapters.cols)]

    @classmethod
    def buffer(cls, adapters: SkipAdapters, n: int, dtype) -> "BatchPlan":
        return cls(adapters, np.empty((n, int(adapters.offsets[-1])), dtype))

    def logits_t(self, b, zt):
        """The adapters' forward pass: u_k = A_k x_k into ``ut``, and y^T = z^T + B u (C, n)."""
        for a, xt, u in self.forward:
            np.matmul(a, xt, out=u)
        yt = b.T @ self.ut
        yt += zt
        return yt


def _output_gradient(yt, labels, cols, scale):
    """Softmax cross-entropy on transposed logits y^T (C, n), overwritten with scale * dL/dy^T.
    Returns the shifted label logits and the softmax sums, whose log-sum-exp form of the loss,
    log(sum) - logit, stays finite for every finite logit (a softmax probability would underflow
    to 0 for a confidently wrong sample). Classes along axis 0 and direct ufunc calls: the fewest
    and cheapest NumPy calls for these tiny arrays."""
    yt -= np.maximum.reduce(yt, axis=0)
    y_label = yt[labels, cols]
    np.maximum(yt, -EXP_FLOOR, out=yt)
    np.exp(yt, out=yt)
    sums = np.add.reduce(yt, axis=0)
    yt *= scale / sums
    yt[labels, cols] -= scale
    return y_label, sums, yt


class SkipLora(Method):
    """Skip-LoRA without a cache: the base forward runs every step (backward touches only adapters)."""

    name = "skip-lora"
    uses_output_adapters = True

    def __init__(self, base, *, lr, rank=4, seed=0, optimizer="sgd"):
        super().__init__(base, lr=lr, rank=rank, seed=seed, optimizer=optimizer)
        self._y_label, self._sums = [], []  # per step, for the epoch's loss (finish_epoch)
        dtype = self.net.params[self.net.weight_layers[0].w].dtype
        self.adapters = SkipAdapters(self.net.tap_dims, self.net.classes, rank, self.rng, dtype)
        self._opt_arrays = self.adapters.optimizer_arrays(self.opt.elementwise)

    def base_forward(self, x):
        """Base logits and concatenated taps of a batch (one base forward)."""
        z, taps = self.net.forward(x, taps=True)
        return np.concatenate(taps, axis=1), z

    def batch(self, idx):
        return self.base_forward(self.x[idx]) + (self.y[idx],)

    def step(self, idx):
        self.timer.start("forward")  # Skip-LoRA's base forward is forward work too
        xcat, z, labels = self.batch(idx)
        self.train_step(BatchPlan(self.adapters, xcat), z.T, labels)

    def train_step(self, plan: BatchPlan, zt, labels):
        """One mini-batch (taps in ``plan.x``, base logits z^T (C, n), labels): forward, the batch-mean
        gradients into the adapters' ``grad`` array, and the optimizer's step; the loss is kept for
        `finish_epoch`."""
        t, ad = self.timer, self.adapters
        t.start("forward")
        yt = plan.logits_t(ad.b, zt)
        scale = 1.0 / plan.n  # the mean over the batch's own sample count (a last, shorter batch too)
        y_label, sums, gt = _output_gradient(yt, labels, plan.cols, scale)
        self._y_label.append(y_label)  # the loss is taken once per epoch (finish_epoch)
        self._sums.append(sums)
        t.start("backward")
        np.matmul(ad.b, gt, out=plan.st)  # s_k = B_k^T g / n for every tap, (K*R, n)
        for ga, st, x in plan.grads:
            np.matmul(st, x, out=ga)
        np.matmul(plan.ut, gt.T, out=ad.gb)
        t.start("update")
        self.opt.step(*self._opt_arrays)
        t.stop()

    def finish_epoch(self):
        if not self._y_label:
            return None
        loss = float(np.log(np.concatenate(self._sums)).mean() - np.concatenate(self._y_label).mean())
        self._y_label, self._sums = [], []
        return loss

    def loss_and_grads(self, idx):
        xcat, z, labels = self.batch(idx)
        plan = BatchPlan(self.adapters, xcat)
        yt = plan.logits_t(self.adapters.b, z.T)
        y_label, sums, gt = _output_gradient(yt, labels, plan.cols, 1.0 / plan.n)
        loss = float(np.log(sums).mean() - y_label.mean())
        ga, gb = self.adapters.grads(xcat, plan.ut, gt)
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
        return self.adapters.forward(xcat, z)

    def logits(self, x):
        out = [self.logits_from(*self.base_forward(x[i:i + LOGITS_CHUNK])) for i in range(0, len(x), LOGITS_CHUNK)]
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
        self._plans = {}

    def encode_cache(self, xcat):
        return xcat

    def batch(self, idx):
        return self.cache_x[idx], self.cache_z[idx], self.y[idx]

    def run_epoch(self, order, batch, lrs=None, epoch=1):
        """The epoch's base logits and labels are gathered once; each step copies only its taps into
        a reused batch plan (a gather when the order is shuffled)."""
        n = len(self.y)
        z, labels = (self.cache_z, self.y) if order is None else (self.cache_z[order], self.y[order])
        zt, x = z.T, self.cache_x
        for k, s in enumerate(range(0, n, batch)):
            if lrs is not None:
                self.set_lr(lrs[k])
            plan = self._plan(min(batch, n - s))
            if order is None:
                np.copyto(plan.x, x[s:s + batch])
            else:  # "clip" skips take's slow bounds check: cache_z[order] above already checked them
                np.take(x, order[s:s + batch], axis=0, out=plan.x, mode="clip")
            self.train_step(plan, zt[:, s:s + batch], labels[s:s + batch])
        loss = self.finish_epoch()
        check_finite(loss, f"epoch {epoch}")
        return loss

    def _plan(self, n: int) -> BatchPlan:
        """The reused plan for batches of n samples (a full batch, and the last one if shorter)."""
        if n not in self._plans:
            self._plans[n] = BatchPlan.buffer(self.adapters, n, self.cache_x.dtype)
        return self._plans[n]

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

    def dequantized(self, xcat):
        """Taps (n, D) as the accelerator sees them: 4-bit codes with the cache's scales, as values."""
        off = self.adapters.offsets
        taps = [xcat[:, off[k]:off[k + 1]] for k in range(len(self.adapters.dims))]
        return np.concatenate(self.quantizer.values(self.quantizer.codes(taps)), axis=1)

    def logits(self, x):
        """Inference quantizes the taps with the cache's scales, as the accelerator would see them."""
        out = []
        for i in range(0, len(x), LOGITS_CHUNK):
            xcat, z = self.base_forward(x[i:i + LOGITS_CHUNK])
            out.append(self.logits_from(self.dequantized(xcat), z))
        return np.concatenate(out)

    @property
    def cache_bytes(self) -> int:
        return self.packed_bytes + self.cache_z.nbytes
