"""Bring your own model: ONNX and PyTorch import, ONNX export, saved layer-list models.

Tests that need onnx or torch skip when they are missing locally, and fail under CI (CI=1/true),
where .ci/run installs them.
"""

import io
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

from skip2lora.nn.layers import AvgPool2d, BatchNorm, Conv2d, Dense, Flatten, MaxPool2, MaxPool2d, ReLU
from skip2lora.nn.lowering import ModelImportError
from skip2lora.nn.network import build, sequential

from optional_modules import need_module



@pytest.fixture
def onnx():
    return need_module("onnx")


@pytest.fixture
def torch():
    torch = need_module("torch")
    torch.manual_seed(0)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # the legacy TorchScript ONNX exporter
    return torch


def _close(got, expected):
    """Logits agree to float32 rounding: within 1e-5, relative to the logits' scale where that exceeds 1
    (float32 sums of large terms round at that scale: the source frameworks differ as much from float64)."""
    expected = np.asarray(expected, np.float64)
    err = np.abs(np.asarray(got, np.float64) - expected).max() / max(1.0, float(np.abs(expected).max()))
    assert err <= 1e-5, f"logits differ by {err:.3g} (relative to the largest logit)"


# -- layers (NumPy only) ----------------------------------------------------------------------------

def _numeric_grad(f, x, eps=1e-6):
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        hi = f()
        x[i] = old - eps
        lo = f()
        x[i] = old
        g[i] = (hi - lo) / (2 * eps)
    return g


@pytest.mark.parametrize("layer", [
    Conv2d("c", 2, 3, (3, 2), padding=(1, 0, 2, 1), stride=(2, 1)),
    Conv2d("c", 2, 3, 3, padding=1, padding_mode="reflect"),
    Conv2d("c", 2, 3, 3, padding=(2, 1), padding_mode="replicate"),
    Conv2d("c", 2, 3, 2, padding=(1, 1, 0, 1), padding_mode="circular", stride=2),
    MaxPool2d("p", 3, 2, 1), MaxPool2d("p", (2, 3), (1, 2)),
    AvgPool2d("p", 3, 2, 1, count_include_pad=False), AvgPool2d("p", 2, 1, (0, 1), count_include_pad=True),
    BatchNorm("bn", 2),
], ids=lambda layer: f"{type(layer).__name__}-{json.dumps(layer.spec(), sort_keys=True)}")
def test_new_layer_gradients_match_finite_differences(layer):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (2, 5, 6, 2))
    params = layer.init_params(rng, np.float64)
    params = {k: v + rng.normal(0, 0.3, v.shape) if k.endswith((".b", ".beta")) else v for k, v in params.items()}
    train = isinstance(layer, BatchNorm)  # batch statistics over n, h, w: the training-mode backward
    y, ctx = layer.forward(params, x, train=train)
    w = rng.normal(0, 1, y.shape)
    dx, grads = layer.backward(params, ctx, w, want=set(layer.param_names))
    np.testing.assert_allclose(dx, _numeric_grad(lambda: float((layer.forward(params, x, train=train)[0] * w).sum()), x),
                               rtol=1e-5, atol=1e-7)
    for name in layer.param_names:
        num = _numeric_grad(lambda: float((layer.forward(params, x, train=train)[0] * w).sum()), params[name])
        np.testing.assert_allclose(grads[name], num, rtol=1e-5, atol=1e-7)


def test_conv_fast_path_equals_im2col():
    rng = np.random.default_rng(1)
    for conv in (Conv2d("c", 3, 4, (3, 2), padding=(1, 0, 2, 1)), Conv2d("c", 3, 4, 3, padding=1, padding_mode="reflect")):
        params = conv.init_params(rng, np.float64)
        x = rng.normal(0, 1, (2, 7, 6, 3))
        fast, _ = conv.forward(params, x, record=False)   # banded products
        full, _ = conv.forward(params, x, record=True)    # im2col
        np.testing.assert_allclose(fast, full, rtol=1e-12, atol=1e-12)


def test_maxpool2d_2x2_equals_the_seeds_pool():
    x = np.random.default_rng(2).normal(0, 1, (3, 6, 8, 4))
    x[0, 0, 0, 0] = x[0, 0, 1, 0]  # a tie: both send the gradient to the first maximum
    y1, c1 = MaxPool2("a").forward({}, x)
    y2, c2 = MaxPool2d("b", 2).forward({}, x)
    np.testing.assert_array_equal(y1, y2)
    dy = np.random.default_rng(3).normal(0, 1, y1.shape)
    np.testing.assert_array_equal(MaxPool2("a").backward({}, c1, dy)[0], MaxPool2d("b", 2).backward({}, c2, dy)[0])


def test_layer_list_config_rebuilds_the_network():
    layers = [Conv2d("c1", 1, 3, 3, padding=1, stride=2), ReLU("r1"), AvgPool2d("p1", 2, count_include_pad=False),
              MaxPool2d("p2", 2, 1), Flatten("f"), BatchNorm("bn", 3), Dense("fc", 3, 4)]
    net = sequential(layers, (1, 9, 9), 4, name="toy").init(0)
    again = build(json.loads(json.dumps(net.config)))
    assert [layer.spec() for layer in again.layers] == [layer.spec() for layer in net.layers]
    twin = net.copy()
    x = np.random.default_rng(0).normal(0, 1, (5, 1, 9, 9))
    np.testing.assert_array_equal(twin.forward(x), net.forward(x))
    assert net.tap_dims == [81, 3] and net.classes == 4


