"""A source model's layer chain (ONNX or PyTorch semantics: NCHW) lowered to a `Network` (NHWC).

The ONNX and PyTorch importers walk their graphs and call one `ChainBuilder` method per operator;
the builder tracks the per-sample shape in the source layout, checks that each operator fits it,
and emits the equivalent layers and parameters:

* Images are NHWC inside the network, so a flatten of a (C, H, W) map orders the features
  (h, w, c) instead of (c, h, w). The builder keeps that permutation and applies it to the
  parameters of the next feature-wise layers (the first linear layer's columns, a batch norm's
  statistics), so logits are unchanged and every tap is in the network's own layout.
* A batch norm right after a convolution or linear layer (only Dropout/Identity between) is
  folded into that layer's weights and bias, as inference engines do; one anywhere else (first
  layer, after a ReLU or pooling) stays a `BatchNorm` layer, which the fine-tuning methods run in
  inference mode (frozen running statistics). ``fold_batchnorm=False`` keeps every batch norm.
* A separate zero/reflect/edge/wrap ``pad`` merges into the convolution right after it.
"""

from __future__ import annotations

import re

import numpy as np

from .layers import AvgPool2d, BatchNorm, Conv2d, Dense, Flatten, MaxPool2, MaxPool2d, ReLU, _Weighted
from .network import Network, sequential

__all__ = ["ModelImportError", "ChainBuilder", "check_logits"]


class ModelImportError(ValueError):
    """A model that cannot be imported: an unsupported operator or attribute, or a graph that is
    not a chain of layers. The message is one line and names the node."""


