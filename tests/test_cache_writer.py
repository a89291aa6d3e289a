"""The cache writer (hw/cache_writer.py) against the model: tap values quantized by `base_int.cache_codes`
(`IntBase.codes`' rule) and packed as `packing.pack_cache` does, entry after entry, bit for bit, with
the sources (every tap, the logits, the labels) fed concurrently: skewed as a pipelined chain of
engines delivers them, with random gaps, all at full rate at once, and with the label queue filled early."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from skip2lora.fixed import base_formats as BF
from skip2lora.fixed.base_int import cache_codes
from skip2lora.fixed.config import KV260, SMALL, AcceleratorConfig
from skip2lora.fixed.model import CacheEntries, Geometry
from skip2lora.fixed.packing import Layout, pack_cache
from skip2lora.hw.cache_writer import DONE_LAG, LABEL_DEPTH, LATENCY, CacheWriter
from skip2lora.hw.params import HwParams

CONFIGS = [SMALL, AcceleratorConfig("wide", Geometry((33, 16, 70, 5), 3, 7), 16, 8),
           AcceleratorConfig("one", Geometry((9,), 1, 2), 4, 32),
           AcceleratorConfig("tail3", Geometry((8, 40), 2, 17), 8, 4)]
BY_NAME = {c.name: c for c in CONFIGS}
START = 2  # cycles of ``start`` (the configuration is registered meanwhile); the values follow


def _entries(config, n, rng, shifts=None, signed=None, sweep=False):
    """Random tap activations (uint8 or int8 per tap; ``sweep``: each tap every value of its range
    in order), shifts, logits and labels; the model's entries."""
    g = config.geometry
    if signed is None:
        signed = [bool(rng.random() < 0.4) for _ in g.dims]
    if shifts is None:
        shifts = [int(rng.choice([0, 1, 2, 3, 4, 5, 6, 8, 17, 31])) for _ in g.dims]  # up to the port's range
    taps = []
    for d, sg in zip(g.dims, signed):
        lo, hi = BF.act_range(sg)
        taps.append(np.tile(np.arange(lo, hi + 1), (n, 1)) if sweep else rng.integers(lo, hi + 1, (n, d)))
    codes = np.concatenate([cache_codes(t, s, sg) for t, s, sg in zip(taps, shifts, signed)], axis=1)
    logits = rng.integers(-(1 << 15), 1 << 15, (n, g.classes)).astype(np.int16)
    labels = rng.integers(0, g.classes, n)
    return taps, shifts, signed, CacheEntries(codes, logits, labels)


def _bind(bench, j):
    async def bound(ctx):
        await bench(ctx, j)
    return bound