def test_layer_list_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"^unknown layer type 'softmax'; known: dense, conv2d"):
        build({"arch": "layers", "input_shape": [3], "classes": 2, "layers": [{"type": "softmax", "name": "s"}]})
    with pytest.raises(ValueError, match=r"^layer names must be unique: fc repeated$"):
        sequential([Dense("fc", 3, 3), Dense("fc", 3, 2)], (3,), 2)
    with pytest.raises(ValueError, match=r"^a base model needs at least one Conv2d or Dense layer"):
        sequential([ReLU("r")], (3,), 3)


# -- optional dependencies --------------------------------------------------------------------------

def test_importing_the_package_imports_neither_torch_nor_onnx():
    code = ("import sys, skip2lora, skip2lora.nn, skip2lora.nn.network, skip2lora.nn.onnx_import, "
            "skip2lora.nn.torch_import, skip2lora.nn.onnx_export, skip2lora.nn.model_io, skip2lora.driver, "
            "skip2lora.finetune; print(sorted(m for m in ('torch', 'onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_onnx_is_one_line_with_the_pip_command(monkeypatch, tmp_path):
    from skip2lora.nn.model_io import load_model, save_model
    from skip2lora.nn.onnx_import import from_onnx

    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    msg = 'ONNX import/export needs the onnx package: pip install "onnx>=1.14"'
    with pytest.raises(ModuleNotFoundError) as exc:
        from_onnx(b"")
    assert str(exc.value) == msg
    (tmp_path / "m.onnx").write_bytes(b"")
    with pytest.raises(ModuleNotFoundError) as exc:
        load_model(tmp_path / "m.onnx")
    assert str(exc.value) == msg
    net = sequential([Dense("fc", 3, 2)], (3,), 2).init(0)
    with pytest.raises(ModuleNotFoundError) as exc:
        save_model(net, tmp_path / "out.onnx")
    assert str(exc.value) == msg


def test_missing_torch_is_one_line_with_the_pip_command(monkeypatch, tmp_path):
    from skip2lora.nn.model_io import load_model
    from skip2lora.nn.torch_import import from_torch

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ModuleNotFoundError) as exc:
        from_torch(object(), (3,))
    assert str(exc.value) == "PyTorch import needs the torch package: pip install torch"
    (tmp_path / "m.pt").write_bytes(b"")
    with pytest.raises(ModuleNotFoundError) as exc:
        load_model(tmp_path / "m.pt", input_shape=(3,))
    assert str(exc.value) == "PyTorch import needs the torch package: pip install torch"


# -- ONNX, operator by operator ---------------------------------------------------------------------

def _onnx_model(nodes, inits, in_shape, out_dim, opset=13, out_name=None):
    from onnx import TensorProto, helper, numpy_helper

    tensors = [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", *in_shape])],
                              [helper.make_tensor_value_info(out_name or nodes[-1].output[0], TensorProto.FLOAT,
                                                             ["n", out_dim])], tensors)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = helper.find_min_ir_version_for(opsets)
    return model


def _rand(*shape, seed=0):
    return np.random.default_rng(seed + sum(shape)).normal(0, 0.5, shape).astype(np.float32)


def _check_onnx(model, in_shape, **kw):
    from skip2lora.nn.onnx_import import from_onnx, reference_logits

    net = from_onnx(model, **kw)
    x = np.random.default_rng(7).normal(0, 1, (6,) + tuple(in_shape)).astype(np.float32)
    _close(net.forward(x), reference_logits(model, x))
    return net


def _head(prev, features, classes=3, name="fc"):
    """Flatten + Gemm to ``classes`` logits: (nodes, initializers)."""
    from onnx import helper

    return ([helper.make_node("Flatten", [prev], ["flat"], name="flatten", axis=1),
             helper.make_node("Gemm", ["flat", f"{name}.w", f"{name}.b"], ["logits"], name=name, transB=1)],
            {f"{name}.w": _rand(classes, features), f"{name}.b": _rand(classes)})


@pytest.mark.parametrize("attrs,bias,out_hw", [
    ({}, True, (6, 6)),
    ({"strides": [2, 1], "pads": [1, 0, 2, 1]}, False, (5, 7)),
    ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, True, (4, 4)),
    ({"auto_pad": "SAME_LOWER"}, True, (8, 8)),
    ({"auto_pad": "VALID", "dilations": [1, 1], "group": 1}, True, (6, 6)),
], ids=["plain", "stride-pads-nobias", "same-upper", "same-lower", "valid"])
def test_onnx_conv(onnx, attrs, bias, out_hw):
    from onnx import helper

    ins = ["x", "w", "b"] if bias else ["x", "w"]
    head, inits = _head("y", 4 * out_hw[0] * out_hw[1])
    nodes = [helper.make_node("Conv", ins, ["y"], name="conv", **attrs)] + head
    inits.update(w=_rand(4, 2, 3, 3), b=_rand(4))
    net = _check_onnx(_onnx_model(nodes, inits, (2, 8, 8), 3), (2, 8, 8))
    assert isinstance(net.layers[0], Conv2d) and net.tap_dims == [128, 4 * out_hw[0] * out_hw[1]]


