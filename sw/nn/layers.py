"""Layers of the float reference models, in NumPy, with explicit forward and backward passes.

Every layer works on a whole batch at once (no per-sample Python loops) and keeps what its
backward pass needs in a small context object, so the fine-tuning methods can choose which
gradients to compute: a frozen layer is only asked for the gradient of its input, a layer with
trainable parameters also for theirs. Images are NHWC inside the network (the im2col product
then needs no transposes); parameters live in a flat ``dict`` owned by the model.

Weight layers (`Dense`, `Conv2d`) optionally carry a LoRA adapter ``W + B A`` (A: R x fan_in,
B: out x R) on their im2col form, which is what LoRA-All / LoRA-Last / FT-All-LoRA train.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["Layer", "Dense", "Conv2d", "ReLU", "MaxPool2", "Flatten", "BatchNorm"]


class Layer:
    """Base class: ``forward(params, x, train, record) -> (y, ctx)``, ``backward(params, ctx, dy, want) -> (dx, grads)``.

    ``record=False`` promises that no backward pass follows, so a layer may skip keeping its context.

    ``want`` is the set of parameter names whose gradients are needed; ``dx`` is computed only
    when the caller passes ``need_dx=True`` (the first layer of a network never needs it).
    """

    name: str = ""
    param_names: tuple[str, ...] = ()

    def init_params(self, rng: np.random.Generator, dtype) -> dict[str, np.ndarray]:
        return {}

    def forward(self, params, x, train=False, record=True):
        raise NotImplementedError

    def backward(self, params, ctx, dy, want=frozenset(), need_dx=True):
        raise NotImplementedError


class _Weighted(Layer):
    """Shared LoRA-aware product ``y = xc W^T + b (+ (xc A^T) B^T)`` on a 2-D patch matrix xc."""

    def __init__(self, name: str, fan_in: int, out_features: int):
        self.name = name
        self.fan_in = int(fan_in)
        self.out_features = int(out_features)
        self.w, self.b = f"{name}.w", f"{name}.b"
        self.lora_a, self.lora_b = f"{name}.lora_a", f"{name}.lora_b"
        self.param_names = (self.w, self.b)

    def init_params(self, rng, dtype):
        # He-uniform for ReLU networks; biases start at zero.
        bound = np.sqrt(6.0 / self.fan_in)
        return {
            self.w: rng.uniform(-bound, bound, (self.out_features, self.fan_in)).astype(dtype),
            self.b: np.zeros(self.out_features, dtype),
        }

    def init_lora(self, rng, rank: int, dtype) -> dict[str, np.ndarray]:
        """LoRA's usual init: A uniform in +-1/sqrt(fan_in), B = 0 (output unchanged at start)."""
        bound = 1.0 / np.sqrt(self.fan_in)
        return {
            self.lora_a: rng.uniform(-bound, bound, (rank, self.fan_in)).astype(dtype),
            self.lora_b: np.zeros((self.out_features, rank), dtype),
        }

    def _matmul_forward(self, params, xc):
        y = xc @ params[self.w].T
        y += params[self.b]
        t = None
        if self.lora_a in params:
            t = xc @ params[self.lora_a].T
            y += t @ params[self.lora_b].T
        return y, t

    def _matmul_backward(self, params, xc, t, dy2, want, need_dx):
        grads = {}
        if self.w in want:
            grads[self.w] = dy2.T @ xc
        if self.b in want:
            grads[self.b] = dy2.sum(axis=0)
        dxc = None
        if t is not None:
            db = dy2 @ params[self.lora_b]  # (M, R): gradient at the adapter's bottleneck
            if self.lora_b in want:
                grads[self.lora_b] = dy2.T @ t
            if self.lora_a in want:
                grads[self.lora_a] = db.T @ xc
            if need_dx:
                dxc = dy2 @ params[self.w] + db @ params[self.lora_a]
        elif need_dx:
            dxc = dy2 @ params[self.w]
        return dxc, grads


