"""The accelerator's sample order (skip2lora.fixed.order): a permutation every epoch, and a good shuffle.

"Good" is measured against NumPy's `permutation` on what matters to SGD: how often two samples
meet in a mini-batch, and whether consecutive epochs or different seeds repeat each other.
"""

import numpy as np
import pytest

from skip2lora.fixed.order import domain, epoch_order, half_bits, job_orders, key_states


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 16, 17, 64, 65, 100, 1000, 1024, 4097, 65535])
def test_every_epoch_is_a_permutation(n):
    for e, order in enumerate(job_orders(n, 12345, 3)):
        assert np.array_equal(np.sort(order), np.arange(n))
        assert np.array_equal(order, epoch_order(n, 12345, e))
    assert domain(n) >= n and domain(n) <= max(4, 4 * n)


def test_exact_orders_are_pinned():
    """Regression values: the RTL (hw/order_unit.py) is tested against this function, these pin it."""
    assert epoch_order(10, 0, 0).tolist() == [5, 3, 2, 6, 8, 0, 9, 7, 1, 4]
    assert epoch_order(10, 0, 1).tolist() == [0, 9, 6, 5, 2, 3, 1, 4, 8, 7]
    assert epoch_order(10, 1, 0).tolist() == [3, 5, 4, 2, 7, 9, 0, 8, 6, 1]
    assert half_bits(1024) == 5 and half_bits(1025) == 6 and half_bits(1) == 1


def test_key_generator_never_sticks_at_zero():
    from skip2lora.fixed.order import KEY_SALT

    gen = key_states(KEY_SALT)  # SEED ^ SALT == 0 would stall a xorshift generator
    assert all(next(gen) != 0 for _ in range(100))
    with pytest.raises(ValueError, match="seed"):
        next(key_states(-1))


def _cooccurrence_cv(orders, n, batch):
    co = np.zeros((n, n))
    for o in orders:
        for row in o[:n // batch * batch].reshape(-1, batch):
            co[np.ix_(row, row)] += 1
    off = co[~np.eye(n, dtype=bool)]
    return off.std() / off.mean()


@pytest.mark.parametrize("n", [64, 200])
def test_batches_mix_like_numpy(n):
    """How often two samples share a batch of 16 varies as with NumPy's permutations (a weak
    shuffle puts some pairs together far more often than chance)."""
    ours = _cooccurrence_cv(job_orders(n, 5, 3000), n, 16)
    rng = np.random.default_rng(1)
    ref = _cooccurrence_cv([rng.permutation(n) for _ in range(3000)], n, 16)
    assert ours < 1.15 * ref, (ours, ref)


def _rank_corr(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_epochs_and_seeds_are_uncorrelated():
    n = 1024
    null = 1 / np.sqrt(n)  # the spread of the rank correlation of two independent permutations
    orders = job_orders(n, 0, 40)
    consecutive = np.abs([_rank_corr(orders[i], orders[i + 1]) for i in range(39)])
    seeds = [job_orders(n, s, 1)[0] for s in range(10)]
    across = np.abs([_rank_corr(seeds[i], seeds[j]) for i in range(10) for j in range(i + 1, 10)])
    for rho in (consecutive, across):
        assert rho.mean() < 1.3 * null and rho.max() < 4 * null, (rho.mean(), rho.max(), null)


def test_positions_are_uniform():
    pos = np.array([np.flatnonzero(o == 7)[0] for o in job_orders(256, 3, 4000)])
    counts, _ = np.histogram(pos, bins=16, range=(0, 256))
    expected = len(pos) / 16
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 37.7  # the 99.9 % quantile of chi-squared with 15 degrees of freedom