def test_onnx_gemm_variants_and_matmul_add(onnx):
    from onnx import helper

    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], name="g1", alpha=0.5, beta=2.0),   # B (in, out)
             helper.make_node("Relu", ["h1"], ["r1"], name="r1"),
             helper.make_node("Gemm", ["r1", "w2"], ["h2"], name="g2", transB=1),                   # no bias
             helper.make_node("MatMul", ["h2", "w3"], ["m3"], name="mm"),
             helper.make_node("Add", ["m3", "b3"], ["h3"], name="bias"),
             helper.make_node("Dropout", ["h3"], ["d3"], name="drop"),
             helper.make_node("Identity", ["d3"], ["i3"], name="id"),
             helper.make_node("MatMul", ["i3", "w4"], ["logits"], name="mm2")]
    inits = {"w1": _rand(5, 7), "b1": _rand(1, 7), "w2": _rand(6, 7), "w3": _rand(6, 4), "b3": _rand(4), "w4": _rand(4, 3)}
    net = _check_onnx(_onnx_model(nodes, inits, (5,), 3), (5,))
    assert [type(layer).__name__ for layer in net.layers] == ["Dense", "ReLU", "Dense", "Dense", "Dense"]
    assert net.tap_dims == [5, 7, 6, 4]


@pytest.mark.parametrize("op,attrs,hw", [
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2]}, (4, 4)),
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, (4, 4)),
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}, (4, 4)),   # no partial window
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, (4, 4)),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}, (4, 4)),
    ("AveragePool", {"kernel_shape": [2, 3]}, (7, 6)),
    ("GlobalAveragePool", {}, (1, 1)),
], ids=["max2", "max3-pad", "max-ceil-exact", "avg-pad", "avg-count-pad", "avg-rect", "global-avg"])
def test_onnx_pooling(onnx, op, attrs, hw):
    from onnx import helper

    head, inits = _head("p", 3 * hw[0] * hw[1])
    nodes = [helper.make_node(op, ["x"], ["p"], name="pool", **attrs)] + head
    _check_onnx(_onnx_model(nodes, inits, (3, 8, 8), 3), (3, 8, 8))


def test_onnx_maxpool_2x2_uses_the_fast_pool(onnx):
    from onnx import helper

    head, inits = _head("p", 3 * 16)
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2])] + head
    net = _check_onnx(_onnx_model(nodes, inits, (3, 8, 8), 3), (3, 8, 8))
    assert type(net.layers[0]) is MaxPool2


def test_onnx_batchnorm_folded_after_conv_and_dense_kept_elsewhere(onnx):
    from onnx import helper

    def bn(prefix, n, seed):
        rng = np.random.default_rng(seed)
        return {f"{prefix}.g": rng.uniform(0.5, 1.5, n).astype(np.float32), f"{prefix}.b": _rand(n, seed=seed),
                f"{prefix}.m": _rand(n, seed=seed + 1), f"{prefix}.v": rng.uniform(0.5, 2, n).astype(np.float32)}

    def bn_node(prefix, x, y):
        return helper.make_node("BatchNormalization", [x] + [f"{prefix}.{k}" for k in "gbmv"], [y], name=prefix,
                                epsilon=1e-3)

    nodes = [bn_node("bn0", "x", "a"),                                           # first layer: kept
             helper.make_node("Conv", ["a", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             bn_node("bn1", "c", "d"),                                           # after a conv: folded
             helper.make_node("Relu", ["d"], ["e"], name="relu"),
             helper.make_node("Flatten", ["e"], ["f"], name="flatten"),
             bn_node("bn2", "f", "g"),                                           # after flatten: kept, permuted
             helper.make_node("Gemm", ["g", "fc.w", "fc.b"], ["h"], name="fc", transB=1),
             bn_node("bn3", "h", "logits")]                                      # after a dense: folded
    inits = {**bn("bn0", 2, 1), **bn("bn1", 3, 3), **bn("bn2", 75, 5), **bn("bn3", 4, 7), "w": _rand(3, 2, 3, 3),
             "fc.w": _rand(4, 75), "fc.b": _rand(4)}
    model = _onnx_model(nodes, inits, (2, 5, 5), 4)
    net = _check_onnx(model, (2, 5, 5))
    assert [type(layer).__name__ for layer in net.layers] == ["BatchNorm", "Conv2d", "ReLU", "Flatten", "BatchNorm",
                                                              "Dense"]
    kept = _check_onnx(model, (2, 5, 5), fold_batchnorm=False)
    assert sum(isinstance(layer, BatchNorm) for layer in kept.layers) == 4


def test_onnx_flatten_by_reshape_shape_arithmetic_squeeze_and_reducemean(onnx):
    from onnx import TensorProto, helper

    def net_with(tail, inits, features):
        head, more = _head(tail[-1].output[0], features)
        return _onnx_model([helper.make_node("Relu", ["x"], ["r"], name="relu")] + tail + head[1:], {**inits, **more},
                           (3, 4, 4), 3)

    # x.view(x.size(0), -1) as the TorchScript exporter writes it without constant folding
    shape_chain = [helper.make_node("Shape", ["r"], ["s"], name="shape"),
                   helper.make_node("Gather", ["s", "zero"], ["n"], name="gather", axis=0),
                   helper.make_node("Unsqueeze", ["n", "axes"], ["n1"], name="unsq"),
                   helper.make_node("Concat", ["n1", "minus1"], ["target"], name="concat", axis=0),
                   helper.make_node("Reshape", ["r", "target"], ["flat"], name="reshape")]
    consts = {"zero": np.array(0, np.int64), "axes": np.array([0], np.int64), "minus1": np.array([-1], np.int64)}
    _check_onnx(net_with(shape_chain, consts, 48), (3, 4, 4))
    reshape = [helper.make_node("Constant", [], ["t"], name="const",
                                value=helper.make_tensor("v", TensorProto.INT64, [2], [-1, 48])),
               helper.make_node("Reshape", ["r", "t"], ["flat"], name="reshape")]
    _check_onnx(net_with(reshape, {}, 48), (3, 4, 4))
    squeeze = [helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
               helper.make_node("Squeeze", ["g", "sq"], ["flat"], name="squeeze")]
    _check_onnx(net_with(squeeze, {"sq": np.array([2, 3], np.int64)}, 3), (3, 4, 4))
    mean = [helper.make_node("ReduceMean", ["r"], ["flat"], name="mean", axes=[2, 3], keepdims=0)]
    _check_onnx(net_with(mean, {}, 3), (3, 4, 4))


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_onnx_pad_merges_into_the_next_conv(onnx, mode):
    from onnx import helper

    head, inits = _head("c", 4 * 6 * 7)
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], name="pad", mode=mode),
             helper.make_node("Conv", ["p", "w", "b"], ["c"], name="conv")] + head
    inits.update(pads=np.array([0, 0, 1, 2, 0, 0, 1, 0], np.int64), w=_rand(4, 2, 3, 3), b=_rand(4))
    net = _check_onnx(_onnx_model(nodes, inits, (2, 6, 7), 3), (2, 6, 7))
    conv = net.layers[0]
    assert conv.pads == (1, 2, 1, 0) and conv.padding_mode == {"constant": "zeros", "reflect": "reflect",
                                                                "edge": "replicate"}[mode]


