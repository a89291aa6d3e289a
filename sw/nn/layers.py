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

__all__ = ["Layer", "Dense", "Conv2d", "ReLU", "MaxPool2", "MaxPool2d", "AvgPool2d", "Flatten", "BatchNorm",
           "PADDING_MODES", "LAYER_TYPES", "layer_from_spec"]


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

    def spec(self) -> dict:
        """What `layer_from_spec` needs to rebuild this layer (JSON-able; ``type`` names the class)."""
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

    def spec(self) -> dict:
        return {"type": "dense", "name": self.name, "in_features": self.fan_in, "out_features": self.out_features}

    def forward(self, params, x, train=False, record=True):
        y, t = self._matmul_forward(params, x)
        return y, (x, t)

    def backward(self, params, ctx, dy, want=frozenset(), need_dx=True):
        x, t = ctx
        return self._matmul_backward(params, x, t, dy, want, need_dx)


def _pair(value, what: str) -> tuple[int, int]:
    """An int or a pair of ints as ``(rows, cols)``."""
    pair = (value, value) if np.ndim(value) == 0 else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{what} must be an int or a pair of ints, not {value!r}")
    return int(pair[0]), int(pair[1])


def _pads(value) -> tuple[int, int, int, int]:
    """Padding as ``(top, left, bottom, right)`` (ONNX's order) from an int, a pair or four ints."""
    if np.ndim(value) == 0:
        return (int(value),) * 4
    pads = tuple(int(v) for v in value)
    if len(pads) == 2:
        return pads + pads
    if len(pads) != 4:
        raise ValueError(f"padding must be an int, (rows, cols) or (top, left, bottom, right), not {value!r}")
    return pads


#: Padding modes of `Conv2d` (PyTorch's names) and the matching ``np.pad`` modes.
PADDING_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}
# Above this many band-matrix entries, the banded convolution costs more memory than it saves time.
_BAND_LIMIT = 1 << 22


