"""The order unit: each epoch's pseudo-random sample order, written into the order buffer.

`skip2lora.fixed.order` is the contract: a 6-round Feistel network on 2h-bit indices with keys
from a xorshift generator seeded by SEED, its images below N kept in index order. On
``ctl.epoch_start`` the unit steps the generator 6 times (the round keys), then feeds the 2**(2h)
indices through a pipeline of 6 rounds (4 register stages each: the keyed offset, the DSP's
product and output registers, the shift and exclusive-or) and writes every image below N, times
the sample's line count (its cache address; for a job in DDR, the index itself), to the next
slot of the order buffer.
`cycles.order_cycles` counts the cycles from ``epoch_start`` to ``done`` (`control_signature`).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..fixed import cycles
from ..fixed import order as O
from .job import JOB_LAYOUT
from .params import HwParams, bits_for, require_params
from .ports import write_port

__all__ = ["SETTLE", "OrderUnit", "control_signature"]

#: cycles from a change of ``samples`` until the unit's constants follow it (the sequencer asks for
#: the first order only after the scalar unit's INIT, hundreds of cycles after the job's start)
SETTLE = 4
PIPE_STAGES = cycles.ORDER_PIPE  # 4 stages a round, the image, the range check, the address product (2)


def control_signature() -> wiring.Signature:
    """Sequencer -> order unit, the sequencer's view: ``job_start`` (restart the key generator from
    SEED, latch N's half width), ``epoch_start`` (generate the next epoch's order); ``done`` (a
    one-cycle pulse: the order buffer holds the epoch's order)."""
    return wiring.Signature({"job_start": Out(1), "epoch_start": Out(1), "done": In(1)})


class OrderUnit(wiring.Component):
    def __init__(self, params: HwParams):
        self.params = require_params(self, params)
        p = params
        self.hmax = O.half_bits(p.order_depth)
        super().__init__({
            "ctl": In(control_signature()),  # the sequencer's: job_start, epoch_start; done
            "job": In(JOB_LAYOUT),           # seed, samples
            "busy": Out(1),
            "wr": In(write_port(bits_for(p.order_depth - 1), p.order_bits)),  # the order buffer
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        hmax, rounds = self.hmax, O.ROUNDS
        w2 = 2 * hmax

        # -- job constants: h, the masks, and the key generator's state ---------------------------
        # h, its masks and N follow the job's N through registers (`SETTLE` cycles), one step each (N - 1; its bit
        # length; h; the masks): the job's registers are set a cycle before ``job_start`` and the
        # first epoch's order is asked for hundreds of cycles later (after the scalar unit's INIT).
        h = Signal(range(hmax + 1), reset_less=True)
        mask_h, mask_2h = Signal(hmax, reset_less=True), Signal(w2, reset_less=True)
        n = Signal(16, reset_less=True)
        state = Signal(32)
        nm1 = Signal(16, reset_less=True)
        m.d.sync += nm1.eq(self.job.samples - 1)
        length = Signal(range(17))
        for i in range(16):
            with m.If(nm1[i]):
                m.d.comb += length.eq(i + 1)
        half = Signal(range(hmax + 2), reset_less=True)
        m.d.sync += half.eq((length + 1) >> 1)
        m.d.sync += [h.eq(half | (half == 0)), n.eq(self.job.samples)]  # max(1, ceil(bitlength(N - 1) / 2))
        m.d.sync += [mask_h.eq((1 << h) - 1), mask_2h.eq((1 << (h << 1)) - 1)]
        with m.If(self.ctl.job_start):
            seeded = self.job.seed ^ O.KEY_SALT
            m.d.sync += state.eq(Cat(seeded[:32]) | ((seeded == 0) * O.KEY_SALT))

        keys = [Signal(32, name=f"key{r}") for r in range(rounds)]
        k_off = [Signal(w2, name=f"koff{r}") for r in range(rounds)]
        k_mul = [Signal(w2, name=f"kmul{r}") for r in range(rounds)]
        nxt = Signal(32)
        s1 = state ^ (state << 13)[:32]
        s2 = s1 ^ (s1 >> 17)
        m.d.comb += nxt.eq(s2 ^ (s2 << 5)[:32])

        # -- the candidate counter (L, R halves) and the pipeline ----------------------------------
        cand_l, cand_r = Signal(hmax), Signal(hmax)
        feeding = Signal()
        key_n = Signal(range(rounds + 1))
        count = Signal.like(self.wr.addr)
        drain = Signal(range(PIPE_STAGES + 2))
        m.d.sync += self.ctl.done.eq(0)
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.ctl.epoch_start):
                    m.d.sync += key_n.eq(0)
                    m.next = "KEYS"
            with m.State("KEYS"):
                m.d.sync += [state.eq(nxt), key_n.eq(key_n + 1)]
                with m.Switch(key_n):
                    for r in range(rounds):
                        with m.Case(r):
                            m.d.sync += keys[r].eq(nxt)
                with m.If(key_n == rounds - 1):
                    m.d.sync += [cand_l.eq(0), cand_r.eq(0), count.eq(0)]
                    m.next = "OFFSETS"
            with m.State("OFFSETS"):  # the round keys' offset and odd multiplier, masked to 2h bits
                m.d.sync += [k_off[r].eq(keys[r][:w2] & mask_2h) for r in range(rounds)]
                m.d.sync += [k_mul[r].eq((keys[r][16:16 + w2] | 1) & mask_2h) for r in range(rounds)]
                m.next = "FEED"
            with m.State("FEED"):
                m.d.comb += feeding.eq(1)
                m.d.sync += cand_r.eq((cand_r + 1) & mask_h)
                with m.If(cand_r == mask_h):
                    m.d.sync += cand_l.eq(cand_l + 1)
                    with m.If(cand_l == mask_h):
                        m.d.sync += drain.eq(PIPE_STAGES)
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.sync += drain.eq(drain - 1)
                with m.If(drain == 1):
                    m.d.sync += self.ctl.done.eq(1)
                    m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))

        # Round r: stage a: x = (R + k_off) & mask; b: x * k_mul (DSP M); c: DSP P;
        # d: f = (product & mask) >> h, (L, R) = (R, L ^ f).
        valid = feeding
        left, right = cand_l, cand_r
        for r in range(rounds):
            va, la, ra, xa = Signal(name=f"v{r}a"), Signal(hmax, name=f"l{r}a"), Signal(hmax, name=f"r{r}a"), \
                Signal(w2, name=f"x{r}a")
            m.d.sync += [va.eq(valid), la.eq(left), ra.eq(right), xa.eq((right + k_off[r]) & mask_2h)]
            vb, lb, rb, pb = Signal(name=f"v{r}b"), Signal(hmax, name=f"l{r}b"), Signal(hmax, name=f"r{r}b"), \
                Signal(2 * w2, name=f"p{r}b")
            m.d.sync += [vb.eq(va), lb.eq(la), rb.eq(ra), pb.eq(xa * k_mul[r])]
            vc, lc, rc, pc = Signal(name=f"v{r}c"), Signal(hmax, name=f"l{r}c"), Signal(hmax, name=f"r{r}c"), \
                Signal(2 * w2, name=f"p{r}c")
            m.d.sync += [vc.eq(vb), lc.eq(lb), rc.eq(rb), pc.eq(pb)]
            vd, ld, rd = Signal(name=f"v{r}d"), Signal(hmax, name=f"l{r}d"), Signal(hmax, name=f"r{r}d")
            f = Signal(w2, name=f"f{r}")
            m.d.comb += f.eq((pc[:w2] & mask_2h) >> h)
            m.d.sync += [vd.eq(vc), ld.eq(rc), rd.eq((lc ^ f[:hmax]) & mask_h)]
            valid, left, right = vd, ld, rd

        # The image, the range check, the cache address (a DSP product by the line count), or for
        # a job in DDR the sample index itself (the DDR reader addresses entries by index).
        vi, image = Signal(), Signal(w2)
        m.d.sync += [vi.eq(valid), image.eq((left << h) | right)]
        vk, kept = Signal(), Signal(w2)
        m.d.sync += [vk.eq(vi & (image < n)), kept.eq(image)]
        va, addr_a, kept_a = Signal(), Signal(p.cache_addr_bits + w2), Signal(w2, reset_less=True)
        m.d.sync += [va.eq(vk), addr_a.eq(kept * p.sample_lines), kept_a.eq(kept)]
        ddr = Signal(reset_less=True)
        m.d.sync += ddr.eq(self.job.ddr)
        vo, addr_o = Signal(), Signal(p.order_bits)
        m.d.sync += [vo.eq(va), addr_o.eq(addr_a)]
        if p.ddr:
            with m.If(ddr):
                m.d.sync += addr_o.eq(kept_a)
        m.d.comb += [self.wr.en.eq(vo), self.wr.addr.eq(count), self.wr.data.eq(addr_o)]
        with m.If(vo):
            m.d.sync += count.eq(count + 1)
        return m
