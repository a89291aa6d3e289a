"""Each hardware block in amaranth.sim against the bit-exact model and the cycle model's latencies."""

import json
import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from skip2lora.driver.registers import REGMAP_PATH
from skip2lora.fixed import cycles
from skip2lora.fixed import formats as F
from skip2lora.fixed.config import KV260, SMALL, AcceleratorConfig
from skip2lora.fixed.model import Geometry, softmax_gradient
from skip2lora.fixed.optimizer import Optimizer, OptimizerState, grad_from_sum, update
from skip2lora.fixed.order import job_orders
from skip2lora.fixed.schedule import job_lrs, mantissa, recip_batch, steps_per_epoch
from skip2lora.hw.cycle_counter import CycleCounter
from skip2lora.hw.datapath import Datapath
from skip2lora.hw.divider import Divider
from skip2lora.hw.head import DB_START, HeadPair, HeadUnit
from skip2lora.hw.memories import READ_LATENCY, URAM_DEPTH, CacheMemory, RegisteredMemory
from skip2lora.hw.optimizer import DB_SHIFT, OptimizerUnit, db_bits
from skip2lora.hw import order_unit
from skip2lora.hw.order_unit import OrderUnit
from skip2lora.hw.params import HwParams
from skip2lora.hw.ports import ReadPortSelect, WritePortSelect, read_port, write_port
from skip2lora.hw.regmap import regmap_dict
from skip2lora.hw.scalar_unit import ScalarUnit
from skip2lora.hw.softmax import SoftmaxGradient
from skip2lora.hw.stream_out import AdapterStreamer

WIDE = AcceleratorConfig("wide", Geometry((33, 16, 70, 5), 3, 7), 16, 8)


def run(dut, *benches):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for i, bench in enumerate(benches):
        sim.add_testbench(bench, background=i > 0)
    sim.run()


def _signed(v, bits):
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def _pack(values, bits):
    return sum((int(v) & ((1 << bits) - 1)) << (i * bits) for i, v in enumerate(values))


def _unpack(x, bits, n):
    return [_signed(x >> (i * bits), bits) for i in range(n)]


async def _pulse(ctx, sig):
    ctx.set(sig, 1)
    await ctx.tick()
    ctx.set(sig, 0)