def test_onnx_old_opset_is_converted(onnx):
    from onnx import helper

    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="fc1", transB=1),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"], name="fc2", transB=1)]
    model = _onnx_model(nodes, {"w": _rand(6, 5), "b": _rand(6), "w2": _rand(3, 6), "b2": _rand(3)}, (5,), 3, opset=11)
    _check_onnx(model, (5,))


def _import_error(model, **kw):
    from skip2lora.nn.onnx_import import from_onnx

    with pytest.raises(ModelImportError) as exc:
        from_onnx(model, **kw)
    return str(exc.value)


def test_onnx_unsupported_operator_names_node_and_type(onnx):
    from onnx import helper

    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="fc1", transB=1),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Identity", ["r"], ["i"]),
             helper.make_node("Sigmoid", ["i"], ["s"]),       # unnamed: called by its type and position
             helper.make_node("Gemm", ["s", "w2", "b2"], ["logits"], name="fc2", transB=1)]
    model = _onnx_model(nodes, {"w": _rand(6, 5), "b": _rand(6), "w2": _rand(3, 6), "b2": _rand(3)}, (5,), 3)
    assert _import_error(model) == "unsupported ONNX node 'Sigmoid_3' (Sigmoid)"
    nodes[3] = helper.make_node("Softmax", ["i"], ["s"], name="softmax")
    model = _onnx_model(nodes, {"w": _rand(6, 5), "b": _rand(6), "w2": _rand(3, 6), "b2": _rand(3)}, (5,), 3)
    assert _import_error(model) == "unsupported ONNX node 'softmax' (Softmax)"


@pytest.mark.parametrize("op,attrs,message", [
    ("Conv", {"dilations": [2, 2]}, "ONNX node 'layer' (Conv): dilations=[2, 2] is not supported (only 1)"),
    ("Conv", {"group": 2}, "ONNX node 'layer' (Conv): group=2 is not supported (only 1)"),
    ("Conv", {"auto_pad": "SAME"}, "ONNX node 'layer' (Conv): auto_pad=SAME is not supported"),
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
     "ONNX node 'layer' (MaxPool): ceil_mode=1 is not supported (only 0; here it adds a partial window)"),
    ("AveragePool", {"kernel_shape": [2, 2], "dilations": [2, 2]},
     "ONNX node 'layer' (AveragePool): dilations=[2, 2] is not supported (only 1)"),
], ids=["dilations", "groups", "auto_pad", "ceil_mode", "pool-dilations"])
def test_onnx_unsupported_attributes_name_the_node(onnx, op, attrs, message):
    from onnx import helper

    ins = ["x", "w"] if op == "Conv" else ["x"]
    head, inits = _head("y", 10)
    nodes = [helper.make_node(op, ins, ["y"], name="layer", **attrs)] + head
    inits["w"] = _rand(2, 1 if attrs.get("group") else 2, 3, 3)
    assert _import_error(_onnx_model(nodes, inits, (2, 8, 8), 3), verify=False) == message