class Dense(_Weighted):
    """Fully connected layer on (n, fan_in) inputs."""

    def __init__(self, name, in_features, out_features):
        super().__init__(name, in_features, out_features)

    def forward(self, params, x, train=False, record=True):
        y, t = self._matmul_forward(params, x)
        return y, (x, t)

    def backward(self, params, ctx, dy, want=frozenset(), need_dx=True):
        x, t = ctx
        return self._matmul_backward(params, x, t, dy, want, need_dx)


class Conv2d(_Weighted):
    """2-D convolution (stride 1, zero padding) on NHWC images as one im2col matrix product.

    The weight matrix is (out, in_ch * k * k) with the patch flattened in (channel, ky, kx) order.
    """

    def __init__(self, name, in_channels, out_channels, kernel, padding=0):
        super().__init__(name, in_channels * kernel * kernel, out_channels)
        self.in_channels, self.kernel, self.padding = int(in_channels), int(kernel), int(padding)

    def _im2col(self, x):
        p = self.padding
        if p:
            x = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        win = sliding_window_view(x, (self.kernel, self.kernel), axis=(1, 2))  # n,oh,ow,c,k,k
        n, oh, ow = win.shape[:3]
        return win.reshape(n * oh * ow, self.fan_in), (n, oh, ow)

    def forward(self, params, x, train=False, record=True):
        if x.ndim != 4 or x.shape[3] != self.in_channels:
            raise ValueError(f"{self.name}: expected NHWC input with {self.in_channels} channels, got shape {x.shape}")
        if not record and self.lora_a not in params:
            return self._banded_forward(params, x), None
        cols, (n, oh, ow) = self._im2col(x)
        y, t = self._matmul_forward(params, cols)
        return y.reshape(n, oh, ow, self.out_features), (cols, t, x.shape)

    def _banded_forward(self, params, x):
        """The convolution as k banded matrix products over image rows (one per kernel row): no
        im2col copy (k*k times the data), about twice as fast for these small layers. Used when
        no backward pass follows (no recorded context)."""
        k, p, c, o = self.kernel, self.padding, self.in_channels, self.out_features
        n, h, w, _ = x.shape
        xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0))) if p else x
        oh, ow = h + 2 * p - k + 1, w + 2 * p - k + 1
        wk = params[self.w].reshape(o, c, k, k)
        band = np.zeros((k, xp.shape[2], c, ow, o), x.dtype)  # [ky, input col, channel, output col, out]
        cols = np.arange(ow)
        for kx in range(k):
            band[:, cols + kx, :, cols, :] = wk[:, :, :, kx].transpose(2, 1, 0)[None]  # (ow, k, c, o)
        band = band.reshape(k, xp.shape[2] * c, ow * o)
        rows = xp.reshape(n, xp.shape[1], -1)
        y = rows[:, 0:oh].reshape(n * oh, -1) @ band[0]
        for ky in range(1, k):
            y += rows[:, ky:ky + oh].reshape(n * oh, -1) @ band[ky]
        y = y.reshape(n, oh, ow, o)
        y += params[self.b]
        return y

    def backward(self, params, ctx, dy, want=frozenset(), need_dx=True):
        cols, t, xshape = ctx
        dy2 = dy.reshape(-1, self.out_features)
        dcols, grads = self._matmul_backward(params, cols, t, dy2, want, need_dx)
        dx = self._col2im(dcols, xshape) if need_dx else None
        return dx, grads

    def _col2im(self, dcols, xshape):
        n, h, w, c = xshape
        k, p = self.kernel, self.padding
        hp, wp = h + 2 * p, w + 2 * p
        oh, ow = hp - k + 1, wp - k + 1
        # One transposing copy makes every kernel offset's slice contiguous.
        d = np.ascontiguousarray(dcols.reshape(n, oh, ow, c, k, k).transpose(4, 5, 0, 1, 2, 3))
        dxp = np.zeros((n, hp, wp, c), dcols.dtype)
        for ky in range(k):  # k*k slice additions: loops over the kernel, never over samples
            for kx in range(k):
                dxp[:, ky:ky + oh, kx:kx + ow, :] += d[ky, kx]
        return dxp[:, p:p + h, p:p + w, :] if p else dxp


