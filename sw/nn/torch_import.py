"""Import a pretrained PyTorch classifier as a base model.

    net = from_torch(model, input_shape=(1, 28, 28))   # nn.Sequential or any chain-like nn.Module

An ``nn.Module`` is traced with ``torch.fx`` (no example run needed), so `nn.Sequential` and modules
whose ``forward`` is a plain chain of layers import directly; a TorchScript module
(``torch.jit.trace``/``script``, or a file from ``torch.jit.save``) goes through the ONNX exporter and
`from_onnx` (needs the onnx package). Supported: Conv2d (any kernel, stride, padding and padding
mode, with or without bias; groups and dilation 1), Linear, ReLU, MaxPool2d, AvgPool2d,
AdaptiveAvgPool2d (to 1x1 or an exact divisor), BatchNorm1d/2d (folded or kept, see `lowering`),
Flatten / ``view``/``reshape`` to (batch, -1), Dropout and Identity (ignored: inference). Anything
else is a `ModelImportError` naming the node and what it calls. The import checks itself against
the module's own output on a random batch (in eval mode; the module's mode is restored).

``torch`` is optional: imported only when a model is imported.
"""

from __future__ import annotations

import operator
import warnings

import numpy as np

from .lowering import ChainBuilder, ModelImportError, check_logits
from .network import Network

__all__ = ["from_torch", "require_torch"]

PIP_TORCH = "pip install torch"


def require_torch():
    """The torch module, or a one-line error that says how to install it."""
    try:
        import torch
    except ImportError:
        raise ModuleNotFoundError(f"PyTorch import needs the torch package: {PIP_TORCH}") from None
    return torch


def from_torch(module, input_shape, *, fold_batchnorm: bool = True, name: str | None = None,
               verify: bool = True) -> Network:
    """A `Network` from a PyTorch module; ``input_shape`` per sample: (C, H, W) images or (F,) features."""
    torch = require_torch()
    from torch import nn

    shape = tuple(int(d) for d in input_shape)
    label = name or type(module).__name__
    if isinstance(module, torch.jit.ScriptModule):
        return _via_onnx(module, shape, fold_batchnorm, label, verify)
    if not isinstance(module, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, not {type(module).__name__}")
    builder = ChainBuilder(shape, fold_batchnorm=fold_batchnorm, name=label)
    _Walker(_trace(module), builder).run()
    net = builder.finish()
    if verify:
        x = np.random.default_rng(0).normal(0, 1, (2,) + shape).astype(np.float32)
        check_logits(net, x, _run(module, x), "the torch module")
    return net


def _run(module, x):
    """The module's output in eval mode (its own mode is restored)."""
    import torch

    training = module.training
    module.eval()
    try:
        with torch.no_grad():
            return module(torch.from_numpy(x)).detach().cpu().double().numpy()
    finally:
        module.train(training)


def _trace(module):
    import torch.fx

    if isinstance(module, torch.fx.GraphModule):
        return module
    try:
        return torch.fx.symbolic_trace(module)
    except Exception as exc:  # fx's TraceError and whatever the module's forward raises on proxies
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelImportError(f"cannot trace {type(module).__name__} with torch.fx ({first}): use nn.Sequential, "
                               f"a chain-like forward, or export to ONNX") from None


def _via_onnx(module, shape, fold_batchnorm, label, verify):
    """TorchScript modules have no fx graph: export them to ONNX (opset 13) and import that."""
    import io

    import torch

    from .onnx_import import from_onnx, require_onnx

    require_onnx()
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():  # the legacy exporter's deprecation and signature notes
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (torch.zeros((1,) + shape),), buf, dynamo=False, opset_version=13,
                              input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "batch"}},
                              training=torch.onnx.TrainingMode.EVAL)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelImportError(f"cannot export the TorchScript module {label} to ONNX: {first}") from None
    net = from_onnx(buf.getvalue(), fold_batchnorm=fold_batchnorm, name=label, verify=verify)
    if verify:
        x = np.random.default_rng(0).normal(0, 1, (2,) + shape).astype(np.float32)
        check_logits(net, x, _run(module, x), "the torch module")
    return net


def _pair(v):
    return (int(v), int(v)) if np.ndim(v) == 0 else (int(v[0]), int(v[1]))


