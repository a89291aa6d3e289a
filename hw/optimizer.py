"""The optimizer unit: every adapter weight's update, one chunk of ``opt_lanes`` weights per cycle.

`skip2lora.fixed.optimizer` is the contract. Work arrives two ways:

* an A line (``a_line``): the datapath's exact batch-mean gradient sums of one line of A (the DSP
  accumulators, Q22) and the line's weights; the unit captures both and updates the line in
  ``a_chunks`` consecutive cycles, writing each chunk back into the A memory;
* B (``b_start``): the unit reads each tap's row of B and of its gradient sums from the head unit
  (``b_tap``; the sums carry a rounding offset, so Q34 -> Q22 is a plain shift) and updates it in
  ``b_chunks`` cycles, writing each chunk back into the head unit's B registers.

Pipeline of a chunk (one register after every step; `cycles.OPT_LATENCY`):
select | G = sat27(grad) (the DSP's A input) | G * M (DSP M) | DSP P | shift by STEP_SHIFT - E
| + 1 >> 1 (rounding) | w - step, saturated | write. The saturation flags of each chunk are
counted (``saturated``) for the per-epoch statistics.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..fixed import formats as F
from ..fixed.optimizer import STEP_SHIFT
from .params import HwParams, require_params

__all__ = ["OptimizerUnit", "db_bits", "DB_SHIFT"]

DB_SHIFT = F.GL_FRAC + F.U_FRAC - F.GRAD_FRAC  # the B gradient sum (Q34) -> G (Q22)


def db_bits() -> int:
    """Width of the head unit's B gradient sums: |gl u| <= 2**24 * 2**15 per sample, BATCH_MAX samples."""
    return F.acc_bits(1)["gl"] + F.U_BITS + (F.BATCH_MAX - 1).bit_length() + 1