def test_onnx_graph_errors(onnx):
    from onnx import TensorProto, helper

    # a skip connection
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="fc1", transB=1),
             helper.make_node("Add", ["h", "x"], ["logits"], name="skip")]
    model = _onnx_model(nodes, {"w": _rand(5, 5), "b": _rand(5)}, (5,), 5)
    assert _import_error(model) == ("ONNX node 'skip' (Add) reads h, x: only a chain of layers is supported "
                                    "(no branches or skip connections)")
    # an Add that is no bias
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "c"], ["a"], name="shift"),
             helper.make_node("Gemm", ["a", "w", "b"], ["logits"], name="fc", transB=1)]
    model = _onnx_model(nodes, {"c": _rand(5), "w": _rand(3, 5), "b": _rand(3)}, (5,), 3)
    assert _import_error(model) == ("unsupported ONNX node 'shift' (Add): only a constant bias right after MatMul, "
                                    "Gemm or Conv is supported")
    # a symbolic per-sample dimension
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "w", "b"], ["logits"], name="fc", transB=1)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "f"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])],
                              [helper.make_tensor("w", TensorProto.FLOAT, [3, 5], _rand(3, 5).ravel()),
                               helper.make_tensor("b", TensorProto.FLOAT, [3], _rand(3))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    assert _import_error(model) == ("input 'x' has no fixed per-sample shape (['?', '?']): pass input_shape=(C, H, W) "
                                    "or (F,)")
    _check_onnx(model, (5,), input_shape=(5,))
    # an output that is a feature map
    nodes = [helper.make_node("Conv", ["x", "w"], ["logits"], name="conv")]
    from onnx import helper as h
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 4, 4])],
                         [h.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
                         [h.make_tensor("w", TensorProto.FLOAT, [2, 1, 3, 3], _rand(2, 1, 3, 3).ravel())])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    assert _import_error(model) == "the model's output must be flat class logits, not a (2, 2, 2) map"
    with pytest.raises(FileNotFoundError, match="^no ONNX file /nonexistent/m.onnx$"):
        from skip2lora.nn.onnx_import import from_onnx

        from_onnx("/nonexistent/m.onnx")


# -- round trips of the project's own models --------------------------------------------------------

@pytest.fixture(scope="module")
def lenet():
    from skip2lora.data import load_dataset
    from skip2lora.nn.pretrained import load_base

    base, _ = load_base("fmnist-rot75", pretrain_if_missing=False)
    return base, load_dataset("fmnist-rot75")


def _finetune_with(monkeypatch, base, dataset, **kw):
    """`skip2lora.finetune.finetune` exactly as the product runs it, on the given base model."""
    from skip2lora.finetune import finetune
    from skip2lora.nn import pretrained

    monkeypatch.setattr(pretrained, "load_base", lambda *a, **k: (base, {}))
    return finetune("skip2-lora", dataset, progress=False, **kw)


def test_lenet5_onnx_round_trip_same_logits_taps_and_finetuning(onnx, lenet, monkeypatch, tmp_path):
    from skip2lora.nn.model_io import load_model, save_model
    from skip2lora.nn.onnx_import import reference_logits

    base, ds = lenet
    path = save_model(base, tmp_path / "lenet5.onnx")
    back = load_model(path)
    assert [layer.spec() for layer in back.layers] == [layer.spec() for layer in base.layers]
    x = ds.test.x[:1000]
    z0, taps0 = base.forward(x, taps=True)
    z1, taps1 = back.forward(x, taps=True)
    np.testing.assert_array_equal(z1, z0)          # same layers, same float32 weights: bit for bit
    for t0, t1 in zip(taps0, taps1):
        np.testing.assert_array_equal(t1, t0)
    _close(z1[:200], reference_logits(onnx.load(str(path)), x[:200]))   # and the ONNX semantics agree
    r0 = _finetune_with(monkeypatch, base, "fmnist-rot75")
    r1 = _finetune_with(monkeypatch, back, "fmnist-rot75")
    assert r1.accuracy == r0.accuracy and r1.losses == r0.losses
    assert r0.accuracy > r0.accuracy_before + 0.05  # the KV260 job really fine-tuned


def test_lenet5_through_torch_and_its_exporter(torch, onnx, lenet):
    """The project's LeNet-5 rebuilt in PyTorch, exported by torch's own ONNX exporter, imported back."""
    from torch import nn

    from skip2lora.nn.onnx_import import from_onnx
    from skip2lora.nn.torch_import import from_torch

    base, ds = lenet
    p = {k: torch.from_numpy(v.copy()) for k, v in base.params.items()}
    m = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                      nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                      nn.Linear(84, 10)).eval()
    with torch.no_grad():
        for i, name in ((0, "conv1"), (3, "conv2")):
            m[i].weight.copy_(p[f"{name}.w"].reshape(m[i].weight.shape))
            m[i].bias.copy_(p[f"{name}.b"])
        # our flatten is (h, w, c); torch's is (c, h, w)
        m[7].weight.copy_(p["fc1.w"].reshape(120, 5, 5, 16).permute(0, 3, 1, 2).reshape(120, 400))
        m[7].bias.copy_(p["fc1.b"])
        for i, name in ((9, "fc2"), (11, "fc3")):
            m[i].weight.copy_(p[f"{name}.w"])
            m[i].bias.copy_(p[f"{name}.b"])
    x = ds.test.x[:500]
    with torch.no_grad():
        expected = m(torch.from_numpy(np.array(x))).numpy()
    _close(base.forward(x), expected)
    via_torch = from_torch(m, (1, 28, 28))
    _close(via_torch.forward(x), expected)
    buf = io.BytesIO()
    torch.onnx.export(m, (torch.zeros(1, 1, 28, 28),), buf, dynamo=False, opset_version=13, input_names=["x"],
                      dynamic_axes={"x": {0: "n"}})
    via_onnx = from_onnx(buf.getvalue())
    _close(via_onnx.forward(x), expected)
    for net in (via_torch, via_onnx):
        assert net.tap_dims == base.tap_dims
        _, taps = net.forward(x[:50], taps=True)
        for t0, t1 in zip(base.forward(x[:50], taps=True)[1], taps):
            np.testing.assert_allclose(t1, t0, rtol=1e-5, atol=1e-5)


