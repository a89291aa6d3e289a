"""The base models (the Skip2-LoRA papers' LeNet-5 and batch-norm MLP, or any imported layer list) with adapter taps.

A *tap* is the input of a weight layer (conv or dense), flattened per sample: exactly what a
Skip-LoRA adapter reads. The network can return its taps alongside its logits, which is how
the Skip2-LoRA cache is filled.

`sequential` wraps any layer list (an imported ONNX or PyTorch model); its ``config`` lists the
layers' specs, so `build` (and with it `Network.copy` and saved models) rebuilds the same network.
"""

from __future__ import annotations

import numpy as np

from .layers import BatchNorm, Conv2d, Dense, Flatten, Layer, MaxPool2, ReLU, _Weighted, layer_from_spec

__all__ = ["Network", "lenet5", "mlp", "sequential", "build"]


class Network:
    def __init__(self, arch: str, layers: list[Layer], input_shape: tuple, classes: int, config: dict):
        self.arch = arch
        self.layers = layers
        self.input_shape = tuple(input_shape)
        self.classes = int(classes)
        self.config = dict(config)  # what `build` needs to rebuild the same network
        self.params: dict[str, np.ndarray] = {}
        self.weight_layers = [layer for layer in layers if isinstance(layer, _Weighted)]
        self.forward_samples = 0  # samples pushed through the base forward (tests count cache hits)

    # -- parameters ------------------------------------------------------------------------
    def init(self, seed: int, dtype=np.float32) -> "Network":
        rng = np.random.default_rng(seed)
        self.params = {}
        for layer in self.layers:
            self.params.update(layer.init_params(rng, dtype))
        return self

    @property
    def base_param_names(self) -> list[str]:
        return [n for layer in self.layers for n in layer.param_names]

    @property
    def tap_dims(self) -> list[int]:
        """Per-sample size of each tap (the adapter input dims d_k)."""
        _, taps = self._run(np.zeros((1,) + self.input_shape, np.float32), taps=True)
        return [t.shape[1] for t in taps]

    def copy(self) -> "Network":
        other = build(self.config)
        other.params = {k: v.copy() for k, v in self.params.items()}
        return other

    def astype(self, dtype) -> "Network":
        self.params = {k: v.astype(dtype) for k, v in self.params.items()}
        return self

    # -- computation -----------------------------------------------------------------------
    def to_internal(self, x: np.ndarray) -> np.ndarray:
        """Data sets give images as NCHW; the layers work on NHWC."""
        if x.ndim == 4:
            return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        return x

    def forward(self, x, *, train=False, taps=False, record=False, params=None):
        """Logits for a batch; optionally the flattened tap inputs and the backward contexts."""
        self.forward_samples += len(x)
        return self._run(x, train=train, taps=taps, record=record, params=params)

    def _run(self, x, *, train=False, taps=False, record=False, params=None):
        params = self.params if params is None else params
        x = self.to_internal(np.asarray(x, dtype=params[self.weight_layers[0].w].dtype))
        tap_list, ctxs = [], []
        for layer in self.layers:
            if taps and isinstance(layer, _Weighted):
                tap_list.append(x.reshape(x.shape[0], -1))
            x, ctx = layer.forward(params, x, train=train, record=record)
            if record:
                ctxs.append(ctx)
        out = [x]
        if taps:
            out.append(tap_list)
        if record:
            out.append(ctxs)
        return out[0] if len(out) == 1 else tuple(out)

    def backward(self, ctxs, dlogits, want, params=None):
        """Gradients of the parameters named in ``want``; stops as early as nothing below is wanted."""
        params = self.params if params is None else params
        want = set(want)
        # Lowest layer index that owns a wanted parameter: no input gradient is needed below it.
        owners = [i for i, layer in enumerate(self.layers) if want & set(self._owned(layer))]
        lowest = min(owners) if owners else len(self.layers)
        grads, dy = {}, dlogits
        for i in range(len(self.layers) - 1, lowest - 1, -1):
            layer = self.layers[i]
            dy, g = layer.backward(params, ctxs[i], dy, want, need_dx=i > lowest)
            grads.update(g)
        return grads

    @staticmethod
    def _owned(layer):
        names = list(layer.param_names)
        if isinstance(layer, _Weighted):
            names += [layer.lora_a, layer.lora_b]
        return names

    def predict_logits(self, x, batch=1024, params=None):
        chunks = [self.forward(x[i:i + batch], params=params) for i in range(0, len(x), batch)]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.classes), np.float32)

    def accuracy(self, x, y, batch=1024) -> float:
        return float((self.predict_logits(x, batch).argmax(axis=1) == y).mean())


def lenet5(classes=10, input_shape=(1, 28, 28)) -> Network:
    """LeNet-5 of DESIGN.md: conv5x5x6 (pad 2) - pool - conv5x5x16 - pool - 120 - 84 - classes."""
    c = input_shape[0]
    layers = [
        Conv2d("conv1", c, 6, 5, padding=2), ReLU("relu1"), MaxPool2("pool1"),
        Conv2d("conv2", 6, 16, 5), ReLU("relu2"), MaxPool2("pool2"), Flatten(),
        Dense("fc1", 400, 120), ReLU("relu3"),
        Dense("fc2", 120, 84), ReLU("relu4"),
        Dense("fc3", 84, classes),
    ]
    return Network("lenet5", layers, input_shape, classes,
                   {"arch": "lenet5", "classes": classes, "input_shape": list(input_shape)})


def mlp(in_features: int, classes: int, hidden: int = 96) -> Network:
    """The Skip2-LoRA papers' 3-layer MLP with batch norm: in - hidden - hidden - classes."""
    layers = [
        Dense("fc1", in_features, hidden), BatchNorm("bn1", hidden), ReLU("relu1"),
        Dense("fc2", hidden, hidden), BatchNorm("bn2", hidden), ReLU("relu2"),
        Dense("fc3", hidden, classes),
    ]
    return Network("mlp", layers, (in_features,), classes,
                   {"arch": "mlp", "classes": classes, "input_shape": [in_features], "hidden": hidden})


def sequential(layers: list[Layer], input_shape: tuple, classes: int, name: str = "") -> Network:
    """Any layer list as a base model (``input_shape`` per sample, NCHW images or flat features).

    The config records every layer's spec, so `build` rebuilds it. Needs at least one weight layer
    (the taps), unique layer names, and a flat output of ``classes`` logits.
    """
    layers = list(layers)
    if not any(isinstance(layer, _Weighted) for layer in layers):
        raise ValueError("a base model needs at least one Conv2d or Dense layer (the adapters' taps)")
    names = [layer.name for layer in layers]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"layer names must be unique: {', '.join(dup)} repeated")
    config = {"arch": "layers", "name": str(name), "classes": int(classes),
              "input_shape": [int(d) for d in input_shape], "layers": [layer.spec() for layer in layers]}
    return Network("layers", layers, tuple(input_shape), classes, config)


def build(config: dict) -> Network:
    if config["arch"] == "lenet5":
        return lenet5(config["classes"], tuple(config["input_shape"]))
    if config["arch"] == "mlp":
        return mlp(config["input_shape"][0], config["classes"], config.get("hidden", 96))
    if config["arch"] == "layers":
        layers = [layer_from_spec(spec) for spec in config["layers"]]
        return sequential(layers, tuple(config["input_shape"]), config["classes"], config.get("name", ""))
    raise ValueError(f"unknown architecture {config['arch']!r}")
