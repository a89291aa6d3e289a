"""Import a pretrained classifier from ONNX (opset 13 or newer; older files are converted) as a base model.

    net = from_onnx("model.onnx")            # a Network: taps at every Conv/Gemm/MatMul input

Supported: a chain of Conv (2-D, any kernel, stride and padding, with or without bias, optionally
after a Pad), Gemm, MatMul (+ Add of a constant), Relu, MaxPool, AveragePool, GlobalAveragePool,
ReduceMean over H and W, BatchNormalization (folded or kept, see `lowering`), Flatten, Reshape or
Squeeze to (batch, features), Dropout and Identity (ignored at inference); constant subgraphs
(Constant, Shape of the input, shape arithmetic) are evaluated once. Anything else is a
`ModelImportError` that names the node and its op type. The import checks itself: a random batch
goes through onnx's reference evaluator and the new network, and their logits must agree.

The ``onnx`` package is optional: imported only when a model is imported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .lowering import ChainBuilder, ModelImportError, check_logits
from .network import Network

__all__ = ["from_onnx", "reference_logits", "require_onnx", "MIN_OPSET"]

MIN_OPSET = 13
PIP_ONNX = 'pip install "onnx>=1.14"'


def require_onnx():
    """The onnx module, or a one-line error that says how to install it."""
    try:
        import onnx
    except ImportError:
        raise ModuleNotFoundError(f"ONNX import/export needs the onnx package: {PIP_ONNX}") from None
    return onnx


def from_onnx(model, *, input_shape=None, fold_batchnorm: bool = True, name: str | None = None,
              verify: bool = True) -> Network:
    """A `Network` from an ONNX model (a path, bytes or a ``ModelProto``).

    ``input_shape`` (per sample, (C, H, W) or (F,)) is needed only when the file's input has symbolic
    dimensions besides the batch. ``verify`` compares the logits of a random batch with onnx's
    reference evaluator (a `ModelImportError` if they differ beyond float32 rounding).
    """
    onnx = require_onnx()
    from onnx import numpy_helper, version_converter

    label = name
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"no ONNX file {path}")
        try:
            model = onnx.load(str(path))
        except Exception as exc:  # protobuf's DecodeError and friends
            raise ModelImportError(f"cannot read {path} as an ONNX model: {exc}") from None
        label = label or path.stem
    elif isinstance(model, (bytes, bytearray)):
        try:
            model = onnx.load_from_string(bytes(model))
        except Exception as exc:
            raise ModelImportError(f"cannot read the bytes as an ONNX model: {exc}") from None
    elif not isinstance(model, onnx.ModelProto):
        raise TypeError(f"expected a path, bytes or onnx.ModelProto, not {type(model).__name__}")
    label = label or model.graph.name or "onnx"

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        raise ModelImportError("the ONNX model imports no standard operator set")
    if opset < MIN_OPSET:
        try:
            model = version_converter.convert_version(model, MIN_OPSET)
        except Exception as exc:
            raise ModelImportError(f"ONNX opset {opset} is older than {MIN_OPSET} and could not be converted "
                                   f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}): re-export "
                                   f"with opset {MIN_OPSET} or newer") from None
    if model.graph.sparse_initializer:
        raise ModelImportError("sparse initializers are not supported")

    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in consts]
    if len(inputs) != 1:
        raise ModelImportError(f"the ONNX graph must have one input, it has {len(inputs)}: "
                               f"{', '.join(i.name for i in inputs)}")
    shape = _input_shape(inputs[0], input_shape)
    builder = ChainBuilder(shape, fold_batchnorm=fold_batchnorm, name=label)
    _Walker(graph, consts, builder, inputs[0].name).run()
    net = builder.finish()
    if verify:
        _verify(model, net)
    return net


def _input_shape(value_info, given):
    from onnx import TensorProto

    t = value_info.type.tensor_type
    if t.elem_type not in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16):
        raise ModelImportError(f"input {value_info.name!r} must be a float tensor, not "
                               f"{TensorProto.DataType.Name(t.elem_type)}")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    if given is not None:
        given = tuple(int(d) for d in given)
        known = dims[1:]
        if t.HasField("shape") and (len(known) != len(given) or any(k not in (None, g) for k, g in zip(known, given))):
            raise ModelImportError(f"input_shape {given} does not fit the model's input "
                                   f"{['?' if d is None else d for d in dims]}")
        return given
    if not t.HasField("shape") or len(dims) < 2 or any(d is None for d in dims[1:]):
        raise ModelImportError(f"input {value_info.name!r} has no fixed per-sample shape "
                               f"({['?' if d is None else d for d in dims]}): pass input_shape=(C, H, W) or (F,)")
    return tuple(dims[1:])


def reference_logits(model, x: np.ndarray) -> np.ndarray:
    """The ONNX model's output for ``x`` from onnx's reference evaluator (no onnxruntime needed).

    Works around the evaluator's BatchNormalization before opset 14, which normalizes with batch
    statistics even in inference (one output; onnx/onnx#8442): such a model is evaluated converted
    to opset 14, whose BatchNormalization states inference mode explicitly.
    """
    onnx = require_onnx()
    from onnx import helper, version_converter
    from onnx.reference import ReferenceEvaluator

    model = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 14 and any(node.op_type == "BatchNormalization" for node in model.graph.node):
        model = version_converter.convert_version(model, 14)
    inp = next(i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer})
    dtype = helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
    return ReferenceEvaluator(model).run(None, {inp.name: np.asarray(x).astype(dtype)})[0]


def _verify(model, net):
    x = np.random.default_rng(0).normal(0, 1, (2,) + net.input_shape).astype(np.float32)
    check_logits(net, x, reference_logits(model, x), "onnx's reference evaluator")


def _ints(attrs, key, default):
    value = attrs.get(key, default)
    return [int(v) for v in value] if value is not None else None


class _Walker:
    """Walks the graph's nodes in order; each must read the chain's current tensor (or constants only)."""

    def __init__(self, graph, consts, builder: ChainBuilder, input_name: str):
        self.graph, self.consts, self.b = graph, consts, builder
        self.current = input_name
        self.used = {i for node in graph.node for i in node.input} | {o.name for o in graph.output}

    def run(self):
        from onnx import helper

        for index, node in enumerate(self.graph.node):
            label = node.name or f"{node.op_type}_{index}"
            data = [i for i in node.input if i and i not in self.consts]
            if not data:
                self._fold(node, label)
                continue
            if any(i != self.current for i in data):
                raise ModelImportError(f"ONNX node {label!r} ({node.op_type}) reads {', '.join(sorted(set(data)))}: "
                                       f"only a chain of layers is supported (no branches or skip connections)")
            if node.domain not in ("", "ai.onnx"):
                raise ModelImportError(f"unsupported ONNX node {label!r} ({node.domain}.{node.op_type})")
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type in ("Shape", "Size"):  # of the current tensor: static except the batch
                self._shape_of(node, label, attrs)
                continue
            handler = getattr(self, f"_op_{node.op_type}", None)
            if handler is None:
                raise ModelImportError(f"unsupported ONNX node {label!r} ({node.op_type})")
            extra = [o for o in node.output[1:] if o and o in self.used]
            if extra:
                raise ModelImportError(f"ONNX node {label!r} ({node.op_type}): its output {extra[0]!r} is used; "
                                       f"only the first output is supported")
            handler(node, label, attrs)
            self.current = node.output[0]
        outputs = [o.name for o in self.graph.output]
        if outputs != [self.current]:
            raise ModelImportError(f"the ONNX graph's outputs {outputs} are not the end of its layer chain "
                                   f"({self.current!r})")

    # -- constants ---------------------------------------------------------------------------------
    def _fold(self, node, label):
        """A node of constants only (Constant, shape arithmetic) is evaluated now."""
        from onnx.reference import ReferenceEvaluator

        try:
            values = ReferenceEvaluator(node).run(None, {i: self.consts[i] for i in node.input if i})
        except Exception as exc:
            raise ModelImportError(f"ONNX node {label!r} ({node.op_type}) on constants could not be evaluated: "
                                   f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        self.consts.update(zip(node.output, (np.asarray(v) for v in values)))

    def _shape_of(self, node, label, attrs):
        full = np.array((1,) + self.b.shape, np.int64)  # the batch dimension reads as 1
        if node.op_type == "Size":
            self.consts[node.output[0]] = np.array(full.prod(), np.int64)
            return
        start, end = attrs.get("start", 0), attrs.get("end", None)
        self.consts[node.output[0]] = full[start:end]

    def _const(self, node, label, position, *, optional=False):
        name = node.input[position] if position < len(node.input) else ""
        if not name:
            if optional:
                return None
            raise ModelImportError(f"ONNX node {label!r} ({node.op_type}) lacks input {position}")
        if name not in self.consts:
            raise ModelImportError(f"ONNX node {label!r} ({node.op_type}): input {name!r} must be a constant")
        return self.consts[name]

    def _data_first(self, node, label):
        if node.input[0] != self.current:
            raise ModelImportError(f"ONNX node {label!r} ({node.op_type}): the layer input must be its first operand")

    @staticmethod
    def _reject(node, label, attrs, key, ok, allowed):
        value = attrs.get(key)
        if value is not None and not ok(value):
            shown = value.decode() if isinstance(value, bytes) else list(value) if isinstance(value, (list, tuple)) else value
            raise ModelImportError(f"ONNX node {label!r} ({node.op_type}): {key}={shown} is not supported ({allowed})")

    def _window(self, node, label, attrs, kernel):
        """Strides and (top, left, bottom, right) pads of a Conv or pool, from pads or auto_pad."""
        self._reject(node, label, attrs, "dilations", lambda v: all(int(d) == 1 for d in v), "only 1")
        strides = _ints(attrs, "strides", [1] * len(kernel))
        auto = attrs.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else str(auto)
        if auto in ("NOTSET", "VALID"):
            p = _ints(attrs, "pads", [0] * 2 * len(kernel)) if auto == "NOTSET" else [0] * 4
            pads = (p[0], p[1], p[2], p[3])
        elif auto in ("SAME_UPPER", "SAME_LOWER"):
            pads = [0] * 4
            for axis, (size, k, s) in enumerate(zip(self.b.shape[1:], kernel, strides)):
                total = max((-(-size // s) - 1) * s + k - size, 0)
                small, big = total // 2, total - total // 2
                first, last = (small, big) if auto == "SAME_UPPER" else (big, small)
                pads[axis], pads[axis + 2] = first, last
            pads = tuple(pads)
        else:
            raise ModelImportError(f"ONNX node {label!r} ({node.op_type}): auto_pad={auto} is not supported")
        return tuple(strides), pads

    def _pool_window(self, node, label, attrs):
        kernel = _ints(attrs, "kernel_shape", None)
        if kernel is None or len(kernel) != 2:
            raise ModelImportError(f"ONNX node {label!r} ({node.op_type}): only 2-D pooling is supported "
                                   f"(kernel_shape={kernel})")
        strides, pads = self._window(node, label, attrs, kernel)
        if attrs.get("ceil_mode", 0):
            self.b.need_images(label, node.op_type)
            h, w = self.b.shape[1:]
            t, l, b, r = pads
            floor = [(n + p - k) // s for n, p, k, s in ((h, t + b, kernel[0], strides[0]), (w, l + r, kernel[1], strides[1]))]
            ceil = [-(-(n + p - k) // s) for n, p, k, s in ((h, t + b, kernel[0], strides[0]), (w, l + r, kernel[1], strides[1]))]
            if floor != ceil:  # with no partial window, ceil_mode changes nothing
                raise ModelImportError(f"ONNX node {label!r} ({node.op_type}): ceil_mode=1 is not supported "
                                       f"(only 0; here it adds a partial window)")
        return tuple(kernel), strides, pads

    # -- operators ---------------------------------------------------------------------------------
    def _op_Conv(self, node, label, attrs):
        self._data_first(node, label)
        weight = self._const(node, label, 1)
        bias = self._const(node, label, 2, optional=True)
        self._reject(node, label, attrs, "group", lambda v: int(v) == 1, "only 1")
        if weight.ndim != 4:
            raise ModelImportError(f"ONNX node {label!r} (Conv): only 2-D convolutions are supported "
                                   f"(weight shape {list(weight.shape)})")
        kernel = _ints(attrs, "kernel_shape", list(weight.shape[2:]))
        if kernel != list(weight.shape[2:]):
            raise ModelImportError(f"ONNX node {label!r} (Conv): kernel_shape={kernel} does not match the weight "
                                   f"{list(weight.shape)}")
        strides, pads = self._window(node, label, attrs, kernel)
        self.b.conv(label, weight, bias, stride=strides, pads=pads)

    def _op_Gemm(self, node, label, attrs):
        self._data_first(node, label)
        self._reject(node, label, attrs, "transA", lambda v: int(v) == 0, "only 0")
        weight = np.asarray(self._const(node, label, 1), np.float64)
        bias = self._const(node, label, 2, optional=True)
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        weight = alpha * (weight if attrs.get("transB", 0) else weight.T)  # (out, in)
        if bias is not None:
            bias = beta * np.asarray(bias, np.float64)
            if bias.size not in (1, weight.shape[0]) or (bias.size > 1 and bias.shape[-1] != weight.shape[0]):
                raise ModelImportError(f"ONNX node {label!r} (Gemm): bias shape {list(bias.shape)} is not per output")
            bias = np.broadcast_to(bias.reshape(-1), (weight.shape[0],))
        self.b.linear(label, weight, bias)

    def _op_MatMul(self, node, label, attrs):
        self._data_first(node, label)
        weight = self._const(node, label, 1)
        if weight.ndim != 2:
            raise ModelImportError(f"ONNX node {label!r} (MatMul): the weight must be a matrix, not "
                                   f"{list(weight.shape)}")
        self.b.linear(label, np.asarray(weight).T, None)

    def _op_Add(self, node, label, attrs):
        other = [i for i in node.input if i != self.current]
        if len(other) != 1 or not self.b.add_bias(label, self.consts[other[0]]):
            raise ModelImportError(f"unsupported ONNX node {label!r} (Add): only a constant bias right after "
                                   f"MatMul, Gemm or Conv is supported")

    def _op_Relu(self, node, label, attrs):
        self.b.relu(label)

    def _op_MaxPool(self, node, label, attrs):
        kernel, strides, pads = self._pool_window(node, label, attrs)
        self.b.maxpool(label, kernel, strides, pads)

    def _op_AveragePool(self, node, label, attrs):
        kernel, strides, pads = self._pool_window(node, label, attrs)
        self.b.avgpool(label, kernel, strides, pads, count_include_pad=bool(attrs.get("count_include_pad", 0)))

    def _op_GlobalAveragePool(self, node, label, attrs):
        self.b.global_avgpool(label)

    def _op_ReduceMean(self, node, label, attrs):
        axes = attrs.get("axes")
        if len(node.input) > 1 and node.input[1]:
            axes = self._const(node, label, 1)
        ndim = len(self.b.shape) + 1
        axes = sorted(int(a) % ndim for a in axes) if axes is not None else None
        if ndim != 4 or axes != [2, 3]:
            raise ModelImportError(f"unsupported ONNX node {label!r} (ReduceMean): only the mean over H and W of "
                                   f"images is supported (axes {axes})")
        self.b.global_avgpool(label)
        if not attrs.get("keepdims", 1):
            self.b.flatten(label)

    def _op_BatchNormalization(self, node, label, attrs):
        self._reject(node, label, attrs, "training_mode", lambda v: int(v) == 0, "only inference, 0")
        self._reject(node, label, attrs, "spatial", lambda v: int(v) == 1, "only 1")
        gamma, beta, mean, var = (self._const(node, label, i) for i in (1, 2, 3, 4))
        self.b.batchnorm(label, gamma, beta, mean, var, float(attrs.get("epsilon", 1e-5)))

    def _op_Flatten(self, node, label, attrs):
        self._reject(node, label, attrs, "axis", lambda v: int(v) == 1, "only 1")
        self.b.flatten(label)

    def _op_Reshape(self, node, label, attrs):
        target = [int(v) for v in np.asarray(self._const(node, label, 1)).reshape(-1)]
        features = int(np.prod(self.b.shape))
        if len(target) == 2 and target[1] in (-1, features) and not (target[1] == -1 and target[0] == -1):
            self.b.flatten(label)
        elif [d for d in target[1:]] == list(self.b.shape) and target[0] in (0, -1, 1):
            pass  # a reshape to the shape it already has
        else:
            raise ModelImportError(f"unsupported ONNX node {label!r} (Reshape): only a reshape to (batch, features) "
                                   f"is supported, not to {target}")

    def _op_Squeeze(self, node, label, attrs):
        axes = attrs.get("axes")
        if len(node.input) > 1 and node.input[1]:
            axes = self._const(node, label, 1)
        ndim = len(self.b.shape) + 1
        full = (1,) + self.b.shape
        axes = sorted(int(a) % ndim for a in axes) if axes is not None else [i for i in range(1, ndim) if full[i] == 1]
        if ndim == 4 and self.b.shape[1:] == (1, 1) and axes == [2, 3]:
            self.b.flatten(label)
        else:
            raise ModelImportError(f"unsupported ONNX node {label!r} (Squeeze): only squeezing a (C, 1, 1) map to "
                                   f"(C,) is supported (axes {axes} of {list(full)})")

    def _op_Pad(self, node, label, attrs):
        mode = attrs.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        modes = {"constant": "zeros", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}
        if mode not in modes:
            raise ModelImportError(f"ONNX node {label!r} (Pad): mode={mode} is not supported")
        pads = [int(v) for v in np.asarray(self._const(node, label, 1)).reshape(-1)]
        value = self._const(node, label, 2, optional=True)
        if value is not None and np.size(value) and float(np.asarray(value).reshape(-1)[0]) != 0.0:
            raise ModelImportError(f"ONNX node {label!r} (Pad): only zero padding values are supported")
        axes = self._const(node, label, 3, optional=True)
        if axes is not None or len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)):
            raise ModelImportError(f"ONNX node {label!r} (Pad): only padding of H and W of images is supported")
        self.b.pad(label, (pads[2], pads[3], pads[6], pads[7]), modes[mode])

    def _op_Dropout(self, node, label, attrs):
        mode = self._const(node, label, 2, optional=True)
        if mode is not None and bool(np.asarray(mode)):
            raise ModelImportError(f"ONNX node {label!r} (Dropout): training_mode=True is not supported")

    def _op_Identity(self, node, label, attrs):
        pass