def _har_torch(torch, base):
    """The project's HAR MLP (561-96-96-6 with batch norm) as a torch nn.Sequential with its weights."""
    from torch import nn

    m = nn.Sequential(nn.Linear(561, 96), nn.BatchNorm1d(96), nn.ReLU(), nn.Dropout(0.2), nn.Linear(96, 96),
                      nn.BatchNorm1d(96), nn.ReLU(), nn.Linear(96, 6)).eval()
    p = {k: torch.from_numpy(v.copy()) for k, v in base.params.items()}
    with torch.no_grad():
        for i, name in ((0, "fc1"), (4, "fc2"), (7, "fc3")):
            m[i].weight.copy_(p[f"{name}.w"])
            m[i].bias.copy_(p[f"{name}.b"])
        for i, name in ((1, "bn1"), (5, "bn2")):
            m[i].weight.copy_(p[f"{name}.gamma"])
            m[i].bias.copy_(p[f"{name}.beta"])
            m[i].running_mean.copy_(p[f"{name}.running_mean"])
            m[i].running_var.copy_(p[f"{name}.running_var"])
    return m


def test_har_mlp_from_torch(torch, monkeypatch):
    from skip2lora.data import load_dataset
    from skip2lora.nn.pretrained import load_base
    from skip2lora.nn.torch_import import from_torch

    base, _ = load_base("har", pretrain_if_missing=False)
    ds = load_dataset("har")
    m = _har_torch(torch, base)
    x = ds.test.x
    with torch.no_grad():
        expected = m(torch.from_numpy(np.array(x))).numpy()
    folded = from_torch(m, (561,))
    assert [type(layer).__name__ for layer in folded.layers] == ["Dense", "ReLU", "Dense", "ReLU", "Dense"]
    _close(folded.forward(x), expected)
    kept = from_torch(m, (561,), fold_batchnorm=False)
    assert [layer.spec() for layer in kept.layers] == [
        dict(spec, name=str(i)) for i, spec in zip((0, 1, 2, 4, 5, 6, 7), [layer.spec() for layer in base.layers])]
    z0, taps0 = base.forward(x, taps=True)
    z1, taps1 = kept.forward(x, taps=True)
    np.testing.assert_array_equal(z1, z0)
    for t0, t1 in zip(taps0, taps1):
        np.testing.assert_array_equal(t1, t0)
    r0 = _finetune_with(monkeypatch, base, "har", epochs=30)
    r1 = _finetune_with(monkeypatch, kept, "har", epochs=30)
    r2 = _finetune_with(monkeypatch, folded, "har", epochs=30)
    assert r1.accuracy == r0.accuracy and r1.losses == r0.losses
    assert abs(r2.accuracy - r0.accuracy) <= 2 / len(ds.test)  # folded: the same up to float32 rounding
    assert r0.accuracy > r0.accuracy_before


# -- PyTorch, operator by operator ------------------------------------------------------------------

def _randomize_bn(torch, m):
    from torch import nn

    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
                mod.running_mean.uniform_(-1, 1)
                mod.running_var.uniform_(0.5, 2)
                if mod.affine:
                    mod.weight.uniform_(0.5, 1.5)
                    mod.bias.uniform_(-1, 1)
    return m.eval()


def _check_torch(torch, m, in_shape, **kw):
    from skip2lora.nn.torch_import import from_torch

    net = from_torch(m, in_shape, **kw)
    x = np.random.default_rng(5).normal(0, 1, (6,) + tuple(in_shape)).astype(np.float32)
    with torch.no_grad():
        _close(net.forward(x), m.eval()(torch.from_numpy(x)).numpy())
    return net


def test_torch_sequential_every_supported_module(torch):
    from torch import nn

    m = _randomize_bn(torch, nn.Sequential(
        nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1), nn.Conv2d(4, 6, (3, 2), stride=2, padding=(1, 0), padding_mode="reflect"), nn.ReLU(),
        nn.AvgPool2d(2, padding=1, count_include_pad=False), nn.Conv2d(6, 6, 3, padding="same", padding_mode="circular"),
        nn.BatchNorm2d(6, affine=False), nn.Conv2d(6, 5, 1, padding=1, padding_mode="replicate"),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(20, 20), nn.ReLU(), nn.BatchNorm1d(20), nn.Dropout(),
        nn.Identity(), nn.Linear(20, 5)))
    net = _check_torch(torch, m, (3, 12, 12))
    assert [type(layer).__name__ for layer in net.layers] == [
        "BatchNorm", "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "AvgPool2d", "Conv2d", "Conv2d", "AvgPool2d",
        "Flatten", "Dense", "ReLU", "BatchNorm", "Dense"]
    assert net.tap_dims == [432, 144, 24, 24, 20, 20]
    assert net.layers[1].name == "1" and net.layers[4].padding_mode == "reflect"