async def _load_head(ctx, dut, p, b, exps):
    """A head unit (or pair) ready for samples: the taps' t shifts, B loaded as stream beats, the
    dB sums restarted."""
    K, R, C = p.K, p.R, p.C
    for k in range(K):
        ctx.set(dut.t_shift[k], int(F.t_shift(exps[k])))
    words = [b[k, c, r] for k in range(K) for c in range(C) for r in range(R)]
    wpb = p.words_per_beat
    for beat in range(-(-len(words) // wpb)):
        ctx.set(dut.b_load.en, 1)
        ctx.set(dut.b_load.addr, beat)
        ctx.set(dut.b_load.data, _pack(words[beat * wpb:(beat + 1) * wpb], 16))
        await ctx.tick()
    ctx.set(dut.b_load.en, 0)
    await _pulse(ctx, dut.ctl.clear_grads if isinstance(dut, HeadPair) else dut.clear_grads)
    await ctx.tick().repeat(K + 1)


def test_divider_quotients_remainders_and_latency():
    rng = random.Random(1)
    cases = [(0, 1), ((1 << 29) - 1, 1), ((1 << 29) * 5 - 1, 5)]
    for _ in range(60):
        b, q = rng.randint(1, (1 << 33) - 1), rng.randint(0, (1 << 29) - 1)
        cases.append((q * b + rng.randint(0, b - 1), b))
    dut, out = Divider(62, 33, 29), []

    async def bench(ctx):
        for a, b in cases:
            ctx.set(dut.dividend, a)
            ctx.set(dut.divisor, b)
            await _pulse(ctx, dut.start)
            n = 1
            while not ctx.get(dut.done):
                await ctx.tick()
                n += 1
            out.append((ctx.get(dut.quotient), ctx.get(dut.remainder), n))

    run(dut, bench)
    assert [(q, r) for q, r, _ in out] == [divmod(a, b) for a, b in cases]
    assert {n for *_, n in out} == {cycles.divider_latency(29)}


def test_scalar_unit_derives_the_schedule():
    """Job constants, every step's alpha (mantissa, exponent), the init and step latencies."""
    rng = random.Random(3)
    cases = [(1024, 16, 2, 1677722, 64, True, 1), (5, 5, 3, 300, 0, False, 0), (7, 3, 2, (1 << 28) - 1, 1, True, 1)]
    for i in range(6):
        n = rng.randint(1, 40)
        b = rng.randint(1, n)
        cases.append((n, b, rng.randint(1, 3), rng.randint(1, (1 << 28) - 1),
                      rng.choice([0, steps_per_epoch(n, b), rng.randint(0, 30)]), rng.random() < 0.6, i % 2))
    dut, out = ScalarUnit(), []

    async def bench(ctx):
        for n, b, e, eta, w, decay, kind in cases:
            for name, v in dict(samples=n, batch=b, epochs=e, eta=eta, warmup=w, decay=int(decay), kind=kind).items():
                ctx.set(getattr(dut.job, name), v)
            await _pulse(ctx, dut.ctl.start)
            k = 1
            while not ctx.get(dut.ctl.ready):
                await ctx.tick()
                k += 1
            got = {"init": k, "spe": ctx.get(dut.steps_per_epoch), "nb_last": ctx.get(dut.nb_last),
                   "rn": (ctx.get(dut.ctl.rn_full), ctx.get(dut.ctl.rn_last)), "alpha": []}
            total = min(e * steps_per_epoch(n, b), 70)  # the KV260 case: its warm-up and the first decay steps
            for _ in range(total):
                await _pulse(ctx, dut.ctl.step)
                got["alpha"].append((ctx.get(dut.alpha.m), ctx.get(dut.alpha.e)))
                await ctx.tick().repeat(cycles.STEP_LATENCY - 1)  # the tightest spacing the sequencer uses
            out.append(got)

    run(dut, bench)
    for (n, b, e, eta, w, decay, kind), got in zip(cases, out):
        spe = steps_per_epoch(n, b)
        nb_last = n - (spe - 1) * b
        assert (got["spe"], got["nb_last"], got["rn"]) == (spe, nb_last, (recip_batch(b), recip_batch(nb_last)))
        state = OptimizerState(kind)  # Adam folds its bias correction into the rate
        want = [mantissa(state.rate(a, t + 1)) for t, a in enumerate(job_lrs(eta, n, b, e, w, decay))]
        assert got["alpha"] == want[:len(got["alpha"])]
        assert got["init"] == cycles.INIT_LATENCY


@pytest.mark.parametrize("config, cases", [
    (AcceleratorConfig("s", Geometry((12, 7, 5), 2, 3), 4, 64), [(1, 0, 2), (3, 1, 1), (17, (1 << 32) - 1, 2),
                                                                  (64, 0x2545F491, 2), (40, 123, 1)]),
    (KV260, [(1000, 7, 1)])], ids=["small", "kv260"])
def test_order_unit_writes_each_epochs_order(config, cases):
    p = HwParams(config)
    dut, out = OrderUnit(p), []

    async def bench(ctx):
        for n, seed, epochs in cases:
            ctx.set(dut.job.samples, n)
            ctx.set(dut.job.seed, seed)
            await _pulse(ctx, dut.ctl.job_start)
            await ctx.tick().repeat(order_unit.SETTLE)
            for _ in range(epochs):
                await _pulse(ctx, dut.ctl.epoch_start)
                buf, k = {}, 1
                while not ctx.get(dut.ctl.done):
                    if ctx.get(dut.wr.en):
                        buf[ctx.get(dut.wr.addr)] = ctx.get(dut.wr.data)
                    await ctx.tick()
                    k += 1
                out.append(([buf[i] for i in range(len(buf))], k))

    run(dut, bench)
    want = [(o * p.sample_lines).tolist() for n, seed, e in cases for o in job_orders(n, seed, e)]
    assert [got for got, _ in out] == want
    assert [k for _, k in out] == [cycles.order_cycles(n) for n, _, e in cases for _ in range(e)]


@pytest.mark.parametrize("kind", list(Optimizer), ids=[o.name.lower() for o in Optimizer])
@pytest.mark.parametrize("config", [SMALL, KV260, WIDE], ids=["small", "kv260", "wide"])
def test_optimizer_unit_updates_a_lines_and_b_like_the_model(config, kind):
    """Random A lines (exact Q22 sums, saturating ones too) and B rows, chunk by chunk, over three
    steps (Adam's state carries from step to step), with the model's per-step rates."""
    p = HwParams(config)
    dut = OptimizerUnit(p)
    rng = np.random.default_rng(7 + int(kind))
    lines = [(line, rng.integers(-(1 << 35), 1 << 35, p.a_words) if line % 2 else
              rng.integers(-(1 << 24), 1 << 24, p.a_words), rng.integers(-(1 << 15), 1 << 15, p.a_words))
             for line in range(min(p.tap_lines, 4))]
    bw = [rng.integers(-(1 << 15), 1 << 15, p.b_words) for _ in range(p.K)]
    steps = [[rng.integers(-(1 << 45), 1 << 45, p.b_words) if i % 2 else rng.integers(-(1 << 30), 1 << 30, p.b_words)
              for i in range(p.K)] for _ in range(3)]
    grads = [[rng.integers(-(1 << 35), 1 << 35, p.a_words) if (line + t) % 3 == 0 else
              rng.integers(-(1 << 20), 1 << 20, p.a_words) for line, _, _ in lines] for t in range(3)]
    alphas = [int(rng.integers(1, 1 << 28)), int(rng.integers(1, 1 << 20)), int(rng.integers(1, 1 << 24))]
    a_mem, b_mem, sat = {}, {}, []
    b_now = {"w": [x.copy() for x in bw], "g": steps[0]}

    async def bench(ctx):
        ctx.set(dut.job.kind, int(kind))
        await _pulse(ctx, dut.ctl.clear_state)
        while not ctx.get(dut.ctl.state_ready):
            await ctx.tick()
        for t in range(3):
            am, ae = mantissa(alphas[t])
            ctx.set(dut.alpha.m, am)
            ctx.set(dut.alpha.e, ae)
            await _pulse(ctx, dut.ctl.clear_saturated)
            b_now["g"] = steps[t]
            for (line, _, w0), g in zip(lines, grads[t]):
                w = [a_mem.get((line, i), w0[i]) for i in range(p.a_words)]
                ctx.set(dut.a_lines.p.index, line)
                ctx.set(dut.a_lines.p.grad, _pack(g, p.da_bits))
                ctx.set(dut.a_lines.p.weights, _pack(w, F.W_BITS))
                await _pulse(ctx, dut.a_lines.valid)
                if p.a_chunks > 1:  # lines arrive every a_chunks cycles at the most
                    await ctx.tick().repeat(p.a_chunks - 1)
                await ctx.tick().repeat(cycles.OPT_LATENCY + 1)  # the next line reads this one's result
            await _pulse(ctx, dut.ctl.b_start)
            await ctx.tick().repeat(cycles.Timing.of(p.layout).opt_b_cycles)
            sat.append(ctx.get(dut.ctl.saturated))
            b_now["w"] = [np.array([b_mem[(k, i)] for i in range(p.b_words)]) for k in range(p.K)]

    async def monitor(ctx):  # B rows on request, and every write
        wpb = p.words_per_beat
        while True:
            tap = ctx.get(dut.b_rows.tap)
            ctx.set(dut.b_rows.weights, _pack(b_now["w"][tap], F.W_BITS))
            ctx.set(dut.b_rows.grad, _pack(b_now["g"][tap] + DB_START, db_bits()))
            en = ctx.get(dut.a_wr.en)
            data = _unpack(ctx.get(dut.a_wr.data), F.W_BITS, p.a_words)
            for s in range(p.segments):
                if en >> s & 1:
                    for i in range(s * wpb, (s + 1) * wpb):
                        a_mem[(ctx.get(dut.a_wr.addr), i)] = data[i]
            if ctx.get(dut.b_wr.en):
                chunk = ctx.get(dut.b_wr.chunk)
                for i, x in enumerate(_unpack(ctx.get(dut.b_wr.data), F.W_BITS, p.opt_lanes)):
                    a_index = chunk * p.opt_lanes + i
                    if a_index < p.b_words:
                        b_mem[(ctx.get(dut.b_wr.tap), a_index)] = x
            await ctx.tick()

    run(dut, bench, monitor)
    n_a = len(lines) * p.a_words
    state = OptimizerState(kind, n_a + p.K * p.b_words)
    a = np.concatenate([w for _, _, w in lines])
    b = np.concatenate(bw)
    want_sat = []
    for t in range(3):
        g_a = np.concatenate([grad_from_sum(g, F.T_FRAC) for g in grads[t]])
        g_b = np.concatenate([grad_from_sum(g, F.GL_FRAC + F.U_FRAC) for g in steps[t]])
        a, sa = update(a, g_a, alphas[t], state, slice(0, n_a))
        b, sb = update(b, g_b, alphas[t], state, slice(n_a, None))
        want_sat.append(sa + sb)
    for j, (line, _, _) in enumerate(lines):
        got = [a_mem[(line, i)] for i in range(p.a_words)]
        assert got == a[j * p.a_words:(j + 1) * p.a_words].tolist(), f"A line {line}"
    assert np.concatenate(b_now["w"]).tolist() == b.tolist()
    assert sat == want_sat


@pytest.mark.parametrize("classes", [2, 3, 10, 16])
def test_softmax_unit_matches_the_model(classes):
    dut = SoftmaxGradient(classes)
    rng = np.random.default_rng(classes)
    cases = []
    for i in range(16):
        lim = (1 << 15) if i % 3 == 0 else 3000
        y = rng.integers(-lim, lim, classes)
        if i == 1:
            y[:] = 5                       # all equal: the first class is the prediction
        if i == 2:
            y[:] = -(1 << 15)
            y[-1] = (1 << 15) - 1          # extremes
        cases.append((y, int(rng.integers(0, classes)), int(rng.integers(1, 257))))
    out = []

    async def bench(ctx):
        for y, label, nb in cases:
            for c in range(classes):
                ctx.set(dut.y[c], int(y[c]))
            ctx.set(dut.label, label)
            ctx.set(dut.rn, recip_batch(nb))
            await _pulse(ctx, dut.start)
            k = 1
            while not ctx.get(dut.done):
                await ctx.tick()
                k += 1
            out.append(([ctx.get(dut.gl[c]) for c in range(classes)], ctx.get(dut.argmax), ctx.get(dut.loss), k))

    run(dut, bench)
    for (y, label, nb), (gl, top, loss, k) in zip(cases, out):
        g, want_top, ell = softmax_gradient(y[None], np.array([label]), with_loss=True)
        assert gl == F.round_shift(g * recip_batch(nb), 15)[0].tolist()
        assert (top, loss) == (want_top[0], ell[0])
        assert k == cycles.softmax_latency(classes)


@pytest.mark.parametrize("config", [SMALL, KV260, WIDE], ids=["small", "kv260", "wide"])
def test_head_unit_t_factors_gradient_sums_and_statistics(config):
    """t of every tap into the t buffer, dB, correct and loss sums, latency; B loaded as beats."""
    p = HwParams(config)
    K, R, C = p.K, p.R, p.C
    dut = HeadUnit(p)
    rng = np.random.default_rng(11)
    b = rng.integers(-(1 << 12), 1 << 12, (K, C, R))
    exps = rng.integers(F.EXP_MIN, F.EXP_MAX + 1, K)
    samples = [(rng.integers(-(1 << 15), 1 << 15, (K, R)), rng.integers(-(1 << 12), 1 << 12, C),
                int(rng.integers(0, C)), j, int(rng.integers(1, 17))) for j in range(3)]
    t_buf, res = {}, {}

    async def bench(ctx):
        await _load_head(ctx, dut, p, b, exps)
        lat = []
        for u, z, label, j, nb in samples:
            for k in range(K):
                for r in range(R):
                    ctx.set(dut.u[k][r], int(u[k, r]))
            for c in range(C):
                ctx.set(dut.z[c], int(z[c]))
            for name, v in dict(label=label, slot=j, rn=recip_batch(nb), epoch_first=int(j == 0)).items():
                ctx.set(getattr(dut, name), v)
            await _pulse(ctx, dut.start)
            k = 1
            while not ctx.get(dut.done):
                if ctx.get(dut.t_wr.en):
                    t_buf[ctx.get(dut.t_wr.addr)] = _unpack(ctx.get(dut.t_wr.data), F.T_BITS, R)
                await ctx.tick()
                k += 1
            lat.append(k)
        res.update(lat=lat, correct=ctx.get(dut.correct), loss=ctx.get(dut.loss), db=[])
        for k in range(K):
            ctx.set(dut.opt_rows.tap, k)
            await ctx.delay(1e-9)
            res["db"].append(_unpack(ctx.get(dut.opt_rows.grad), db_bits(), C * R))

    run(dut, bench)
    db = np.zeros((K, C, R), np.int64)
    correct = loss = 0
    for u, z, label, j, nb in samples:
        y = F.saturate(z + F.round_shift(sum(b[k] @ u[k] for k in range(K)), F.B_FRAC + F.U_FRAC - F.Y_FRAC), 16)
        g, top, ell = softmax_gradient(y[None], np.array([label]), with_loss=True)
        correct, loss = correct + int(top[0] == label), loss + int(ell[0])
        gl = F.round_shift(g[0] * recip_batch(nb), 15)
        for k in range(K):
            t = F.saturate(F.round_shift(b[k].T @ gl, F.t_shift(exps[k])), F.T_BITS)
            assert t_buf[(j << p.tap_bits) | k] == t.tolist(), (j, k)
            db[k] += np.outer(gl, u[k])
    assert res["db"] == [(db[k] + DB_START).reshape(-1).tolist() for k in range(K)]
    assert (res["correct"], res["loss"]) == (correct, loss)
    assert res["lat"] == [cycles.head_latency(K, R, C)] * len(samples)


@pytest.mark.parametrize("config", [SMALL, KV260], ids=["small", "kv260"])
def test_head_pair_t_buffers_summed_gradients_and_statistics(config):
    """Two head units on sample pairs: each sample's t into its unit's t buffer at (pair, k); the
    optimizer's dB rows hold both units' products (the follower's go into the first unit's sums,
    only when it has a sample), restarted after the optimizer took them; B's rows reach the
    optimizer under its fetch protocol (tap 0 after b_start, the next after a row); correct and loss are
    both units' sums; an epoch whose first pair has no odd sample restarts the second unit's
    statistics too."""
    p = HwParams(config)
    K, R, C = p.K, p.R, p.C
    dut = HeadPair(p)
    rng = np.random.default_rng(5)
    b = rng.integers(-(1 << 12), 1 << 12, (K, C, R))
    exps = rng.integers(F.EXP_MIN, F.EXP_MAX + 1, K)
    nb = 5

    def sample():
        return (rng.integers(-(1 << 15), 1 << 15, (K, R)), rng.integers(-(1 << 12), 1 << 12, C), int(rng.integers(0, C)))

    # (pair index, epoch_first, even sample, odd sample or None)
    pairs = [(0, 1, sample(), sample()), (1, 0, sample(), None), (2, 1, sample(), None), (3, 0, sample(), sample())]
    t_buf, res = [{}, {}], {}

    async def bench(ctx):
        await _load_head(ctx, dut, p, b, exps)
        ctx.set(dut.ctl.rn, recip_batch(nb))
        stats = []
        for j, ef, even, odd in pairs:
            for s, smp in enumerate((even, odd)):
                u, z, label = smp if smp is not None else sample()  # an absent sample: anything
                for k in range(K):
                    for r in range(R):
                        ctx.set(dut.pairs.p.u[s][k][r], int(u[k, r]))
                for c in range(C):
                    ctx.set(dut.pairs.p.z[s][c], int(z[c]))
                ctx.set(dut.pairs.p.label[s], label)
            ctx.set(dut.pairs.p.pair, j)
            ctx.set(dut.pairs.p.odd, int(odd is not None))
            ctx.set(dut.pairs.p.epoch_first, ef)
            await _pulse(ctx, dut.pairs.valid)
            for _ in range(cycles.head_latency(K, R, C) + 2):
                for s in range(2):
                    if ctx.get(dut.t_wr[s].en):
                        t_buf[s][ctx.get(dut.t_wr[s].addr)] = _unpack(ctx.get(dut.t_wr[s].data), F.T_BITS, R)
                await ctx.tick()
            stats.append((ctx.get(dut.ctl.correct), ctx.get(dut.ctl.loss)))
        res["stats"] = stats
        for rnd in ("sums", "restarted"):
            rows = []
            ctx.set(dut.opt_rows.tap, K - 1)                 # b_start: the optimizer's b_tap -> 0
            await ctx.tick()
            for k in range(K):                          # fetch: b_tap = k, the rows in opt_*_row
                ctx.set(dut.opt_rows.tap, k)
                rows.append(_unpack(ctx.get(dut.opt_rows.grad), db_bits(), C * R))
                res.setdefault("b", []).append(_unpack(ctx.get(dut.opt_rows.weights), F.W_BITS, C * R))
                await ctx.tick().repeat(2)              # feed cycles
                ctx.set(dut.opt_rows.done, 1)            # the last chunk: restart row k, look ahead to k + 1
                await ctx.tick()
                ctx.set(dut.opt_rows.done, 0)
            res[rnd] = rows

    run(dut, bench)
    db = np.zeros((K, C, R), np.int64)
    stats, correct, loss = [], 0, 0
    for j, ef, even, odd in pairs:
        if ef:
            correct = loss = 0
        for s, smp in enumerate((even, odd)):
            if smp is None:
                continue
            u, z, label = smp
            y = F.saturate(z + F.round_shift(sum(b[k] @ u[k] for k in range(K)), F.B_FRAC + F.U_FRAC - F.Y_FRAC), 16)
            g, top, ell = softmax_gradient(y[None], np.array([label]), with_loss=True)
            correct, loss = correct + int(top[0] == label), loss + int(ell[0])
            gl = F.round_shift(g[0] * recip_batch(nb), 15)
            for k in range(K):
                t = F.saturate(F.round_shift(b[k].T @ gl, F.t_shift(exps[k])), F.T_BITS)
                assert t_buf[s][(j << p.tap_bits) | k] == t.tolist(), (j, s, k)
                db[k] += np.outer(gl, u[k])
        stats.append((correct, loss))
    assert res["stats"] == stats
    assert res["sums"] == [(db[k] + DB_START).reshape(-1).tolist() for k in range(K)]
    assert res["restarted"] == [[DB_START] * (C * R)] * K
    assert res["b"] == [b[k].reshape(-1).tolist() for k in range(K)] * 2  # registered, selected ahead


def test_cycle_counter_counts_enabled_cycles_and_clears():
    dut = CycleCounter(8)
    out = []

    async def bench(ctx):
        ctx.set(dut.enable, 1)
        await ctx.tick().repeat(5)
        out.append(ctx.get(dut.count))
        ctx.set(dut.enable, 0)
        await ctx.tick().repeat(3)
        out.append(ctx.get(dut.count))
        ctx.set(dut.clear, 1)
        await ctx.tick()
        out.append(ctx.get(dut.count))

    run(dut, bench)
    assert out == [5, 5, 0]


def test_blocks_reject_bad_parameters():
    with pytest.raises(TypeError, match="params must be HwParams"):
        Datapath(SMALL)
    with pytest.raises(TypeError, match="params must be HwParams"):
        OptimizerUnit("kv260")
    with pytest.raises(ValueError, match="classes must be an integer of at least 2"):
        SoftmaxGradient(1)
    with pytest.raises(TypeError, match="Counter width must be a positive integer"):
        CycleCounter(0)
    with pytest.raises(TypeError, match="quotient_bits must be a positive integer"):
        Divider(8, 8, 0)
    with pytest.raises(ValueError, match="lanes must be a power of two"):
        AcceleratorConfig("x", SMALL.geometry, 6, 8)
    with pytest.raises(ValueError, match="at most 8 taps"):
        HwParams(AcceleratorConfig("x", Geometry((1,) * 9, 1, 2), 4, 8))


def test_generated_register_map_is_current():
    """sw/regmap.json is generated from hw/regmap.py: regenerate with `skip2lora hw regmap`."""
    on_disk = json.loads(REGMAP_PATH.read_text())
    assert on_disk == json.loads(json.dumps(regmap_dict())), "sw/regmap.json is stale: run `skip2lora hw regmap`"


def test_verilog_export_of_the_small_build(tmp_path):
    from skip2lora.hw.export import export_verilog

    out = export_verilog(tmp_path, "small")
    text = (tmp_path / "skip2lora.v").read_text()
    assert "module skip2lora(" in text
    for port in ("aclk", "aresetn", "interrupt", "s_axi_control_awaddr", "s_axis_tdata", "m_axis_tlast"):
        assert port in text
    assert json.loads((tmp_path / "regmap.json").read_text()) == json.loads(json.dumps(regmap_dict()))
    assert out["config"] == "small"


def test_cache_memory_asks_for_ultraram_in_the_kv260_build():
    p = HwParams(KV260)
    # entries of the build's most lines: 96 tap lines and 3 tail lines (16 logits and the label)
    assert p.cache_lines == 1024 * p.layout.sample_lines == 1024 * 99 and p.beat_bits == 128
    # two read ports: reads and writes never meet on the second (no_rw_check: one UltraRAM set)
    assert CacheMemory(p).attrs == {"ram_style": "ultra", "no_rw_check": 1}
    assert CacheMemory(HwParams(SMALL)).attrs == {"no_rw_check": 1}
    # banks of one UltraRAM's depth, each with its output register; the bank select behind them
    assert (CacheMemory(p).bank_depth, CacheMemory(p).banks) == (URAM_DEPTH, 25)
    assert (CacheMemory(HwParams(SMALL)).bank_depth, CacheMemory(HwParams(SMALL)).banks) == (None, 1)


@pytest.mark.parametrize("second_read", [False, True], ids=["one_read", "two_reads"])
@pytest.mark.parametrize("bank_depth", [None, 8, 16])
def test_registered_memory_banked_or_not_reads_after_read_latency(bank_depth, second_read):
    """Random writes (with a write granularity) and reads every cycle: the data of the address
    given READ_LATENCY cycles before (a read in a write's cycle sees the old word), banked or not;
    a read whose ``en`` is 0 keeps the read register (the output shows the last enabled read one
    cycle later). With a second read port (the write port's address): in runs of cycles it reads
    (``port_b_read``, the writes ignored), in others the writes land."""
    width, depth, gran = 12, 44, 4                  # 44 = 5 banks of 8 (the last one short) / 3 of 16
    dut = RegisteredMemory(width, depth, granularity=gran, bank_depth=bank_depth, second_read=second_read)
    assert dut.banks == (1 if bank_depth is None else -(-depth // bank_depth))
    rng = random.Random(bank_depth or 1)
    checked = [0, 0]

    async def bench(ctx):
        mem = [0] * depth
        read_reg = out_reg = None     # the port's read register and output register
        expect2 = [None] * READ_LATENCY
        b_read = 0
        for i in range(800):
            if second_read and i % 50 == 0:
                b_read = rng.randrange(2)
                ctx.set(dut.port_b_read, b_read)
            ra, wa, ra2 = rng.randrange(depth), rng.randrange(depth), rng.randrange(depth)
            wd, we = rng.randrange(1 << width), rng.randrange(1 << (width // gran))
            ren = int(rng.random() < 0.8)
            ctx.set(dut.read.addr, ra)
            ctx.set(dut.read.en, ren)
            ctx.set(dut.write.addr, wa)
            ctx.set(dut.write.data, wd)
            ctx.set(dut.write.en, we)
            got = ctx.get(dut.read.data)
            if out_reg is not None:
                assert got == out_reg
                checked[0] += 1
            out_reg = read_reg
            if ren:
                read_reg = mem[ra]
            if second_read:
                ctx.set(dut.read2.addr, ra2)
                if expect2[0] is not None:
                    assert ctx.get(dut.read2.data) == expect2[0]
                    checked[1] += 1
                expect2 = expect2[1:] + [mem[ra2] if b_read else None]
            for lane in range(width // gran):
                if we >> lane & 1 and not b_read:
                    mask = ((1 << gran) - 1) << (lane * gran)
                    mem[wa] = (mem[wa] & ~mask) | (wd & mask)
            await ctx.tick()
    run(dut, bench)
    assert checked[0] > 700 and (checked[1] > 100 if second_read else checked[1] == 0)


STAT_TAIL = """
=== skip2lora.core.head ===
        +----------Local Count, excluding submodules.
       120   DSP48E2
     21306   FDRE
      9000   LUT6

=== design hierarchy ===

        +----------Count including submodules.
        |
   151135 skip2lora
     4329 skip2lora.core

        +----------Count including submodules.
        |
   151135 cells
        1   BUFG
     7344   CARRY4
      637   DSP48E2
    56339   FDRE
    22846   LUT2
    18830   LUT6
     1909   RAM64M8
       40   URAM288
        1 submodules

End of script. Logfile hash: 0
"""


def test_resource_report_reads_the_design_totals():
    from skip2lora.hw.export import parse_yosys_stat

    r = parse_yosys_stat("2.54. Printing statistics.\n" + STAT_TAIL)
    assert (r["dsp"], r["ff"], r["uram"], r["lut_logic"]) == (637, 56339, 40, 22846 + 18830)
    assert r["lut"] == 22846 + 18830 + 8 * 1909  # a RAM64M8 is eight LUTs


@pytest.mark.parametrize("config", [SMALL, KV260], ids=["small", "kv260"])
def test_adapter_streamer_sends_the_image_at_one_beat_a_cycle(config):
    """Through its output FIFO the read-back keeps one beat a cycle, only each A line's fetch (the
    A memory's read latency) between lines, every beat in order, TLAST on the last one only."""
    p = HwParams(config)
    dut = AdapterStreamer(p)
    a_lines = [random.Random(line).getrandbits(p.a_line_bits) for line in range(p.tap_lines)]
    b_beats = [random.Random(1000 + i).getrandbits(p.beat_bits) for i in range(p.layout.b_beats)]
    got = {}

    async def memories(ctx):  # the A memory (READ_LATENCY registered read) and the head unit's B beats
        pipe = [0] * READ_LATENCY
        while True:
            ctx.set(dut.a_rd.data, a_lines[pipe[-1]] if pipe[-1] < p.tap_lines else 0)
            beat = ctx.get(dut.b_rd.addr)
            ctx.set(dut.b_rd.data, b_beats[beat] if beat < len(b_beats) else 0)
            pipe = [ctx.get(dut.a_rd.addr)] + pipe[:-1]
            await ctx.tick()

    async def bench(ctx):
        ctx.set(dut.m_axis.ready, 1)
        await _pulse(ctx, dut.start)
        beats, lasts, n, first = [], [], 0, None
        while not beats or not lasts[-1]:
            if ctx.get(dut.m_axis.valid):
                first = n if first is None else first
                beats.append(ctx.get(dut.m_axis.p.data))
                lasts.append(ctx.get(dut.m_axis.p.last))
            await ctx.tick()
            n += 1
        await ctx.tick().repeat(3)
        got.update(beats=beats, lasts=lasts, cycles=n - first, busy=ctx.get(dut.busy))

    run(dut, bench, memories)
    want = [(line >> (s * p.beat_bits)) & ((1 << p.beat_bits) - 1) for line in a_lines for s in range(p.segments)]
    assert got["beats"] == want + b_beats
    assert got["lasts"] == [0] * (len(want) + len(b_beats) - 1) + [1]
    assert got["cycles"] == len(want) + len(b_beats) + READ_LATENCY * (p.tap_lines - 1)
    assert got["busy"] == 0


@pytest.mark.parametrize("kind", ["read", "write"])
def test_port_select_routes_the_selected_port_and_checks_its_signature(kind):
    """A memory port shared by two blocks: ``select`` picks whose address / writes reach the
    memory; a read's data reaches both. Anything but a memory port signature is refused."""
    if kind == "read":
        dut = ReadPortSelect(read_port(4, 8))
    else:
        dut = WritePortSelect(write_port(4, 8, 4))
    rng = random.Random(7)

    async def bench(ctx):
        for _ in range(50):
            sel = rng.randrange(2)
            ctx.set(dut.select, sel)
            a, b = rng.randrange(16), rng.randrange(16)
            ctx.set(dut.a.addr, a)
            ctx.set(dut.b.addr, b)
            assert ctx.get(dut.memory.addr) == (b if sel else a)
            if kind == "read":
                d = rng.randrange(256)
                ctx.set(dut.memory.data, d)
                assert ctx.get(dut.a.data) == d and ctx.get(dut.b.data) == d
                assert ctx.get(dut.memory.en) == 1  # the readers' en idles at 1
            else:
                da, db, ea, eb = rng.randrange(256), rng.randrange(256), rng.randrange(4), rng.randrange(4)
                ctx.set(dut.a.data, da)
                ctx.set(dut.b.data, db)
                ctx.set(dut.a.en, ea)
                ctx.set(dut.b.en, eb)
                assert (ctx.get(dut.memory.data), ctx.get(dut.memory.en)) == ((db, eb) if sel else (da, ea))
            await ctx.delay(1e-9)

    sim = Simulator(dut)  # combinational: no clock
    sim.add_testbench(bench)
    sim.run()
    other = write_port(4, 8) if kind == "read" else read_port(4, 8)
    with pytest.raises(TypeError, match="signature must be a"):
        (ReadPortSelect if kind == "read" else WritePortSelect)(other)
