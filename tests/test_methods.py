"""The fine-tuning methods: Skip2-LoRA's cache really skips the base forward, and the methods learn."""

import numpy as np
import pytest

from skip2lora.methods import METHODS
from skip2lora.nn.network import mlp


def _task(seed=0, n=64):
    rng = np.random.default_rng(seed)
    net = mlp(10, 3, hidden=8).init(seed)
    x = rng.normal(0, 1, (n, 10)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1)
    return net, x, y


def _train(method, x, y, epochs, batch=8):
    method.prepare(x, y)
    for _ in range(epochs):
        for s in range(0, len(x), batch):
            method.step(slice(s, s + batch))


@pytest.mark.parametrize("name,expected", [("skip2-lora", lambda n, e: n), ("quant-skip2-lora", lambda n, e: n),
                                           ("skip-lora", lambda n, e: n * e)])
def test_base_forward_calls(name, expected):
    """Skip2-LoRA runs the base forward once per sample (the cache fill); Skip-LoRA every epoch."""
    net, x, y = _task()
    m = METHODS[name](net, lr=0.05)
    epochs = 4
    _train(m, x, y, epochs)
    assert m.net.forward_samples == expected(len(x), epochs)


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_reduces_the_training_loss(name):
    net, x, y = _task(1)
    m = METHODS[name](net, lr=0.05, seed=1)
    m.prepare(x, y)

    def epoch():
        losses = [m.step(slice(s, s + 8)) for s in range(0, len(x), 8)]
        per_epoch = m.finish_epoch()
        return np.mean(losses) if per_epoch is None else per_epoch

    first = epoch()
    for _ in range(30):
        last = epoch()
    assert last < first


def test_quant_cache_is_4_bit_sized():
    net, x, y = _task(2, n=128)
    m = METHODS["quant-skip2-lora"](net, lr=0.05)
    m.prepare(x, y)
    float_cache = METHODS["skip2-lora"](net, lr=0.05)
    float_cache.prepare(x, y)
    codes = m.packed_bytes
    assert codes == sum((d + 1) // 2 for d in m.adapters.dims) * len(x)
    assert m.cache_bytes < float_cache.cache_bytes / 4
