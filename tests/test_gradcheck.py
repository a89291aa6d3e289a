"""Finite-difference checks of every trainable parameter of every fine-tuning method."""

import numpy as np
import pytest

from skip2lora.methods import METHODS
from skip2lora.nn.network import lenet5, mlp


def _base(arch):
    if arch == "lenet5":
        net = lenet5().init(3, np.float64)
        x = np.random.default_rng(1).random((3, 1, 28, 28))
    else:
        net = mlp(12, 4, hidden=7).init(3, np.float64)
        rng = np.random.default_rng(1)
        for name in ("bn1", "bn2"):  # non-trivial frozen statistics
            net.params[f"{name}.running_mean"] = rng.normal(0, 0.3, 7)
            net.params[f"{name}.running_var"] = rng.uniform(0.5, 2, 7)
        x = rng.normal(0, 1, (5, 12))
    y = np.random.default_rng(2).integers(0, net.classes, len(x))
    return net, x, y


def _check_all_parameters(method, x, y, rng):
    idx = np.arange(len(x))
    for p in method.trainable().values():  # LoRA starts with B = 0 (zero gradient for A)
        p += rng.normal(0, 0.05, p.shape)
    _, grads = method.loss_and_grads(idx)
    params = method.trainable()
    assert set(grads) == set(params), "every trainable parameter has a gradient"
    eps = 1e-6
    for pname, p in params.items():
        for i in rng.choice(p.size, size=min(6, p.size), replace=False):
            pos = np.unravel_index(i, p.shape)
            old = p[pos]
            p[pos] = old + eps
            lp = method.loss_and_grads(idx)[0]
            p[pos] = old - eps
            lm = method.loss_and_grads(idx)[0]
            p[pos] = old
            num = (lp - lm) / (2 * eps)
            ana = grads[pname][pos]
            assert abs(num - ana) <= 1e-6 + 1e-5 * abs(num), f"{method.name}/{pname}{pos}: {ana} vs {num}"


@pytest.mark.parametrize("arch", ["lenet5", "mlp"])
@pytest.mark.parametrize("name", list(METHODS))
def test_gradients_match_finite_differences(arch, name):
    net, x, y = _base(arch)
    method = METHODS[name](net, lr=0.1, rank=2, seed=0)
    method.prepare(x, y)
    _check_all_parameters(method, x, y, np.random.default_rng(4))


def test_quant_cache_holds_codes_times_power_of_two():
    net, x, y = _base("mlp")
    method = METHODS["quant-skip2-lora"](net, lr=0.1, rank=2, seed=0)
    method.prepare(x, y)
    off = method.adapters.offsets
    for k, e in enumerate(method.quantizer.exponents):
        codes = method.cache_x[:, off[k]:off[k + 1]] / 2.0 ** e
        assert np.array_equal(codes, np.round(codes))
        lo, hi = (-8, 7) if method.quantizer.signed[k] else (0, 15)
        assert codes.min() >= lo and codes.max() <= hi