class ChainBuilder:
    def __init__(self, input_shape, *, fold_batchnorm: bool = True, name: str = ""):
        shape = tuple(int(d) for d in input_shape)
        if len(shape) not in (1, 3) or min(shape, default=0) < 1:
            raise ModelImportError(f"the model's input must be flat features (F,) or images (C, H, W) per sample, "
                                   f"not {shape}")
        self.input_shape = shape
        self.shape = shape            # per-sample shape after the layers so far, source layout
        self.fold_batchnorm = bool(fold_batchnorm)
        self.name = name
        self.layers: list = []
        self.params: dict[str, np.ndarray] = {}
        self.perm = None              # after flattening (C, H, W): source feature index of each internal one
        self._pad = None              # (node name, pads, mode) waiting for the next conv or pool
        self._foldable = None         # the weight layer a batch norm right now may fold into

    # -- bookkeeping -------------------------------------------------------------------------------
    def _unique(self, name: str, kind: str) -> str:
        """A parameter-safe, unique layer name from a source node name."""
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_.") or f"{kind}{len(self.layers)}"
        taken = {layer.name for layer in self.layers}
        out, i = base, 1
        while out in taken:
            i += 1
            out = f"{base}_{i}"
        return out

    def _add(self, layer, params=None, foldable=False):
        if self._pad is not None and not isinstance(layer, Conv2d):
            raise ModelImportError(f"{self._pad[0]}: a separate padding is supported only right before a convolution")
        self._pad = None
        self.layers.append(layer)
        self.params.update(params or {})
        self._foldable = layer if foldable else None

    def need_images(self, node: str, what: str):
        if len(self.shape) != 3:
            raise ModelImportError(f"{node}: {what} needs images (C, H, W), the input here is {self.shape}")
        return self.shape

    def _take_pad(self, node, pads):
        """A convolution's own pads plus a pending Pad's; the padding mode."""
        pads = tuple(int(p) for p in pads)
        if self._pad is None:
            return pads, "zeros"
        _, extra, mode = self._pad
        if mode != "zeros" and any(pads):
            raise ModelImportError(f"{node}: {mode} padding combined with the layer's own padding is not supported")
        return tuple(a + b for a, b in zip(pads, extra)), mode

    @staticmethod
    def _f32(a):
        return np.ascontiguousarray(np.asarray(a, np.float64).astype(np.float32))

    # -- operators ---------------------------------------------------------------------------------
    def conv(self, node, weight, bias, *, stride=(1, 1), pads=(0, 0, 0, 0)):
        c, h, w = self.need_images(node, "a convolution")
        weight = np.asarray(weight)
        if weight.ndim != 4:
            raise ModelImportError(f"{node}: only 2-D convolutions are supported (weight shape {weight.shape})")
        o, ci, kh, kw = weight.shape
        if ci != c:
            raise ModelImportError(f"{node}: the weight expects {ci} input channels, the input has {c}")
        pads, mode = self._take_pad(node, pads)
        t, l, b, r = pads
        sh, sw = int(stride[0]), int(stride[1])
        oh, ow = (h + t + b - kh) // sh + 1, (w + l + r - kw) // sw + 1
        if oh < 1 or ow < 1:
            raise ModelImportError(f"{node}: the {kh}x{kw} kernel does not fit the {h}x{w} input")
        name = self._unique(node, "conv")
        layer = Conv2d(name, c, o, (kh, kw), padding=pads, stride=(sh, sw), padding_mode=mode)
        bias = np.zeros(o) if bias is None else np.asarray(bias).reshape(-1)
        self._add(layer, {layer.w: self._f32(weight.reshape(o, -1)), layer.b: self._f32(bias)}, foldable=True)
        self.shape = (o, oh, ow)

    def linear(self, node, weight, bias):
        """``y = x W^T + b`` with W (out, in), as PyTorch's Linear."""
        if len(self.shape) != 1:
            raise ModelImportError(f"{node}: a linear layer needs flat features, the input here is {self.shape} "
                                   f"(flatten first)")
        weight = np.asarray(weight)
        if weight.ndim != 2 or weight.shape[1] != self.shape[0]:
            raise ModelImportError(f"{node}: the weight {weight.shape} does not fit {self.shape[0]} input features")
        out = weight.shape[0]
        bias = np.zeros(out) if bias is None else np.broadcast_to(np.asarray(bias, np.float64).reshape(-1), (out,))
        if self.perm is not None:
            weight = weight[:, self.perm]
            self.perm = None
        name = self._unique(node, "fc")
        layer = Dense(name, weight.shape[1], out)
        self._add(layer, {layer.w: self._f32(weight), layer.b: self._f32(bias)}, foldable=True)
        self.shape = (out,)

    def add_bias(self, node, bias) -> bool:
        """A constant added right after a weight layer joins its bias; False when it cannot."""
        layer = self._foldable
        if layer is None:
            return False
        bias = np.asarray(bias, np.float64)
        out = layer.out_features
        # The constant must be one number, or vary along the feature (channel) axis only.
        per_output = bias.size == out and (bias.shape[-1:] == (out,) if isinstance(layer, Dense)
                                           else bias.shape[-3:] == (out, 1, 1))
        if bias.size != 1 and not per_output:
            return False
        squeezed = bias.reshape(-1)
        self.params[layer.b] = self._f32(self.params[layer.b] + np.broadcast_to(squeezed, (out,)))
        return True

    def relu(self, node):
        self._add(ReLU(self._unique(node, "relu")))

    def maxpool(self, node, kernel, stride, pads=(0, 0, 0, 0)):
        c, h, w = self.need_images(node, "max pooling")
        oh, ow = self._pool_out(node, (h, w), kernel, stride, pads)
        kernel, stride = tuple(map(int, kernel)), tuple(map(int, stride))
        name = self._unique(node, "pool")
        if kernel == (2, 2) and stride == (2, 2) and not any(pads) and h % 2 == 0 and w % 2 == 0:
            self._add(MaxPool2(name))  # the papers' 2x2 pool, the fast path
        else:
            self._add(MaxPool2d(name, kernel, stride, pads))
        self.shape = (c, oh, ow)

    def avgpool(self, node, kernel, stride, pads=(0, 0, 0, 0), count_include_pad=True):
        c, h, w = self.need_images(node, "average pooling")
        oh, ow = self._pool_out(node, (h, w), kernel, stride, pads)
        self._add(AvgPool2d(self._unique(node, "avgpool"), kernel, stride, pads, count_include_pad))
        self.shape = (c, oh, ow)

    def global_avgpool(self, node):
        _, h, w = self.need_images(node, "global average pooling")
        self.avgpool(node, (h, w), (1, 1))

    def _pool_out(self, node, hw, kernel, stride, pads):
        (h, w), (kh, kw), (sh, sw), (t, l, b, r) = hw, kernel, stride, pads
        if max(t, b) >= kh or max(l, r) >= kw:
            raise ModelImportError(f"{node}: padding {list(pads)} must be smaller than the {kh}x{kw} window")
        oh, ow = (h + t + b - kh) // sh + 1, (w + l + r - kw) // sw + 1
        if oh < 1 or ow < 1:
            raise ModelImportError(f"{node}: the {kh}x{kw} window does not fit the {h}x{w} input")
        return oh, ow

    def batchnorm(self, node, gamma, beta, mean, var, eps):
        features = self.shape[0]
        gamma, beta, mean, var = (np.broadcast_to(np.asarray(a, np.float64).reshape(-1), (features,))
                                  if np.size(a) in (1, features) else None for a in (gamma, beta, mean, var))
        if any(a is None for a in (gamma, beta, mean, var)):
            raise ModelImportError(f"{node}: batch-norm parameters do not fit {features} channels")
        if len(self.shape) == 2 or len(self.shape) > 3:
            raise ModelImportError(f"{node}: batch norm of a {self.shape} input is not supported")
        layer = self._foldable
        if self.fold_batchnorm and layer is not None:
            scale = gamma / np.sqrt(var + eps)
            w64 = self.params[layer.w].astype(np.float64)
            self.params[layer.w] = self._f32(w64 * scale[:, None])
            self.params[layer.b] = self._f32((self.params[layer.b].astype(np.float64) - mean) * scale + beta)
            return
        if len(self.shape) == 1 and self.perm is not None:
            gamma, beta, mean, var = (a[self.perm] for a in (gamma, beta, mean, var))
        bn = BatchNorm(self._unique(node, "bn"), features, eps=float(eps))
        self._add(bn, {bn.gamma: self._f32(gamma), bn.beta: self._f32(beta),
                       bn.mean: self._f32(mean), bn.var: self._f32(var)})

    def flatten(self, node):
        if len(self.shape) == 1:
            return
        c, h, w = self.shape
        if c > 1 and h * w > 1:
            self.perm = np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).ravel()
        self._add(Flatten(self._unique(node, "flatten")))
        self.shape = (c * h * w,)

    def pad(self, node, pads, mode="zeros"):
        """Padding (top, left, bottom, right) of the image, merged into the next conv or pool."""
        self.need_images(node, "padding")
        if self._pad is not None:
            raise ModelImportError(f"{node}: two paddings in a row are not supported")
        if any(int(p) < 0 for p in pads):
            raise ModelImportError(f"{node}: negative padding (cropping) is not supported")
        self._pad = (node, tuple(int(p) for p in pads), mode)
        self._foldable = None

    # -- result ------------------------------------------------------------------------------------
    def finish(self) -> Network:
        if self._pad is not None:
            raise ModelImportError(f"{self._pad[0]}: padding at the end of the model is not supported")
        if not any(isinstance(layer, _Weighted) for layer in self.layers):
            raise ModelImportError("the model has no convolution or linear layer: nothing to adapt")
        if len(self.shape) != 1 or self.perm is not None:
            raise ModelImportError(f"the model's output must be flat class logits, not a {self.shape} map")
        if self.shape[0] < 2:
            raise ModelImportError(f"the model's output has {self.shape[0]} value: a classifier needs at least 2 classes")
        net = sequential(self.layers, self.input_shape, self.shape[0], self.name)
        net.params = dict(self.params)
        return net


def check_logits(net: Network, x: np.ndarray, expected: np.ndarray, source: str) -> float:
    """The largest logit difference against the source framework's; an error beyond float32 rounding."""
    got = net.forward(x)
    net.forward_samples -= len(x)  # an import check is not a base forward of fine-tuning
    expected = np.asarray(expected, np.float64).reshape(got.shape)
    diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
    if not np.isfinite(diff) or diff > 1e-4 * max(1.0, float(np.max(np.abs(expected)))):
        raise ModelImportError(f"the imported model's logits differ from {source}'s by {diff:.3g}: please report "
                               f"this model")
    return diff