class Conv2d(_Weighted):
    """2-D convolution on NHWC images as one im2col matrix product.

    The weight matrix is (out, in_ch * kh * kw) with the patch flattened in (channel, ky, kx) order
    (PyTorch's and ONNX's weight layout, reshaped). ``kernel`` and ``stride`` are an int or
    (rows, cols); ``padding`` an int, (rows, cols) or (top, left, bottom, right); ``padding_mode``
    one of `PADDING_MODES`. A layer without bias in its source model gets a zero bias.
    """

    def __init__(self, name, in_channels, out_channels, kernel, padding=0, stride=1, padding_mode="zeros"):
        kh, kw = _pair(kernel, "kernel")
        super().__init__(name, in_channels * kh * kw, out_channels)
        self.in_channels = int(in_channels)
        self.kernel = (kh, kw)
        self.stride = _pair(stride, "stride")
        self.pads = _pads(padding)
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"{name}: padding mode must be one of {', '.join(PADDING_MODES)}, not {padding_mode!r}")
        self.padding_mode = padding_mode
        if min(kh, kw, *self.stride) < 1 or min(self.pads) < 0:
            raise ValueError(f"{name}: kernel and stride must be positive and padding non-negative")

    def spec(self) -> dict:
        return {"type": "conv2d", "name": self.name, "in_channels": self.in_channels,
                "out_channels": self.out_features, "kernel": list(self.kernel), "stride": list(self.stride),
                "padding": list(self.pads), "padding_mode": self.padding_mode}

    def _pad(self, x):
        t, l, b, r = self.pads
        if not (t or l or b or r):
            return x
        return np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), mode=PADDING_MODES[self.padding_mode])

    def _out_size(self, h, w):
        t, l, b, r = self.pads
        (kh, kw), (sh, sw) = self.kernel, self.stride
        return (h + t + b - kh) // sh + 1, (w + l + r - kw) // sw + 1

    def _im2col(self, x):
        sh, sw = self.stride
        win = sliding_window_view(self._pad(x), self.kernel, axis=(1, 2))  # n,oh,ow,c,kh,kw
        if sh > 1 or sw > 1:
            win = win[:, ::sh, ::sw]
        n, oh, ow = win.shape[:3]
        return win.reshape(n * oh * ow, self.fan_in), (n, oh, ow)

    def forward(self, params, x, train=False, record=True):
        if x.ndim != 4 or x.shape[3] != self.in_channels:
            raise ValueError(f"{self.name}: expected NHWC input with {self.in_channels} channels, got shape {x.shape}")
        oh, ow = self._out_size(x.shape[1], x.shape[2])
        if oh < 1 or ow < 1:
            raise ValueError(f"{self.name}: a {x.shape[1]}x{x.shape[2]} input is smaller than the {self.kernel} kernel")
        if not record and self.lora_a not in params and self.stride == (1, 1) \
                and self.kernel[0] * (x.shape[2] + self.pads[1] + self.pads[3]) * x.shape[3] * ow * self.out_features <= _BAND_LIMIT:
            return self._banded_forward(params, x), None
        cols, (n, oh, ow) = self._im2col(x)
        y, t = self._matmul_forward(params, cols)
        return y.reshape(n, oh, ow, self.out_features), (cols, t, x.shape)

    def _banded_forward(self, params, x):
        """The convolution (stride 1) as kh banded matrix products over image rows (one per kernel
        row): no im2col copy (kh*kw times the data), about twice as fast for these small layers.
        Used when no backward pass follows (no recorded context)."""
        (kh, kw), c, o = self.kernel, self.in_channels, self.out_features
        xp = self._pad(x)
        n, hp, wp, _ = xp.shape
        oh, ow = hp - kh + 1, wp - kw + 1
        wk = params[self.w].reshape(o, c, kh, kw)
        band = np.zeros((kh, wp, c, ow, o), x.dtype)  # [ky, input col, channel, output col, out]
        cols = np.arange(ow)
        for kx in range(kw):
            band[:, cols + kx, :, cols, :] = wk[:, :, :, kx].transpose(2, 1, 0)[None]  # (ow, kh, c, o)
        band = band.reshape(kh, wp * c, ow * o)
        rows = xp.reshape(n, hp, -1)
        y = rows[:, 0:oh].reshape(n * oh, -1) @ band[0]
        for ky in range(1, kh):
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
        (kh, kw), (sh, sw) = self.kernel, self.stride
        t, l, b, r = self.pads
        hp, wp = h + t + b, w + l + r
        oh, ow = self._out_size(h, w)
        # One transposing copy makes every kernel offset's slice contiguous.
        d = np.ascontiguousarray(dcols.reshape(n, oh, ow, c, kh, kw).transpose(4, 5, 0, 1, 2, 3))
        dxp = np.zeros((n, hp, wp, c), dcols.dtype)
        for ky in range(kh):  # kh*kw slice additions: loops over the kernel, never over samples
            for kx in range(kw):
                dxp[:, ky:ky + sh * (oh - 1) + 1:sh, kx:kx + sw * (ow - 1) + 1:sw, :] += d[ky, kx]
        return _unpad(dxp, (h, w), self.pads, self.padding_mode)


def _unpad(dxp, hw, pads, mode):
    """The adjoint of padding: the gradient of the unpadded image from that of the padded one."""
    h, w = hw
    t, l, b, r = pads
    if not (t or l or b or r):
        return dxp
    if mode == "zeros":
        return dxp[:, t:t + h, l:l + w, :]
    # Reflected, replicated or wrapped border pixels are copies: their gradients add to the source pixel.
    n, hp, wp, c = dxp.shape
    source = np.pad(np.arange(h * w).reshape(h, w), ((t, b), (l, r)), mode=PADDING_MODES[mode])
    dx = np.zeros((h * w, n * c), dxp.dtype)
    np.add.at(dx, source.ravel(), dxp.transpose(1, 2, 0, 3).reshape(hp * wp, n * c))
    return np.ascontiguousarray(dx.reshape(h, w, n, c).transpose(2, 0, 1, 3))


class ReLU(Layer):
    def __init__(self, name="relu"):
        self.name = name

    def spec(self) -> dict:
        return {"type": "relu", "name": self.name}

    def forward(self, params, x, train=False, record=True):
        y = np.maximum(x, 0)
        return y, y > 0

    def backward(self, params, ctx, dy, want=frozenset(), need_dx=True):
        return (dy * ctx if need_dx else None), {}