def test_torch_module_with_functional_forward(torch):
    from torch import nn
    from torch.nn import functional as F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.fc = nn.Linear(4 * 3 * 3, 16)
            self.out = nn.Linear(16, 7)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv(x)), 2, 2)
            x = F.avg_pool2d(x, kernel_size=2, stride=1)
            x = x.view(x.size(0), -1)
            x = F.dropout(torch.relu(self.fc(x)), 0.5, self.training)
            return self.out(x)

    net = _check_torch(torch, Net(), (1, 10, 10))
    assert net.tap_dims == [100, 36, 16] and net.classes == 7

    class Flat(Net):
        def forward(self, x):
            x = torch.flatten(F.adaptive_avg_pool2d(self.conv(x).relu(), (3, 3)), 1)
            return self.out(self.fc(x).reshape(x.shape[0], -1))

    _check_torch(torch, Flat(), (1, 8, 8))


def test_torchscript_module_imports_through_onnx(torch, onnx, tmp_path):
    from torch import nn

    from skip2lora.nn.model_io import load_model

    m = _randomize_bn(torch, nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
                                           nn.Flatten(), nn.Linear(27, 4)))
    traced = torch.jit.trace(m, torch.zeros(1, 2, 8, 8))
    net = _check_torch(torch, traced, (2, 8, 8))
    assert net.tap_dims == [128, 27]
    torch.jit.save(traced, str(tmp_path / "m.pt"))
    loaded = load_model(tmp_path / "m.pt", input_shape=(2, 8, 8))
    x = np.random.default_rng(0).normal(0, 1, (3, 2, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(loaded.forward(x), net.forward(x))
    with pytest.raises(ValueError, match=r"^m.pt: a PyTorch file does not record its input shape"):
        load_model(tmp_path / "m.pt")
    torch.save(m, str(tmp_path / "pickled.pt"))
    with pytest.raises(ValueError, match=r"is not a TorchScript archive \(torch.jit.save\)"):
        load_model(tmp_path / "pickled.pt", input_shape=(2, 8, 8))


def test_torch_errors_name_the_module(torch):
    from torch import nn

    from skip2lora.nn.torch_import import from_torch

    def error(m, shape):
        with pytest.raises(ModelImportError) as exc:
            from_torch(m, shape)
        return str(exc.value)

    assert error(nn.Sequential(nn.Linear(4, 3), nn.Sigmoid(), nn.Linear(3, 2)), (4,)) == \
        "unsupported torch module '1' (Sigmoid)"
    assert error(nn.Sequential(nn.Conv2d(2, 2, 3, groups=2), nn.Flatten(), nn.Linear(2, 2)), (2, 3, 3)) == \
        "torch module '0' (Conv2d): groups=2 is not supported (only 1)"
    assert error(nn.Sequential(nn.Conv2d(2, 2, 3, dilation=2), nn.Flatten(), nn.Linear(2, 2)), (2, 5, 5)) == \
        "torch module '0' (Conv2d): dilation=(2, 2) is not supported (only 1)"
    assert error(nn.Sequential(nn.MaxPool2d(2, ceil_mode=True), nn.Flatten(), nn.Linear(8, 2)), (2, 3, 3)) == \
        "torch module '0' (MaxPool2d): ceil_mode=True is not supported (only False; here it adds a partial window)"
    assert error(nn.Sequential(nn.Linear(4, 4), nn.Softmax(dim=1)), (4,)) == "unsupported torch module '1' (Softmax)"

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x) + x

    assert error(Residual(), (4,)) == ("torch node 'add' (_operator.add) reads fc, x: only a chain of layers is "
                                       "supported (no branches or skip connections)")

    class Sig(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return torch.sigmoid(self.fc(x))

    assert error(Sig(), (4,)) == "unsupported torch node 'sigmoid' (torch.sigmoid)"
    assert error(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), (3,)) == \
        "0: the weight (4, 4) does not fit 3 input features"


# -- a user's own model on the accelerator's bit-exact backend -------------------------------------

def _user_model(torch):
    """A small CNN with 6 taps (2 conv, 4 linear) and 16 classes, weights random."""
    from torch import nn

    return _randomize_bn(torch, nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(8 * 2 * 2, 48), nn.ReLU(), nn.Linear(48, 40), nn.ReLU(), nn.Dropout(0.1),
        nn.Linear(40, 32), nn.ReLU(), nn.Linear(32, 16)))