class OptimizerUnit(wiring.Component):
    def __init__(self, params: HwParams):
        self.params = require_params(self, params)
        p = params
        L = p.opt_lanes
        super().__init__({
            # an A line from the datapath
            "a_line": In(1),
            "a_line_index": In(p.line_bits),
            "a_grad": In(p.a_words * p.da_bits),
            "a_weights": In(p.a_line_bits),
            # B from the head unit
            "b_start": In(1),
            "b_tap": Out(p.tap_bits),
            "b_weights": In(p.b_words * F.W_BITS),
            "b_grad": In(p.b_words * db_bits()),
            "b_row_done": Out(1),            # the head unit may restart tap b_tap's sums
            # the step
            "alpha_m": In(F.ALPHA_MANT_BITS),
            "alpha_e": In(4),
            # write-back
            "a_wr_addr": Out(p.line_bits),
            "a_wr_data": Out(p.a_line_bits),
            "a_wr_en": Out(p.segments),
            "b_wr_en": Out(1),
            "b_wr_tap": Out(p.tap_bits),
            "b_wr_chunk": Out(range(max(p.b_chunks, 2))),
            "b_wr_data": Out(L * F.W_BITS),
            # statistics
            "clear_saturated": In(1),
            "saturated": Out(32),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        L, W = p.opt_lanes, F.W_BITS
        g_raw_bits = max(p.da_bits, db_bits() - DB_SHIFT) + 1

        # -- capture an A line ----------------------------------------------------------------
        cap_grad = Signal(p.a_words * p.da_bits)
        cap_w = Signal(p.a_line_bits)
        cap_line = Signal(p.line_bits)
        a_chunk = Signal(range(p.a_chunks + 1))
        a_busy = Signal()
        with m.If(self.a_line):
            m.d.sync += [cap_grad.eq(self.a_grad), cap_w.eq(self.a_weights), cap_line.eq(self.a_line_index),
                         a_chunk.eq(0), a_busy.eq(1)]
        with m.Elif(a_busy):
            m.d.sync += a_chunk.eq(a_chunk + 1)
            with m.If(a_chunk == p.a_chunks - 1):
                m.d.sync += a_busy.eq(0)

        # -- walk B: per tap one fetch cycle (b_tap -> the row registers), then its chunks -------
        row_w = Signal(p.b_words * W)
        row_g = Signal(p.b_words * db_bits())
        b_chunk = Signal(range(p.b_chunks + 1))
        b_fetch, b_feed = Signal(), Signal()
        m.d.comb += self.b_row_done.eq(b_feed & (b_chunk == p.b_chunks - 1))  # b_tap still names the row
        with m.If(self.b_start):
            m.d.sync += [self.b_tap.eq(0), b_fetch.eq(1)]
        with m.Elif(b_fetch):
            m.d.sync += [row_w.eq(self.b_weights), row_g.eq(self.b_grad), b_fetch.eq(0), b_feed.eq(1),
                         b_chunk.eq(0)]
        with m.Elif(b_feed):
            m.d.sync += b_chunk.eq(b_chunk + 1)
            with m.If(b_chunk == p.b_chunks - 1):
                m.d.sync += b_feed.eq(0)
                with m.If(self.b_tap != p.K - 1):
                    m.d.sync += [self.b_tap.eq(self.b_tap + 1), b_fetch.eq(1)]

        # -- stage 0: the chunk's lanes from either source ---------------------------------------
        def lanes(flat, width, count, chunk):
            """Lane i of chunk ``chunk`` (a signal) of ``count`` packed words: a chunk-wide mux."""
            chunks = -(-count // L)
            words = [flat[i * width:(i + 1) * width] for i in range(count)]
            words += [Const(0, width)] * (chunks * L - count)
            table = Array(Cat(*words[c * L:(c + 1) * L]) for c in range(chunks))
            sel = Signal(L * width)
            m.d.comb += sel.eq(table[chunk])
            return [sel[i * width:(i + 1) * width] for i in range(L)]

        a_g = lanes(cap_grad, p.da_bits, p.a_words, a_chunk)
        a_w = lanes(cap_w, W, p.a_words, a_chunk)
        b_g = lanes(row_g, db_bits(), p.b_words, b_chunk)
        b_w = lanes(row_w, W, p.b_words, b_chunk)
        s0_valid, s0_b = Signal(), Signal()
        s0_line, s0_chunk, s0_tap = Signal(p.line_bits), Signal(range(max(p.a_chunks, p.b_chunks, 2))), \
            Signal(p.tap_bits)
        s0_g = [Signal(signed(g_raw_bits), name=f"g0_{i}", reset_less=True) for i in range(L)]
        s0_w = [Signal(signed(W), name=f"w0_{i}", reset_less=True) for i in range(L)]
        s0_lane = Signal(L, reset_less=True)
        m.d.sync += [s0_valid.eq(a_busy | b_feed), s0_b.eq(~a_busy)]
        m.d.sync += [s0_line.eq(cap_line), s0_tap.eq(self.b_tap), s0_chunk.eq(Mux(a_busy, a_chunk, b_chunk))]
        for i in range(L):
            a_ok = Mux(a_chunk * L + i < p.a_words, 1, 0)
            b_ok = Mux(b_chunk * L + i < p.b_words, 1, 0)
            with m.If(a_busy):
                m.d.sync += [s0_g[i].eq(a_g[i].as_signed()), s0_w[i].eq(a_w[i].as_signed()), s0_lane[i].eq(a_ok)]
            with m.Else():
                m.d.sync += [s0_g[i].eq(b_g[i].as_signed() >> DB_SHIFT), s0_w[i].eq(b_w[i].as_signed()),
                             s0_lane[i].eq(b_ok)]

        # -- stages 1..6: G, G * M, P, shift, round, subtract and saturate -----------------------
        meta = [(s0_valid, s0_b, s0_line, s0_chunk, s0_tap, s0_lane)]

        def delay(signals, stage):
            out = []
            for s in signals:
                d = Signal.like(s, name=f"{s.name}_d{stage}")
                m.d.sync += d.eq(s)
                out.append(d)
            return tuple(out)

        g_lo, g_hi = -(1 << (F.GRAD_BITS - 1)), (1 << (F.GRAD_BITS - 1)) - 1
        g1 = [Signal(signed(F.GRAD_BITS), name=f"g1_{i}", reset_less=True) for i in range(L)]
        m.d.sync += [g1[i].eq(Mux(s0_g[i] > g_hi, g_hi, Mux(s0_g[i] < g_lo, g_lo, s0_g[i]))) for i in range(L)]
        w_pipe = [s0_w]
        for stage in range(1, 6):
            w_pipe.append([Signal.like(w, name=f"w{stage}_{i}", reset_less=True) for i, w in enumerate(w_pipe[-1])])
            m.d.sync += [d.eq(s) for d, s in zip(w_pipe[-1], w_pipe[-2])]
            meta.append(delay(meta[-1], stage))
        prod_bits = F.GRAD_BITS + F.ALPHA_MANT_BITS + 1
        m_reg = Signal(F.ALPHA_MANT_BITS + 1, reset_less=True)  # the DSP's B input: the step's mantissa
        m.d.comb += m_reg.eq(self.alpha_m)
        p2 = [Signal(signed(prod_bits), name=f"p2_{i}", reset_less=True) for i in range(L)]
        m.d.sync += [p2[i].eq(g1[i] * m_reg.as_signed()) for i in range(L)]
        p3 = [Signal(signed(prod_bits), name=f"p3_{i}", reset_less=True) for i in range(L)]
        m.d.sync += [p3[i].eq(p2[i]) for i in range(L)]
        # (2 prod) >> (STEP_SHIFT - E): a fixed shift by STEP_SHIFT - 1 - E_MAX, then E_MAX - E
        e_max = F.LR_BITS - F.ALPHA_MANT_BITS
        base = STEP_SHIFT - 1 - e_max
        sh4 = [Signal(signed(prod_bits - base + 1), name=f"sh4_{i}", reset_less=True) for i in range(L)]
        var = Signal(range(e_max + 1))
        m.d.comb += var.eq(e_max - self.alpha_e)
        m.d.sync += [sh4[i].eq((p3[i] >> base) >> var) for i in range(L)]
        st5 = [Signal(signed(prod_bits - base), name=f"st5_{i}", reset_less=True) for i in range(L)]
        m.d.sync += [st5[i].eq((sh4[i] + 1) >> 1) for i in range(L)]
        w_lo, w_hi = F.weight_range()
        w6 = [Signal(signed(W), name=f"w6_{i}", reset_less=True) for i in range(L)]
        sat6 = Signal(L)
        for i in range(L):
            raw = Signal(signed(prod_bits - base + 1), name=f"raw{i}")
            m.d.comb += raw.eq(w_pipe[5][i] - st5[i])
            m.d.sync += [w6[i].eq(Mux(raw > w_hi, w_hi, Mux(raw < w_lo, w_lo, raw))),
                         sat6[i].eq(((raw > w_hi) | (raw < w_lo)) & meta[5][5][i])]
        valid6, is_b6, line6, chunk6, tap6, _ = delay(meta[5], 6)

        # -- stage 7: write back; the saturation count ------------------------------------------
        chunk_data = Cat(*w6)
        reps = -(-p.a_line_bits // (L * W))
        m.d.sync += [self.a_wr_addr.eq(line6), self.a_wr_data.eq(Cat(*([chunk_data] * reps))[:p.a_line_bits]),
                     self.a_wr_en.eq(0), self.b_wr_en.eq(0), self.b_wr_tap.eq(tap6), self.b_wr_chunk.eq(chunk6),
                     self.b_wr_data.eq(chunk_data)]
        with m.If(valid6 & ~is_b6):
            seg_mask = (1 << p.chunk_segments) - 1
            m.d.sync += self.a_wr_en.eq((Const(seg_mask, p.segments) << (chunk6 * p.chunk_segments))[:p.segments])
        with m.If(valid6 & is_b6):
            m.d.sync += self.b_wr_en.eq(1)
        count7 = Signal(range(L + 1))
        m.d.sync += count7.eq(sum(sat6[i] for i in range(L)))
        total = Signal(33)
        m.d.comb += total.eq(self.saturated + count7)
        with m.If(self.clear_saturated):
            m.d.sync += self.saturated.eq(0)
        with m.Else():
            m.d.sync += self.saturated.eq(Mux(total[32], (1 << 32) - 1, total[:32]))
        pending = Signal()
        m.d.comb += pending.eq(a_busy | b_fetch | b_feed | s0_valid | Cat(*(x[0] for x in meta)).any() | valid6)
        m.d.comb += self.busy.eq(pending)
        return m