class MaxPool2(Layer):
    """2x2 max pooling, stride 2, on NHWC (the gradient goes to the first maximum of a window)."""

    def __init__(self, name="pool"):
        self.name = name

    def spec(self) -> dict:
        return {"type": "maxpool2", "name": self.name}

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

    def spec(self) -> dict:
        return {"type": "flatten", "name": self.name}

    def forward(self, params, x, train=False, record=True):
        return x.reshape(x.shape[0], -1), x.shape

    def backward(self, params, ctx, dy, want=frozenset(), need_dx=True):
        return (dy.reshape(ctx) if need_dx else None), {}


class BatchNorm(Layer):
    """Batch norm over the features of (n, f) inputs or the channels of NHWC images (n, h, w, f).

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

    def spec(self) -> dict:
        return {"type": "batchnorm", "name": self.name, "features": self.features, "momentum": self.momentum,
                "eps": self.eps}

    def init_params(self, rng, dtype):
        f = self.features
        return {self.gamma: np.ones(f, dtype), self.beta: np.zeros(f, dtype),
                self.mean: np.zeros(f, dtype), self.var: np.ones(f, dtype)}

    def forward(self, params, x, train=False, record=True):
        if train:
            axes = tuple(range(x.ndim - 1))  # every axis but the features (channels)
            count = x.size // x.shape[-1]
            mu, var = x.mean(axis=axes), x.var(axis=axes)
            m = self.momentum
            params[self.mean] = ((1 - m) * params[self.mean] + m * mu).astype(x.dtype)
            params[self.var] = ((1 - m) * params[self.var] + m * var * count / max(count - 1, 1)).astype(x.dtype)
        else:
            mu, var = params[self.mean], params[self.var]
        inv = 1.0 / np.sqrt(var + self.eps)
        xhat = (x - mu) * inv
        return xhat * params[self.gamma] + params[self.beta], (xhat, inv, train)

    def backward(self, params, ctx, dy, want=frozenset(), need_dx=True):
        xhat, inv, train = ctx
        axes = tuple(range(dy.ndim - 1))
        grads = {}
        if self.gamma in want:
            grads[self.gamma] = (dy * xhat).sum(axis=axes)
        if self.beta in want:
            grads[self.beta] = dy.sum(axis=axes)
        dx = None
        if need_dx:
            dxhat = dy * params[self.gamma]
            if train:
                n = dy.size // dy.shape[-1]
                dx = inv / n * (n * dxhat - dxhat.sum(axis=axes) - xhat * (dxhat * xhat).sum(axis=axes))
            else:
                dx = dxhat * inv
        return dx, grads


class _Pool(Layer):
    """Shared window geometry of the general pooling layers on NHWC images."""

    def __init__(self, name, kernel, stride=None, padding=0):
        self.name = name
        self.kernel = _pair(kernel, "kernel")
        self.stride = self.kernel if stride is None else _pair(stride, "stride")
        self.pads = _pads(padding)
        if min(*self.kernel, *self.stride) < 1 or min(self.pads) < 0:
            raise ValueError(f"{name}: kernel and stride must be positive and padding non-negative")

    def _spec(self, kind) -> dict:
        return {"type": kind, "name": self.name, "kernel": list(self.kernel), "stride": list(self.stride),
                "padding": list(self.pads)}

    def _windows(self, xp):
        """(n, oh, ow, c, kh, kw) view of the padded input's pooling windows."""
        sh, sw = self.stride
        win = sliding_window_view(xp, self.kernel, axis=(1, 2))
        return win[:, ::sh, ::sw] if sh > 1 or sw > 1 else win

    def _padded(self, x, value):
        t, l, b, r = self.pads
        if not (t or l or b or r):
            return x
        return np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=value)

    def _check(self, x):
        if x.ndim != 4:
            raise ValueError(f"{self.name}: expected NHWC images, got shape {x.shape}")
        t, l, b, r = self.pads
        if x.shape[1] + t + b < self.kernel[0] or x.shape[2] + l + r < self.kernel[1]:
            raise ValueError(f"{self.name}: a {x.shape[1]}x{x.shape[2]} input is smaller than the {self.kernel} window")