def _user_data(n, seed):
    """Images whose class is the largest of 16 projections of rank 2: a rank-4 adapter on tap 0 can learn it."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, 1, 16, 16)).astype(np.float32)
    fixed = np.random.default_rng(99)
    proj = fixed.normal(0, 1, (256, 2)) @ fixed.normal(0, 1, (2, 16))
    return x, (x.reshape(n, -1) @ proj).argmax(axis=1).astype(np.int64)


@pytest.mark.parametrize("route", ["torch", "onnx"])
def test_user_model_with_6_taps_and_16_classes_runs_on_the_fixed_backend(torch, route, tmp_path):
    from skip2lora.driver import FixedBackend, Session, geometry_of
    from skip2lora.fixed.config import AcceleratorConfig
    from skip2lora.nn.model_io import load_model, save_model
    from skip2lora.nn.torch_import import from_torch

    m = _user_model(torch)
    if route == "torch":
        base = from_torch(m, (1, 16, 16))
    else:
        need_module("onnx")
        torch.onnx.export(m, (torch.zeros(1, 1, 16, 16),), str(tmp_path / "user.onnx"), dynamo=False,
                          opset_version=13, input_names=["x"], dynamic_axes={"x": {0: "n"}})
        base = load_model(tmp_path / "user.onnx")
    assert base.tap_dims == [256, 196, 32, 48, 40, 32] and base.classes == 16
    # saved and loaded as the project's own format: the same network
    base = load_model(save_model(base, tmp_path / "user.npz"))
    geometry = geometry_of(base, rank=4)
    config = AcceleratorConfig("user-6x16", geometry, lanes=32, cache_depth=512)
    x, y = _user_data(512, 1)
    x_test, y_test = _user_data(256, 2)
    session = Session(base, FixedBackend(config), seed=0)
    assert session.add_samples(x, y) == 512
    before = session.accuracy(x_test, y_test)
    report = session.finetune(epochs=20, batch=16, lr=0.05)
    after = session.accuracy(x_test, y_test)
    assert report["samples"] == 512 and session.accuracy(x, y) > 0.9 and after > before + 0.3, (before, after)
    session.save_adapters(tmp_path / "adapters.npz")
    again = Session(base.copy(), FixedBackend(config), seed=1)
    again.load_adapters(tmp_path / "adapters.npz")
    np.testing.assert_array_equal(again.logits(x_test), session.logits(x_test))


# -- saving and loading ------------------------------------------------------------------------------

def test_save_and_load_model_npz(tmp_path):
    from skip2lora.nn.model_io import load_model, save_model
    from skip2lora.nn.pretrained import save_base

    layers = [Conv2d("c", 1, 2, 3, stride=2, padding=(1, 0, 1, 0)), ReLU("r"), AvgPool2d("a", 2, count_include_pad=False),
              Flatten("f"), Dense("fc", 4, 3)]
    net = sequential(layers, (1, 7, 5), 3, name="mine").init(4)
    x = np.random.default_rng(0).normal(0, 1, (4, 1, 7, 5))
    for path in (save_model(net, tmp_path / "mine.npz"), save_base(net, {"note": "test"}, tmp_path / "bases", "mine")):
        back = load_model(path)
        assert back.config == net.config
        np.testing.assert_array_equal(back.forward(x), net.forward(x))
    with pytest.raises(ValueError, match=r"^unknown model format 'm.h5': use one of .onnx, .pt, .pth, .npz$"):
        load_model(tmp_path / "m.h5")
    with pytest.raises(FileNotFoundError, match=r"^no model file "):
        load_model(tmp_path / "none.npz")
    np.savez(tmp_path / "bare.npz", w=np.zeros(3))
    with pytest.raises(ValueError, match=r"holds no model config \(__config__\) and has no bare.json beside it$"):
        load_model(tmp_path / "bare.npz")


def test_onnx_export_of_every_layer_type(onnx, tmp_path):
    from skip2lora.nn.model_io import load_model, save_model
    from skip2lora.nn.onnx_export import to_onnx
    from skip2lora.nn.onnx_import import from_onnx, reference_logits

    layers = [BatchNorm("bn0", 2), Conv2d("c1", 2, 4, (3, 2), padding=(1, 0, 2, 1), stride=(2, 1)), ReLU("r1"),
              MaxPool2d("p1", 3, 1, 1), Conv2d("c2", 4, 5, 3, padding=1, padding_mode="reflect"), BatchNorm("bn1", 5),
              AvgPool2d("p2", 2, 2, (0, 1), count_include_pad=False), Conv2d("c3", 5, 3, 2, padding=1,
                                                                              padding_mode="circular"),
              MaxPool2("p3"), Flatten("f"), BatchNorm("bn2", 18), Dense("fc", 18, 6), ReLU("r2"), Dense("out", 6, 3)]
    net = sequential(layers, (2, 10, 8), 3, name="every").init(3)
    rng = np.random.default_rng(4)
    for layer in net.layers:  # non-trivial statistics and biases
        if isinstance(layer, BatchNorm):
            net.params[layer.mean] = rng.normal(0, 0.5, layer.features).astype(np.float32)
            net.params[layer.var] = rng.uniform(0.5, 2, layer.features).astype(np.float32)
            net.params[layer.beta] = rng.normal(0, 0.5, layer.features).astype(np.float32)
    x = rng.normal(0, 1, (5, 2, 10, 8)).astype(np.float32)
    with pytest.raises(ValueError, match=r"^c3: circular padding needs ONNX opset 19 or newer \(opset=13\)$"):
        to_onnx(net)
    model = to_onnx(net, opset=19)
    _close(net.forward(x), reference_logits(model, x))
    back = from_onnx(model, fold_batchnorm=False)
    assert [type(layer).__name__ for layer in back.layers] == [type(layer).__name__ for layer in net.layers]
    np.testing.assert_array_equal(back.forward(x), net.forward(x))
    folded = from_onnx(model)  # bn1 folds into c2; bn0 (first) and bn2 (after flatten) stay
    assert sum(isinstance(layer, BatchNorm) for layer in folded.layers) == 2
    _close(folded.forward(x), net.forward(x))
    with pytest.raises(FileNotFoundError, match=r"^no folder "):
        save_model(net, tmp_path / "missing" / "m.onnx")


def test_shipped_pretrained_weights_load_as_models():
    from skip2lora.nn.model_io import load_model
    from skip2lora.nn.pretrained import load_base, package_dir

    for dataset, key in (("fmnist-rot75", "lenet5-fmnist"), ("har", "mlp-har")):
        base, _ = load_base(dataset, pretrain_if_missing=False)
        net = load_model(package_dir() / f"{key}.npz")
        assert net.config == base.config
        assert all(np.array_equal(net.params[k], v) for k, v in base.params.items())
