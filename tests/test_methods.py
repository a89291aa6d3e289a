"""The fine-tuning methods: Skip2-LoRA's cache really skips the base forward, and the methods learn."""

import re

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


def test_skip_lora_and_skip2_lora_train_the_same_adapters():
    """The cache changes where the taps come from, not the arithmetic: the same adapters (up to float
    rounding: the base forward runs in other batch sizes)."""
    net, x, y = _task(3)
    plain, cached = METHODS["skip-lora"](net, lr=0.05, seed=3), METHODS["skip2-lora"](net, lr=0.05, seed=3)
    for m in (plain, cached):
        _train(m, x, y, epochs=3)
    for name, p in plain.trainable().items():
        np.testing.assert_allclose(p, cached.trainable()[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_skip2_lora_epoch_loss_is_the_mean_cross_entropy_of_its_steps():
    """The loss taken once per epoch equals the per-step losses seen before each update."""
    net, x, y = _task(4)
    m = METHODS["skip2-lora"](net, lr=0.05, seed=4)
    m.prepare(x, y)
    for _ in range(2):
        expected = []
        for s in range(0, len(x), 24):  # the last batch is shorter (64 = 24 + 24 + 16)
            b = slice(s, s + 24)
            loss, _ = m.loss_and_grads(b)
            expected.append(loss * len(x[b]))
            m.step(b)
        assert m.finish_epoch() == pytest.approx(sum(expected) / len(x), rel=1e-5)
    assert m.finish_epoch() is None  # nothing stepped since


@pytest.mark.requires_data("fan-damage1")
@pytest.mark.parametrize("order", ["shuffle", "fixed"])
def test_sample_order_per_epoch(order, monkeypatch):
    """shuffle: every epoch a new permutation of all samples; fixed: the same batches every epoch."""
    from skip2lora.finetune import finetune
    from skip2lora.methods import skip_methods

    seen, rates = [], []
    train_step = skip_methods.Skip2Lora.train_step

    def recording_step(self, plan, zt, labels):  # which cached samples the batch holds
        match = (self.cache_x[:, None, :] == plan.x[None]).all(axis=2)  # (cached, batch)
        assert (match.sum(axis=0) == 1).all()
        idx = match.argmax(axis=0)
        assert np.array_equal(labels, self.y[idx]) and np.array_equal(zt, self.cache_z[idx].T)  # aligned
        seen.append(idx)
        rates.append(self.lr)
        return train_step(self, plan, zt, labels)

    monkeypatch.setattr(skip_methods.Skip2Lora, "train_step", recording_step)
    r = finetune("skip2-lora", "fan-damage1", samples=100, epochs=3, batch=20, order=order, progress=False)
    assert r.order == order and not r.diverged
    epochs = [np.concatenate(seen[i:i + 5]) for i in range(0, 15, 5)]
    for e in epochs:
        assert sorted(e) == list(range(100))
    same = [np.array_equal(epochs[0], e) for e in epochs[1:]]
    assert same == ([True, True] if order == "fixed" else [False, False])
    from skip2lora.finetune import schedule_lrs

    np.testing.assert_allclose(rates, np.concatenate([schedule_lrs(r.lr, e, 3, 5, r.schedule) for e in range(3)]))


@pytest.mark.requires_data("fan-damage1")
def test_unknown_sample_order_is_named():
    from skip2lora.finetune import finetune

    with pytest.raises(ValueError, match="sample order must be one of shuffle, feistel, fixed, not 'random'"):
        finetune("skip2-lora", "fan-damage1", epochs=1, order="random", progress=False)


@pytest.mark.requires_data("fmnist-rot75")
@pytest.mark.parametrize("method", ["lora-all", "skip2-lora"])
def test_divergence_names_where_it_happened(method):
    from skip2lora.finetune import finetune

    r = finetune(method, "fmnist-rot75", samples=64, epochs=3, batch=16, lr=1e4, optimizer="sgd", progress=False)
    assert r.diverged and r.accuracy is None and r.ft_seconds is None
    assert re.match(r"training diverged: loss is (nan|inf) at epoch [12]\b", r.error), r.error


def test_warmup_linear_schedule():
    """One epoch of linear warm-up, then a linear decay that ends at lr / (steps after the warm-up)."""
    from skip2lora.finetune import schedule_lrs

    lrs = np.concatenate([schedule_lrs(0.1, e, 3, 4, "warmup-linear") for e in range(3)])
    expected = 0.1 * np.array([1, 2, 3, 4, 8, 7, 6, 5, 4, 3, 2, 1]) / np.array([4] * 4 + [8] * 8)
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    np.testing.assert_allclose(schedule_lrs(0.1, 0, 1, 4, "warmup-linear"), [0.025, 0.05, 0.075, 0.1])
    assert (schedule_lrs(0.3, 2, 5, 7, "constant") == 0.3).all()


@pytest.mark.requires_data("fan-damage1")
def test_each_step_runs_at_its_scheduled_rate(monkeypatch):
    from skip2lora.finetune import finetune, schedule_lrs
    from skip2lora.methods import network_methods

    seen = []
    step = network_methods.NetworkMethod.step

    def recording_step(self, idx):
        seen.append(self.opt.lr)  # the rate SGD applies
        return step(self, idx)

    monkeypatch.setattr(network_methods.NetworkMethod, "step", recording_step)
    r = finetune("ft-last", "fan-damage1", samples=60, epochs=3, batch=20, lr=0.2, progress=False)
    assert r.schedule == "warmup-linear"
    np.testing.assert_allclose(seen, np.concatenate([schedule_lrs(0.2, e, 3, 3, r.schedule) for e in range(3)]))


def test_skip_lora_counts_its_base_forward_as_forward_time(monkeypatch):
    """The phase split must charge Skip-LoRA's per-step base forward to "forward"."""
    from skip2lora.methods import skip_methods

    phases = []
    batch = skip_methods.SkipLora.batch

    def recording_batch(self, idx):
        phases.append(self.timer._phase)
        return batch(self, idx)

    monkeypatch.setattr(skip_methods.SkipLora, "batch", recording_batch)
    net, x, y = _task(5)
    m = METHODS["skip-lora"](net, lr=0.05)
    _train(m, x, y, epochs=1)
    assert phases == ["forward"] * 8


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("name", ["skip2-lora", "lora-all"])
def test_the_last_shorter_batch_is_averaged_over_its_own_samples(name, optimizer):
    """A last batch of two copies of one sample steps exactly as a last batch of that one sample:
    the gradient is the mean over the batch's actual count, not over the configured batch size."""
    net, x, y = _task(6, n=6)
    one, two = METHODS[name](net, lr=0.05, seed=6, optimizer=optimizer), METHODS[name](net, lr=0.05, seed=6,
                                                                                       optimizer=optimizer)
    one.prepare(x[:5], y[:5])
    two.prepare(np.concatenate([x[:5], x[4:5]]), np.concatenate([y[:5], y[4:5]]))
    one.run_epoch(None, 4)  # batches [0..3], [4]
    two.run_epoch(None, 4)  # batches [0..3], [4, 4]
    for key, p in one.trainable().items():
        np.testing.assert_allclose(two.trainable()[key], p, rtol=1e-6, atol=1e-8, err_msg=key)
    assert not np.array_equal(one.trainable()[key], METHODS[name](net, lr=0.05, seed=6).trainable()[key])


@pytest.mark.parametrize("method", ["skip2-lora", "quant-skip2-lora", "lora-all"])
def test_a_sweep_cache_changes_no_result(method):
    """finetune(cache=...) reuses the data set, the base model and the evaluation split's base
    forward across runs; every figure equals that of a run without it."""
    from skip2lora.finetune import finetune

    kw = dict(samples=60, epochs=2, batch=20, lr=0.05, progress=False, eval_split="holdout")
    cache = {}
    for seed in (0, 1):
        plain = finetune(method, "fan-damage1", seed=seed, **kw)
        cached = finetune(method, "fan-damage1", seed=seed, cache=cache, **kw)
        assert (cached.accuracy, cached.accuracy_before, cached.losses) == (plain.accuracy, plain.accuracy_before,
                                                                            plain.losses)
    assert ("base forward", "fan-damage1", None, "holdout") in cache or method == "lora-all"