def _np(t):
    return None if t is None else t.detach().cpu().double().numpy()


class _Walker:
    """Walks the fx graph; each operation must read the chain's current value."""

    def __init__(self, gm, builder: ChainBuilder):
        self.gm, self.b = gm, builder
        self.current = None
        self.batch_nodes = set()  # x.size(0) / x.shape[0]: the batch dimension in a view()
        self.sizes = {}           # other x.size(i): constants
        self.shapes = {}          # x.shape (indexed next): the tensor it reads

    def run(self):
        import torch.fx  # noqa: F401  (the graph's node types)

        placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise ModelImportError(f"the module's forward must take one input, it takes {len(placeholders)}")
        self.current = placeholders[0]
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                continue
            if node.op == "output":
                out = node.args[0]
                if out is not self.current:
                    raise ModelImportError("the module's output is not the end of its layer chain (only a single "
                                           "tensor output of a chain of layers is supported)")
                return
            if node.op == "get_attr":
                raise ModelImportError(f"unsupported {self._label(node)} (parameter {node.target!r} used "
                                       f"directly in forward: wrap it in nn.Linear/nn.Conv2d)")
            if self._size(node):
                continue
            self._check_chain(node)
            if node.op == "call_module":
                self._module(node, self.gm.get_submodule(node.target))
            elif node.op == "call_function":
                self._function(node)
            elif node.op == "call_method":
                self._method(node)
            else:
                raise ModelImportError(f"unsupported {self._label(node)} ({node.op})")
            self.current = node

    # -- chain checks ------------------------------------------------------------------------------
    def _check_chain(self, node):
        import torch.fx

        data = [a for a in node.all_input_nodes if a not in self.batch_nodes and a not in self.sizes
                and a not in self.shapes]
        if any(a is not self.current for a in data) or not data:
            what = self._what(node)
            reads = ", ".join(a.name for a in data) or "no layer input"
            raise ModelImportError(f"{self._label(node)} ({what}) reads {reads}: only a chain of layers "
                                   f"is supported (no branches or skip connections)")
        if node.args and isinstance(node.args[0], torch.fx.Node) and node.args[0] is not self.current:
            raise ModelImportError(f"{self._label(node)} ({self._what(node)}): the layer input must be its "
                                   f"first argument")

    def _size(self, node) -> bool:
        """x.size(), x.size(i), x.shape[i], x.shape: constants, except the batch dimension."""
        full = (None,) + self.b.shape
        source = node.args[0] if node.args else None
        if node.op == "call_method" and node.target == "size":
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            if dim is None:
                raise ModelImportError(f"unsupported {self._label(node)} (Tensor.size): only x.size(dim) is "
                                       f"supported")
        elif node.op == "call_function" and node.target is getattr and node.args[1] == "shape":
            self.shapes[node] = source
            return True
        elif node.op == "call_function" and node.target is operator.getitem and node.args[0] in self.shapes:
            dim = node.args[1]
            if not isinstance(dim, int):
                raise ModelImportError(f"unsupported {self._label(node)} (x.shape[{dim}]): only x.shape[dim] "
                                       f"is supported")
            source = self.shapes[source]
        else:
            return False
        dim = int(dim) % len(full)
        if dim == 0:  # the batch size: the same for every tensor of the chain
            self.batch_nodes.add(node)
        elif source is self.current:
            self.sizes[node] = full[dim]
        else:
            raise ModelImportError(f"unsupported {self._label(node)} ({self._what(node)}): only the batch size of an "
                                   f"earlier tensor can be read")
        return True

    @staticmethod
    def _label(node) -> str:
        """Modules by their name in the model (as in its state_dict), other operations by fx's node name."""
        return f"torch module {node.target!r}" if node.op == "call_module" else f"torch node {node.name!r}"

    def _what(self, node) -> str:
        if node.op == "call_module":
            return type(self.gm.get_submodule(node.target)).__name__
        if node.op == "call_method":
            return f"Tensor.{node.target}"
        target = node.target
        mod = getattr(target, "__module__", None) or ""
        mod = "torch.nn.functional" if mod.startswith("torch.nn.functional") else mod.split("._")[0]
        return f"{mod}.{getattr(target, '__name__', target)}" if mod else str(getattr(target, "__name__", target))

    def _unsupported(self, node, detail=""):
        raise ModelImportError(f"unsupported {self._label(node)} ({self._what(node)}){detail}")

    # -- modules -----------------------------------------------------------------------------------
    def _module(self, node, m):
        from torch import nn

        name = node.target
        if isinstance(m, nn.Conv2d):
            if m.groups != 1:
                raise ModelImportError(f"{self._label(node)} (Conv2d): groups={m.groups} is not supported (only 1)")
            if _pair(m.dilation) != (1, 1):
                raise ModelImportError(f"{self._label(node)} (Conv2d): dilation={m.dilation} is not supported "
                                       f"(only 1)")
            kh, kw = m.kernel_size
            if m.padding == "same":  # PyTorch puts the odd extra pixel at the end
                pads = (((kh - 1) // 2, (kw - 1) // 2, kh - 1 - (kh - 1) // 2, kw - 1 - (kw - 1) // 2))
            elif m.padding == "valid":
                pads = (0, 0, 0, 0)
            else:
                ph, pw = _pair(m.padding)
                pads = (ph, pw, ph, pw)
            if m.padding_mode != "zeros" and any(pads):
                self.b.pad(name, pads, m.padding_mode)
                pads = (0, 0, 0, 0)
            self.b.conv(name, _np(m.weight), _np(m.bias), stride=_pair(m.stride), pads=pads)
        elif isinstance(m, nn.Linear):
            self.b.linear(name, _np(m.weight), _np(m.bias))
        elif isinstance(m, nn.ReLU):
            self.b.relu(name)
        elif isinstance(m, nn.MaxPool2d):
            self._maxpool(node, name, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, m.return_indices)
        elif isinstance(m, nn.AvgPool2d):
            self._avgpool(node, name, m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad,
                          m.divisor_override)
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            self._adaptive(node, name, m.output_size)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if m.running_mean is None:
                raise ModelImportError(f"{self._label(node)} ({type(m).__name__}): track_running_stats=False "
                                       f"normalizes with batch statistics, which is not supported")
            if isinstance(m, nn.BatchNorm1d) and len(self.b.shape) != 1:
                raise ModelImportError(f"{self._label(node)} (BatchNorm1d): only flat (batch, features) inputs "
                                       f"are supported, not {self.b.shape}")
            if isinstance(m, nn.BatchNorm2d) and len(self.b.shape) != 3:
                raise ModelImportError(f"{self._label(node)} (BatchNorm2d) needs images, the input here is "
                                       f"{self.b.shape}")
            gamma = _np(m.weight) if m.affine else np.ones(m.num_features)
            beta = _np(m.bias) if m.affine else np.zeros(m.num_features)
            self.b.batchnorm(name, gamma, beta, _np(m.running_mean), _np(m.running_var), float(m.eps))
        elif isinstance(m, nn.Flatten):
            self._flatten(node, m.start_dim, m.end_dim)
        elif isinstance(m, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)):
            pass
        else:
            self._unsupported(node)

    def _maxpool(self, node, name, kernel, stride, padding, dilation, ceil_mode, return_indices):
        if return_indices:
            raise ModelImportError(f"{self._label(node)} (MaxPool2d): return_indices=True is not supported")
        if _pair(dilation) != (1, 1):
            raise ModelImportError(f"{self._label(node)} (MaxPool2d): dilation={dilation} is not supported "
                                   f"(only 1)")
        kernel = _pair(kernel)
        stride = kernel if stride is None or stride == [] else _pair(stride)
        ph, pw = _pair(padding)
        self._no_partial_window(node, "MaxPool2d", ceil_mode, kernel, stride, (ph, pw))
        self.b.maxpool(name, kernel, stride, (ph, pw, ph, pw))

    def _avgpool(self, node, name, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override):
        if divisor_override is not None:
            raise ModelImportError(f"{self._label(node)} (AvgPool2d): divisor_override={divisor_override} "
                                   f"is not supported")
        kernel = _pair(kernel)
        stride = kernel if stride is None or stride == [] else _pair(stride)
        ph, pw = _pair(padding)
        self._no_partial_window(node, "AvgPool2d", ceil_mode, kernel, stride, (ph, pw))
        self.b.avgpool(name, kernel, stride, (ph, pw, ph, pw), count_include_pad=bool(count_include_pad))

    def _no_partial_window(self, node, what, ceil_mode, kernel, stride, pad):
        if not ceil_mode:
            return
        self.b.need_images(node.name, what)
        for n, k, s, p in zip(self.b.shape[1:], kernel, stride, pad):
            if (n + 2 * p - k) % s:
                raise ModelImportError(f"{self._label(node)} ({what}): ceil_mode=True is not supported (only "
                                       f"False; here it adds a partial window)")

    def _adaptive(self, node, name, output_size):
        _, h, w = self.b.need_images(node.name, "AdaptiveAvgPool2d")
        oh, ow = _pair(output_size) if output_size is not None else (h, w)
        oh, ow = oh or h, ow or w  # None keeps that size
        if h % oh or w % ow:
            raise ModelImportError(f"{self._label(node)} (AdaptiveAvgPool2d): output size {(oh, ow)} must "
                                   f"divide the {h}x{w} input")
        self.b.avgpool(name, (h // oh, w // ow), (h // oh, w // ow))

    def _flatten(self, node, start, end):
        ndim = len(self.b.shape) + 1
        if start % ndim != 1 or end % ndim != ndim - 1:
            raise ModelImportError(f"{self._label(node)} ({self._what(node)}): only flattening dims 1..-1 is "
                                   f"supported (start_dim={start}, end_dim={end})")
        self.b.flatten(node.name)

    # -- functions and methods ---------------------------------------------------------------------
    def _args(self, node):
        """The call's arguments after the tensor, as keywords where fx can name them."""
        return list(node.args[1:]), dict(node.kwargs)

    def _function(self, node):
        import torch
        from torch.nn import functional as F

        f = node.target
        args, kw = self._args(node)
        if f in (torch.relu, F.relu, torch.relu_):
            self.b.relu(node.name)
        elif f is torch.flatten:
            self._flatten(node, args[0] if args else kw.get("start_dim", 0),
                          args[1] if len(args) > 1 else kw.get("end_dim", -1))
        elif f in (F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout):
            pass
        elif f is F.max_pool2d:
            p = _bind(node, ["kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"],
                      [None, None, 0, 1, False, False])
            self._maxpool(node, node.name, *p.values())
        elif f is F.avg_pool2d:
            p = _bind(node, ["kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"],
                      [None, None, 0, False, True, None])
            self._avgpool(node, node.name, *p.values())
        elif f is F.adaptive_avg_pool2d:
            self._adaptive(node, node.name, _bind(node, ["output_size"], [None])["output_size"])
        elif f is torch.reshape:
            self._view(node, args[0] if args else kw.get("shape"))
        else:
            self._unsupported(node)

    def _method(self, node):
        args, kw = self._args(node)
        m = node.target
        if m in ("relu", "relu_"):
            self.b.relu(node.name)
        elif m in ("view", "reshape"):
            self._view(node, args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args or kw.get("shape"))
        elif m == "flatten":
            self._flatten(node, args[0] if args else kw.get("start_dim", 0),
                          args[1] if len(args) > 1 else kw.get("end_dim", -1))
        elif m in ("contiguous", "float", "detach"):
            pass
        else:
            self._unsupported(node)

    def _view(self, node, shape):
        """view/reshape to (batch, -1) or (batch, features) is a flatten."""
        shape = list(shape or [])
        dims = [("batch" if a in self.batch_nodes else self.sizes[a] if a in self.sizes else a) for a in shape]
        features = int(np.prod(self.b.shape))
        if len(dims) == 2 and dims[0] in ("batch", -1) and dims[1] in (-1, features) and dims != [-1, -1]:
            self.b.flatten(node.name)
            return
        shown = [d if d != "batch" else "x.size(0)" for d in dims]
        raise ModelImportError(f"unsupported {self._label(node)} ({self._what(node)}): only a reshape to "
                               f"(batch, -1) is supported, not {shown}")


def _bind(node, names, defaults):
    """A functional call's arguments after the tensor, by name (positional or keyword)."""
    out = dict(zip(names, defaults))
    out.update(zip(names, node.args[1:]))
    out.update({k: v for k, v in node.kwargs.items() if k in out})
    return out