def run_writer(config, n, *, mode, gap=0.0, seed=0, labels_first=False, **values):
    """Feed n random samples to a writer of ``config`` and check what it writes.

    ``mode`` "chain": source j (tap j, then the logits) starts sample i once source j-1 has
    delivered it, the label when tap 0 starts the sample (a pipelined chain of engines: tap k of
    sample i arrives while tap k+1 of sample i-1 does); "free": every source at its own pace from
    the start, the labels pushed as fast as the queue takes them. ``gap``: the probability of an
    idle cycle before each value, per source. ``labels_first``: the sources wait until the label
    queue is full (or holds every label). Returns the run's record (stalls, timing)."""
    p = HwParams(config)
    g = config.geometry
    layout = Layout(g, config.lanes)
    S = layout.sample_lines
    rng = np.random.default_rng(seed)
    first = (p.n_max - n) * S  # the cache's last n entries
    taps, shifts, signed, entries = _entries(config, n, rng, **values)
    want = pack_cache(layout, entries).reshape(n * S, -1)
    dut = CacheWriter(p)
    K, W = g.taps, layout.words_per_beat
    streams = list(dut.taps) + [dut.logits]
    values = [[[int(v) for v in t[i]] for i in range(n)] for t in list(taps) + [entries.logits]]
    delivered = [0] * (K + 1)      # samples each source has delivered completely
    started = [0]                  # samples tap 0 has begun (the label goes with the image's start)
    pushed = [0]                   # labels queued
    # every testbench counts the clock edges from time 0 itself (edge e: the e-th rising edge)
    rec = {"stalls": [0] * (K + 1), "label_stalls": 0, "lines": {}, "edge": 0, "done": [], "take": {},
           "write": {}, "completed": [[] for _ in range(K + 1)]}

    async def source(ctx, j):
        pick = random.Random(seed * 100 + j)
        s = streams[j]
        await ctx.tick().repeat(START)
        edge = START
        while labels_first and pushed[0] < min(n, LABEL_DEPTH):
            await ctx.tick()
            edge += 1
        for i in range(n):
            if mode == "chain" and j > 0:
                while delivered[j - 1] <= i:
                    await ctx.tick()
                    edge += 1
            if j == 0:
                started[0] = i + 1
            for x, v in enumerate(values[j][i]):
                while gap and pick.random() < gap:
                    await ctx.tick()
                    edge += 1
                ctx.set(s.valid, 1)
                ctx.set(s.p, v)
                while True:
                    _, _, ready = await ctx.tick().sample(s.ready)
                    edge += 1
                    if ready:
                        break
                    rec["stalls"][j] += 1
                if i == 0 and x == len(values[j][i]) - 1:
                    rec["take"][j] = edge  # the edge that takes sample 0's last value
                if j < K and (x % config.lanes == config.lanes - 1 or x == g.dims[j] - 1):  # a tap line done
                    rec["completed"][j].append((first + i * S + sum(layout.lines_per_tap[:j]) + x // config.lanes,
                                                edge))
                if j == K and x % W == W - 1:  # a tail line of logits done (the label's line: inside)
                    rec["completed"][j].append((first + i * S + layout.tap_lines + x // W, edge))
                ctx.set(s.valid, 0)
            delivered[j] += 1

    async def labels(ctx):
        await ctx.tick().repeat(START)
        for i in range(n):
            if mode == "chain":
                while started[0] <= i:
                    await ctx.tick()
            ctx.set(dut.label.valid, 1)
            ctx.set(dut.label.p, int(entries.labels[i]))
            while not (await ctx.tick().sample(dut.label.ready))[2]:
                rec["label_stalls"] += 1
            pushed[0] += 1
            ctx.set(dut.label.valid, 0)

    async def monitor(ctx):
        wr = dut.write
        while True:
            _, _, en, addr, data, done, count = await ctx.tick().sample(wr.en, wr.addr, wr.data, dut.done,
                                                                       dut.entries)
            rec["edge"] += 1
            if en:
                assert addr not in rec["lines"], f"line {addr} written twice"
                rec["lines"][addr] = data
                rec["write"][addr] = rec["edge"]
            if done:
                rec["done"].append(rec["edge"])
                assert count == len(rec["done"]), "entries does not count the done pulses"
                e = count - 1  # the entry just counted: all its lines are written
                written = [rec["write"].get(first + e * S + x) for x in range(S)]
                assert None not in written, f"entry {e} counted before all its lines were written"
                rec.setdefault("lag", []).append(rec["edge"] - max(written))
            else:
                assert count == len(rec["done"])

    async def bench(ctx):
        for k in range(K):
            ctx.set(dut.shift[k], shifts[k])
            ctx.set(dut.tap_signed[k], int(signed[k]))
        ctx.set(dut.first_line, first)
        ctx.set(dut.start, 1)
        await ctx.tick().repeat(START)  # the configuration registered; values from the next cycle on
        ctx.set(dut.start, 0)
        while len(rec["done"]) < n:
            await ctx.tick()
            assert rec["edge"] < 200_000, "the writer hangs"
        await ctx.tick().repeat(LATENCY + DONE_LAG + 4)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    for j in range(K + 1):
        sim.add_testbench(_bind(source, j))
    sim.add_testbench(labels)
    sim.add_testbench(monitor, background=True)
    sim.run()
    assert sorted(rec["lines"]) == list(range(first, first + n * S)), "lines missing or out of place"
    got = np.array([[(rec["lines"][a] >> (8 * b)) & 0xFF for b in range(p.beat_bits // 8)]
                    for a in range(first, first + n * S)], np.uint8)
    for a in range(n * S):  # the first wrong line, with its entry and line, if any
        assert np.array_equal(got[a], want[a]), f"entry {a // S} line {a % S}: {got[a]} != {want[a]}"
    assert len(rec["done"]) == n
    assert all(lag >= DONE_LAG for lag in rec["lag"])
    # a line's wait for the port: the edge that takes its last value -> the edge that writes it, less
    # the uncontested LATENCY - 1 (every line but the label's), for the lines whose source had
    # written its previous line by then (nothing of its own ahead). The tail goes first: its lines
    # never wait. The taps go round robin: a tap line waits at most for the other taps' lines and
    # the tail's lines written meanwhile (these loads are too light to tell every fixed priority
    # from round robin: tap 0 first passes too).
    tail_writes = sorted(w for a, w in rec["write"].items() if (a - first) % S >= layout.tap_lines)
    rec["waits"] = []
    for j, done_lines in enumerate(rec["completed"]):
        for (prev, _), (a, e) in zip([(None, None)] + done_lines, done_lines):
            wait = rec["write"][a] - e - (LATENCY - 1)
            assert wait >= 0
            if prev is None or rec["write"][prev] <= e:
                if j == K:
                    assert wait == 0, f"a tail line waited {wait} cycles"
                else:
                    rec["waits"].append(wait - sum(e < w < rec["write"][a] for w in tail_writes))
    assert max(rec["waits"]) <= K + 1, max(rec["waits"])
    rec.update(first=first, S=S, layout=layout)
    return rec


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
@pytest.mark.parametrize("mode,gap", [("chain", 0.0), ("chain", 0.3), ("free", 0.0), ("free", 0.4)],
                         ids=["chain", "chain-gaps", "full-rate", "free-gaps"])
def test_cache_writer_writes_the_models_entries(config, mode, gap):
    """Bit-exact entries, every line once, ``entries`` / ``done`` in step, for sources that overlap."""
    rec = run_writer(config, 4, mode=mode, gap=gap, seed=len(config.name) + int(10 * gap))
    if mode == "chain" and not gap:  # one entry done at a time: done exactly DONE_LAG after its last line
        assert rec["lag"] == [DONE_LAG] * 4


def test_cache_writer_label_queue_filled_early():
    """More samples than the label queue holds: the queue is filled before any value arrives, the
    rest of the labels wait (``label.ready`` low while it is full) while every source runs at full
    rate; nothing lost."""
    rec = run_writer(BY_NAME["one"], LABEL_DEPTH + 4, mode="free", seed=3, labels_first=True)
    assert rec["label_stalls"] > 0  # the queue was full: ready low until the tail took a label


def test_cache_writer_label_queue_depth():
    """The queue takes LABEL_DEPTH (>= 8 samples in flight) labels and no more until one is used."""
    assert LABEL_DEPTH >= 8
    dut = CacheWriter(HwParams(SMALL))

    async def bench(ctx):
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        ctx.set(dut.label.valid, 1)
        taken = 0
        for i in range(LABEL_DEPTH + 4):
            ctx.set(dut.label.p, i)
            _, _, ready = await ctx.tick().sample(dut.label.ready)
            taken += ready
        assert taken == LABEL_DEPTH and not ctx.get(dut.label.ready)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_cache_writer_latency_uncontested():
    """A value taken in cycle c has its line on ``write`` in cycle c + LATENCY - 1, when no other
    source competes (tap 0's last line; the tail's last line)."""
    rec = run_writer(BY_NAME["wide"], 1, mode="chain", seed=5)
    S, first = rec["S"], rec["first"]
    lines = rec["layout"].lines_per_tap
    # in chain mode tap 1 waits for tap 0's last value, which completes tap 0's last line: uncontested
    assert rec["write"][first + lines[0] - 1] - rec["take"][0] == LATENCY - 1
    # the tail's last line completes with the label, taken the cycle after the last logit
    assert rec["write"][first + S - 1] - rec["take"][len(lines)] == LATENCY


def test_cache_writer_never_stalls_a_kv260_tap():
    """The KV260 build's writer (LeNet-5 entries, 32 lanes: every tap line takes >= 16 values, more
    than the 6 sources), all sources at full rate at once: no tap is ever back-pressured, and the
    entries are at the model's stride (`pack_cache` of the model's layout)."""
    rec = run_writer(KV260, 2, mode="free", seed=9)
    assert rec["S"] == Layout(KV260.geometry, KV260.lanes).sample_lines
    assert rec["stalls"][:-1] == [0] * KV260.geometry.taps


def test_cache_writer_rounds_half_up():
    """Every activation (uint8 and int8) at shifts 0..9, 17 and 31: the codes are round-half-up and
    saturated (a writer that truncates fails here: the expected codes differ from a floor shift)."""
    config = AcceleratorConfig("round", Geometry((256, 256, 256, 256), 1, 2), 16, 4)
    for shifts in ([0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 17, 31]):
        for signed in ([False, True, False, True], [True, False, True, False]):
            for s, sg in zip(shifts, signed):
                lo, hi = BF.act_range(sg)
                v = np.arange(lo, hi + 1)
                if 1 <= s <= 8:  # a floor shift (no rounding) gives other codes
                    assert np.any(cache_codes(v, s, sg) != np.clip(v >> s, -8 if sg else 0, 7 if sg else 15))
            run_writer(config, 1, mode="free", seed=11, shifts=shifts, signed=signed, sweep=True)


def test_cache_writer_wants_params():
    with pytest.raises(TypeError, match="params must be HwParams"):
        CacheWriter(SMALL)
