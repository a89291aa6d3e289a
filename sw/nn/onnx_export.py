"""Export a base model (`Network`) to ONNX, so other tools (onnxruntime, hls4ml, FINN, Netron) read it.

    to_onnx(net, "lenet5.onnx")        # input "input" (batch, *net.input_shape), output "logits"

The graph uses ONNX's NCHW layout like the data sets: the network's NHWC flatten order is undone by
permuting the columns of the linear layer after a flatten (and any batch norm between), so the file
is what PyTorch would have exported for the same model. Opset 13 by default (circular padding needs 19).
Written with onnx.helper: a dozen node types do not justify a dependency on torch's exporter.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from .layers import AvgPool2d, BatchNorm, Conv2d, Dense, Flatten, MaxPool2, MaxPool2d, ReLU
from .network import Network
from .onnx_import import MIN_OPSET, require_onnx

__all__ = ["to_onnx"]

_PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def to_onnx(net: Network, path=None, *, opset: int = MIN_OPSET, name: str | None = None):
    """The network as an ONNX ``ModelProto`` (checked with onnx.checker); written atomically to ``path`` if given."""
    onnx = require_onnx()
    from onnx import TensorProto, helper, numpy_helper

    if opset < MIN_OPSET:
        raise ValueError(f"opset must be at least {MIN_OPSET}, not {opset}")
    if path is not None and not Path(path).parent.is_dir():
        raise FileNotFoundError(f"no folder {Path(path).parent} for {Path(path).name}")
    nodes, inits = [], []
    current = "input"

    def const(key, array):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, np.float32), key))
        return key

    def add(op, layer_name, inputs, **attrs):
        nonlocal current
        out = f"{layer_name}.out"
        nodes.append(helper.make_node(op, [current] + list(inputs), [out], name=layer_name, **attrs))
        current = out

    shape = tuple(net.input_shape)          # per sample, source (NCHW) layout
    perm = None                             # after a flatten: source index of each internal feature
    p = net.params
    for layer in net.layers:
        if isinstance(layer, Conv2d):
            c, h, w = shape
            kh, kw = layer.kernel
            t, left, b, r = layer.pads
            pads = [t, left, b, r]
            if layer.padding_mode != "zeros" and any(pads):
                mode = _PAD_MODES[layer.padding_mode]
                if mode == "wrap" and opset < 19:
                    raise ValueError(f"{layer.name}: circular padding needs ONNX opset 19 or newer (opset={opset})")
                pad_sizes = helper.make_tensor(f"{layer.name}.pads", TensorProto.INT64, [8],
                                               [0, 0, t, left, 0, 0, b, r])
                inits.append(pad_sizes)
                add("Pad", f"{layer.name}.pad", [pad_sizes.name], mode=mode)
                pads = [0, 0, 0, 0]
            weight = p[layer.w].reshape(layer.out_features, c, kh, kw)
            add("Conv", layer.name, [const(f"{layer.name}.w", weight), const(f"{layer.name}.b", p[layer.b])],
                kernel_shape=[kh, kw], strides=list(layer.stride), pads=pads)
            sh, sw = layer.stride
            shape = (layer.out_features, (h + t + b - kh) // sh + 1, (w + left + r - kw) // sw + 1)
        elif isinstance(layer, Dense):
            weight = p[layer.w]
            if perm is not None:
                source = np.empty_like(weight)
                source[:, perm] = weight
                weight, perm = source, None
            add("Gemm", layer.name, [const(f"{layer.name}.w", weight), const(f"{layer.name}.b", p[layer.b])],
                transB=1)
            shape = (layer.out_features,)
        elif isinstance(layer, ReLU):
            add("Relu", layer.name, [])
        elif isinstance(layer, (MaxPool2, MaxPool2d, AvgPool2d)):
            c, h, w = shape
            kernel, stride, pads = ((2, 2), (2, 2), (0, 0, 0, 0)) if isinstance(layer, MaxPool2) else \
                (layer.kernel, layer.stride, layer.pads)
            attrs = dict(kernel_shape=list(kernel), strides=list(stride), pads=list(pads))
            if isinstance(layer, AvgPool2d):
                add("AveragePool", layer.name, [], count_include_pad=int(layer.count_include_pad), **attrs)
            else:
                add("MaxPool", layer.name, [], **attrs)
            t, left, b, r = pads
            shape = (c, (h + t + b - kernel[0]) // stride[0] + 1, (w + left + r - kernel[1]) // stride[1] + 1)
        elif isinstance(layer, Flatten):
            if len(shape) == 3:
                c, h, w = shape
                perm = np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).ravel()
                shape = (c * h * w,)
            add("Flatten", layer.name, [], axis=1)
        elif isinstance(layer, BatchNorm):
            stats = [p[layer.gamma], p[layer.beta], p[layer.mean], p[layer.var]]
            if perm is not None:  # per feature in the network's order: back to the source order
                stats = [_unpermute(a, perm) for a in stats]
            keys = ("gamma", "beta", "running_mean", "running_var")
            add("BatchNormalization", layer.name, [const(f"{layer.name}.{k}", a) for k, a in zip(keys, stats)],
                epsilon=float(layer.eps))
        else:
            raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) has no ONNX export")
    nodes[-1].output[0] = "logits"
    graph = helper.make_graph(
        nodes, name or net.config.get("name") or net.arch,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *net.input_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", net.classes])], inits)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="skip2lora")
    model.ir_version = helper.find_min_ir_version_for(opsets)  # the oldest IR the opset allows: older runtimes read it
    onnx.checker.check_model(model, full_check=True)
    if path is not None:
        _write_atomic(Path(path), model.SerializeToString())
    return model


def _unpermute(a, perm):
    out = np.empty_like(a)
    out[perm] = a
    return out


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