class ReLU(Layer):
    def __init__(self, name="relu"):
        self.name = name

    def forward(self, params, x, train=False, record=True):
        y = np.maximum(x, 0)
        return y, y > 0

    def backward(self, params, ctx, dy, want=frozenset(), need_dx=True):
        return (dy * ctx if need_dx else None), {}


class MaxPool2(Layer):
    """2x2 max pooling, stride 2, on NHWC (the gradient goes to the first maximum of a window)."""

    def __init__(self, name="pool"):
        self.name = name

    def forward(self, params, x, train=False, record=True):
        views = (x[:, 0::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 0::2], x[:, 1::2, 1::2])
        y = np.maximum(np.maximum(views[0], views[1]), np.maximum(views[2], views[3]))
        return y, (x, y)

    def backward(self, params, ctx, dy, want=frozenset(), need_dx=True):
        if not need_dx:
            return None, {}
        x, y = ctx
        dx = np.zeros_like(x)
        taken = np.zeros(y.shape, bool)
        for oy in (0, 1):
            for ox in (0, 1):
                hit = (x[:, oy::2, ox::2] == y) & ~taken
                taken |= hit
                dx[:, oy::2, ox::2] = dy * hit
        return dx, {}


class Flatten(Layer):
    def __init__(self, name="flatten"):
        self.name = name

    def forward(self, params, x, train=False, record=True):
        return x.reshape(x.shape[0], -1), x.shape

    def backward(self, params, ctx, dy, want=frozenset(), need_dx=True):
        return (dy.reshape(ctx) if need_dx else None), {}


class BatchNorm(Layer):
    """Batch norm over features of (n, f) inputs.

    Training mode (pretraining) normalizes with the batch statistics and updates running
    averages; inference mode (fine-tuning and test) uses the frozen running statistics, so a
    sample's base forward never depends on its batch — which is what makes caching valid.
    """

    def __init__(self, name, features, momentum=0.1, eps=1e-5):
        self.name = name
        self.features = int(features)
        self.momentum, self.eps = momentum, eps
        self.gamma, self.beta = f"{name}.gamma", f"{name}.beta"
        self.mean, self.var = f"{name}.running_mean", f"{name}.running_var"
        self.param_names = (self.gamma, self.beta)
        self.buffer_names = (self.mean, self.var)

    def init_params(self, rng, dtype):
        f = self.features
        return {self.gamma: np.ones(f, dtype), self.beta: np.zeros(f, dtype),
                self.mean: np.zeros(f, dtype), self.var: np.ones(f, dtype)}

    def forward(self, params, x, train=False, record=True):
        if train:
            mu, var = x.mean(axis=0), x.var(axis=0)
            m = self.momentum
            params[self.mean] = ((1 - m) * params[self.mean] + m * mu).astype(x.dtype)
            params[self.var] = ((1 - m) * params[self.var] + m * var * x.shape[0] / max(x.shape[0] - 1, 1)).astype(x.dtype)
        else:
            mu, var = params[self.mean], params[self.var]
        inv = 1.0 / np.sqrt(var + self.eps)
        xhat = (x - mu) * inv
        return xhat * params[self.gamma] + params[self.beta], (xhat, inv, train)

    def backward(self, params, ctx, dy, want=frozenset(), need_dx=True):
        xhat, inv, train = ctx
        grads = {}
        if self.gamma in want:
            grads[self.gamma] = (dy * xhat).sum(axis=0)
        if self.beta in want:
            grads[self.beta] = dy.sum(axis=0)
        dx = None
        if need_dx:
            dxhat = dy * params[self.gamma]
            if train:
                n = dy.shape[0]
                dx = inv / n * (n * dxhat - dxhat.sum(axis=0) - xhat * (dxhat * xhat).sum(axis=0))
            else:
                dx = dxhat * inv
        return dx, grads