class MaxPool2d(_Pool):
    """Max pooling of any window, stride and padding (padding never wins); the gradient goes to the
    first maximum of each window, as in `MaxPool2`."""

    def spec(self) -> dict:
        return self._spec("maxpool")

    def forward(self, params, x, train=False, record=True):
        self._check(x)
        xp = self._padded(x, -np.inf)
        win = self._windows(xp)
        y = win.max(axis=(4, 5))
        if not record:
            return y, None
        n, oh, ow, c, kh, kw = win.shape
        first = win.reshape(n, oh, ow, c, kh * kw).argmax(axis=4)  # first maximum, row-major
        return y, (xp.shape, x.shape, first)

    def backward(self, params, ctx, dy, want=frozenset(), need_dx=True):
        if not need_dx:
            return None, {}
        pshape, xshape, first = ctx
        n, oh, ow, c = dy.shape
        (sh, sw), kw = self.stride, self.kernel[1]
        rows = np.arange(oh)[None, :, None, None] * sh + first // kw
        cols = np.arange(ow)[None, None, :, None] * sw + first % kw
        flat = ((np.arange(n)[:, None, None, None] * pshape[1] + rows) * pshape[2] + cols) * c + np.arange(c)
        dxp = np.bincount(flat.ravel(), weights=dy.ravel(), minlength=int(np.prod(pshape)))
        dxp = dxp.reshape(pshape).astype(dy.dtype)
        return _unpad(dxp, xshape[1:3], self.pads, "zeros"), {}


class AvgPool2d(_Pool):
    """Average pooling of any window, stride and padding. ``count_include_pad`` divides by the whole
    window (PyTorch's default); otherwise by the input pixels in the window (ONNX's default)."""

    def __init__(self, name, kernel, stride=None, padding=0, count_include_pad=True):
        super().__init__(name, kernel, stride, padding)
        self.count_include_pad = bool(count_include_pad)

    def spec(self) -> dict:
        return dict(self._spec("avgpool"), count_include_pad=self.count_include_pad)

    def _divisor(self, hw, dtype):
        """Per-output-pixel divisor, (oh, ow, 1)."""
        if self.count_include_pad or not any(self.pads):
            return dtype.type(self.kernel[0] * self.kernel[1])
        ones = self._padded(np.ones((1,) + tuple(hw) + (1,), dtype), 0)
        return self._windows(ones).sum(axis=(4, 5))[0]

    def forward(self, params, x, train=False, record=True):
        self._check(x)
        y = self._windows(self._padded(x, 0)).sum(axis=(4, 5))
        y /= self._divisor(x.shape[1:3], x.dtype)
        return y, x.shape

    def backward(self, params, ctx, dy, want=frozenset(), need_dx=True):
        if not need_dx:
            return None, {}
        n, h, w, c = ctx
        (kh, kw), (sh, sw), (t, l, b, r) = self.kernel, self.stride, self.pads
        d = dy / self._divisor((h, w), dy.dtype)
        oh, ow = dy.shape[1:3]
        dxp = np.zeros((n, h + t + b, w + l + r, c), dy.dtype)
        for ky in range(kh):  # kh*kw slice additions, as in Conv2d's col2im
            for kx in range(kw):
                dxp[:, ky:ky + sh * (oh - 1) + 1:sh, kx:kx + sw * (ow - 1) + 1:sw, :] += d
        return _unpad(dxp, (h, w), self.pads, "zeros"), {}


#: Layer classes by the ``type`` of their `Layer.spec`.
LAYER_TYPES = {"dense": Dense, "conv2d": Conv2d, "relu": ReLU, "maxpool2": MaxPool2, "maxpool": MaxPool2d,
               "avgpool": AvgPool2d, "flatten": Flatten, "batchnorm": BatchNorm}


def layer_from_spec(spec: dict) -> Layer:
    """The layer a `Layer.spec` describes (how a saved layer-list model is rebuilt)."""
    if not isinstance(spec, dict) or spec.get("type") not in LAYER_TYPES:
        kind = spec.get("type") if isinstance(spec, dict) else spec
        raise ValueError(f"unknown layer type {kind!r}; known: {', '.join(LAYER_TYPES)}")
    args = {k: v for k, v in spec.items() if k != "type"}
    try:
        return LAYER_TYPES[spec["type"]](**args)
    except TypeError as exc:
        raise ValueError(f"layer spec {spec!r} does not fit {spec['type']}: {exc}") from None
