"""The optimizer unit: every adapter weight's update, one chunk of ``opt_lanes`` weights per cycle.

`skip2lora.fixed.optimizer` is the contract (SGD, and Adam with a power-of-two inverse square
root). Work arrives two ways:

* an A line (``a_lines``, `a_line_signature`): the datapath's exact batch-mean gradient sums of one line of A (the DSP
  accumulators, Q22) and the line's weights; the unit captures both and updates the line in
  ``a_chunks`` consecutive cycles, writing each chunk back into the A memory;
* B (``b_start``): the unit reads each tap's row of B and of its gradient sums from the head unit
  (``b_rows``, `b_rows_signature`; the sums carry a rounding offset, so Q34 -> Q22 is a plain
  shift) and updates it in ``b_chunks`` cycles, writing each chunk back into the head unit's B
  registers (``b_wr``, `b_write_signature`).

Each chunk has a row of Adam's state (m, v of its weights) in the state memory, read when the
chunk is selected and written back five stages later; ``clear_state`` zeroes every row (a job's
start, one row a cycle). Pipeline of a chunk (one register after every step;
`cycles.OPT_LATENCY` counts them): select | G = sat27(grad) | state arrives; round(m >> 3),
round(v >> 10), G*G as two DSP products (M, P) | m - .., v - .., G*G their sum | + G, + G*G |
saturate: m', v' (written back) | X = m' or G (the DSP's input); v' + 1 | X * M (DSP M); per
8-bit group of v' + 1, a set bit and its share of the shift | DSP P; the highest such group: the
shift amount | shift | round; w - hi, w - lo | w - step, saturated | write. The
saturation flags of each chunk are counted (``saturated``) for the per-epoch statistics.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..fixed import formats as F
from ..fixed.optimizer import (ADAM_SHIFT, BETA1_SHIFT, BETA2_SHIFT, M_BITS, STEP_SHIFT, V_BITS, V_FRAC,
                               Optimizer)
from .job import JOB_LAYOUT
from .memories import RegisteredMemory
from .params import HwParams, bits_for, require_params
from .ports import write_port
from .pipeline import delay, leading_one

__all__ = ["OptimizerUnit", "control_signature", "a_line_signature", "b_rows_signature", "b_write_signature", "alpha_signature", "db_bits",
           "DB_SHIFT", "STATE_BITS"]

DB_SHIFT = F.GL_FRAC + F.U_FRAC - F.GRAD_FRAC  # the B gradient sum (Q34) -> G (Q22)
STATE_BITS = M_BITS + V_BITS                    # Adam's m and v of one weight
GG_SPLIT = 17                                   # G * G: G's low bits as one DSP's 18-bit signed B input


def db_bits() -> int:
    """Width of the head unit's B gradient sums: |gl u| <= 2**24 * 2**15 per sample, BATCH_MAX samples."""
    return F.acc_bits(1)["gl"] + F.U_BITS + (F.BATCH_MAX - 1).bit_length() + 1


def a_line_signature(p: HwParams) -> stream.Signature:
    """Datapath -> optimizer: a finished line of A (a ``valid`` pulse, never back-pressured: the
    sequencer gives the unit ``a_chunks`` cycles a line): its index, its gradient sums (``a_words``
    of ``da_bits``, flat: lane-major as the A memory's words) and its weights as read from A."""
    return stream.Signature(data.StructLayout({
        "index": p.line_bits, "grad": p.a_words * p.da_bits, "weights": p.a_line_bits}), always_ready=True)


def b_rows_signature(p: HwParams) -> wiring.Signature:
    """Optimizer -> head unit 0, the optimizer's view: the tap whose rows it wants (``tap``), the
    tap's row of B and of its gradient sums (registered by the head a cycle after ``tap``), and
    ``done`` when the row is taken (the head may restart that tap's sums)."""
    return wiring.Signature({
        "tap": Out(p.tap_bits), "done": Out(1),
        "weights": In(p.b_words * F.W_BITS), "grad": In(p.b_words * db_bits()),
    })


def b_write_signature(p: HwParams) -> wiring.Signature:
    """Optimizer -> head unit 0's B registers: a chunk of ``opt_lanes`` updated weights of a tap."""
    return wiring.Signature({
        "en": Out(1), "tap": Out(p.tap_bits), "chunk": Out(range(max(p.b_chunks, 2))),
        "data": Out(p.opt_lanes * F.W_BITS),
    })


def alpha_signature() -> wiring.Signature:
    """Scalar unit -> optimizer: the mini-batch's step size alpha = m * 2**e, the producer's view."""
    return wiring.Signature({"m": Out(F.ALPHA_MANT_BITS), "e": Out(4)})


def control_signature() -> wiring.Signature:
    """Sequencer -> optimizer, the sequencer's view: ``clear_state`` (a job starts: zero Adam's
    state, one row a cycle) and ``state_ready`` (it is zero); ``b_start`` (update B, tap by tap,
    after the batch's last A line); ``clear_saturated`` (restart the count) and ``saturated``
    (weight updates clamped to the weight range since)."""
    return wiring.Signature({"clear_state": Out(1), "state_ready": In(1), "b_start": Out(1),
                             "clear_saturated": Out(1), "saturated": In(32)})


class OptimizerUnit(wiring.Component):
    def __init__(self, params: HwParams):
        self.params = require_params(self, params)
        p = params
        self.state_rows = p.tap_lines * p.a_chunks + p.K * p.b_chunks
        super().__init__({
            "a_lines": In(a_line_signature(p)),   # A lines from the datapath
            "ctl": In(control_signature()),       # the sequencer's: clear_state, b_start, statistics
            "b_rows": Out(b_rows_signature(p)),
            # the job and the step
            "job": In(JOB_LAYOUT),           # kind: the optimizer
            "alpha": In(alpha_signature()),
            # write-back: a chunk into the A memory (its write granularity is a stream beat) or B
            "a_wr": In(write_port(p.line_bits, p.a_line_bits, p.beat_bits)),
            "b_wr": Out(b_write_signature(p)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        L, W = p.opt_lanes, F.W_BITS
        g_raw_bits = max(p.da_bits, db_bits() - DB_SHIFT) + 1
        rows = self.state_rows
        row_bits = bits_for(rows - 1)
        m.submodules.state = state = RegisteredMemory(L * STATE_BITS, rows)

        # -- capture an A line ----------------------------------------------------------------
        cap_grad = Signal(p.a_words * p.da_bits, reset_less=True)
        cap_w = Signal(p.a_line_bits, reset_less=True)
        cap_line = Signal(p.line_bits)
        cap_row = Signal(row_bits)           # the line's first state row
        a_chunk = Signal(range(p.a_chunks + 1))
        a_busy = Signal()
        line_in = self.a_lines.p
        with m.If(self.a_lines.valid):
            m.d.sync += [cap_grad.eq(line_in.grad), cap_w.eq(line_in.weights), cap_line.eq(line_in.index),
                         cap_row.eq(line_in.index * p.a_chunks), a_chunk.eq(0), a_busy.eq(1)]
        with m.Elif(a_busy):
            m.d.sync += a_chunk.eq(a_chunk + 1)
            with m.If(a_chunk == p.a_chunks - 1):
                m.d.sync += a_busy.eq(0)

        # -- walk B: per tap one fetch cycle (b_tap -> the row registers), then its chunks -------
        row_w = Signal(p.b_words * W, reset_less=True)
        row_g = Signal(p.b_words * db_bits(), reset_less=True)
        b_row = Signal(row_bits)             # the tap's first state row
        b_chunk = Signal(range(p.b_chunks + 1))
        b_fetch, b_feed = Signal(), Signal()
        b_tap = self.b_rows.tap
        m.d.comb += self.b_rows.done.eq(b_feed & (b_chunk == p.b_chunks - 1))  # b_tap still names the row
        b_row_next = Signal(row_bits)        # the next tap's first state row, counted up (no product)
        with m.If(self.ctl.b_start):
            m.d.sync += [b_tap.eq(0), b_fetch.eq(1), b_row_next.eq(p.tap_lines * p.a_chunks)]
        with m.Elif(b_fetch):
            m.d.sync += [row_w.eq(self.b_rows.weights), row_g.eq(self.b_rows.grad), b_fetch.eq(0), b_feed.eq(1),
                         b_chunk.eq(0), b_row.eq(b_row_next), b_row_next.eq(b_row_next + p.b_chunks)]
        with m.Elif(b_feed):
            m.d.sync += b_chunk.eq(b_chunk + 1)
            with m.If(b_chunk == p.b_chunks - 1):
                m.d.sync += b_feed.eq(0)
                with m.If(b_tap != p.K - 1):
                    m.d.sync += [b_tap.eq(b_tap + 1), b_fetch.eq(1)]

        # -- select (t0): the chunk's lanes from either source; its state row is read ------------
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
        valid0 = a_busy | b_feed
        row0 = Signal(row_bits)
        m.d.comb += row0.eq(Mux(a_busy, cap_row + a_chunk, b_row + b_chunk))
        clear_n = Signal(range(rows + 1))
        with m.If(self.ctl.clear_state):
            m.d.sync += clear_n.eq(rows)
        with m.Elif(clear_n != 0):
            m.d.sync += clear_n.eq(clear_n - 1)
        m.d.comb += [state.read.addr.eq(row0), self.ctl.state_ready.eq(clear_n == 0)]

        v1, b1 = Signal(), Signal()
        line1, chunk1, tap1, row1 = (Signal(p.line_bits), Signal(range(max(p.a_chunks, p.b_chunks, 2))),
                                     Signal(p.tap_bits), Signal(row_bits))
        g_raw = [Signal(signed(g_raw_bits), name=f"graw{i}", reset_less=True) for i in range(L)]
        w1 = [Signal(signed(W), name=f"w1_{i}", reset_less=True) for i in range(L)]
        lane1 = Signal(L, reset_less=True)
        m.d.sync += [v1.eq(valid0), b1.eq(~a_busy), line1.eq(cap_line), tap1.eq(b_tap), row1.eq(row0),
                     chunk1.eq(Mux(a_busy, a_chunk, b_chunk))]
        for i in range(L):
            a_ok = Mux(a_chunk * L + i < p.a_words, 1, 0)
            b_ok = Mux(b_chunk * L + i < p.b_words, 1, 0)
            with m.If(a_busy):
                m.d.sync += [g_raw[i].eq(a_g[i].as_signed()), w1[i].eq(a_w[i].as_signed()), lane1[i].eq(a_ok)]
            with m.Else():
                m.d.sync += [g_raw[i].eq(b_g[i].as_signed() >> DB_SHIFT), w1[i].eq(b_w[i].as_signed()),
                             lane1[i].eq(b_ok)]
        meta = {1: {"v": v1, "b": b1, "line": line1, "chunk": chunk1, "tap": tap1, "row": row1, "lane": lane1}}
        for stage in range(2, 13):  # the chunk's meta data at each stage (stage 1 = the registers above)
            meta[stage] = {k: delay(m, s, 1, f"{k}{stage}", reset_less=k != "v") for k, s in meta[stage - 1].items()}

        def at(stage):
            return meta[stage]

        def sat(value, lo, hi):
            return Mux(value > hi, hi, Mux(value < lo, lo, value))

        # -- stage 1 -> 2: G = sat27(raw); the weights follow --------------------------------------
        g_lo, g_hi = -(1 << (F.GRAD_BITS - 1)), (1 << (F.GRAD_BITS - 1)) - 1
        g2 = [Signal(signed(F.GRAD_BITS), name=f"g2_{i}", reset_less=True) for i in range(L)]
        m.d.sync += [g2[i].eq(sat(g_raw[i], g_lo, g_hi)) for i in range(L)]
        w_at = {1: w1}
        for stage in range(2, 12):
            w_at[stage] = [Signal(signed(W), name=f"w{stage}_{i}", reset_less=True) for i in range(L)]
            m.d.sync += [d.eq(s) for d, s in zip(w_at[stage], w_at[stage - 1])]
        g_at = {2: g2}
        for stage in range(3, 7):
            g_at[stage] = [Signal(signed(F.GRAD_BITS), name=f"g{stage}_{i}", reset_less=True) for i in range(L)]
            m.d.sync += [d.eq(s) for d, s in zip(g_at[stage], g_at[stage - 1])]

        # -- stages 2..5: Adam's moments (the state arrives at stage 2) -----------------------------
        sdata = state.read.data
        m_old = [sdata[i * STATE_BITS:i * STATE_BITS + M_BITS].as_signed() for i in range(L)]
        v_old = [sdata[i * STATE_BITS + M_BITS:(i + 1) * STATE_BITS] for i in range(L)]
        m3, mr3 = ([Signal(signed(M_BITS), name=f"m3_{i}", reset_less=True) for i in range(L)],
                   [Signal(signed(M_BITS), name=f"mr3_{i}", reset_less=True) for i in range(L)])
        v3, vr3 = ([Signal(unsigned(V_BITS), name=f"v3_{i}", reset_less=True) for i in range(L)],
                   [Signal(unsigned(V_BITS), name=f"vr3_{i}", reset_less=True) for i in range(L)])
        # G * G as two products that each fit one DSP48E2 (27 x 18 signed), registered at their
        # outputs (the DSPs' P registers), then added: G * G = G * G_lo + (G * G_hi << GG_SPLIT)
        # with G_lo = G[:GG_SPLIT] (unsigned) and G_hi = G >> GG_SPLIT (signed).
        gl3 = [Signal(signed(F.GRAD_BITS + GG_SPLIT + 1), name=f"gl3_{i}", reset_less=True) for i in range(L)]
        gh3 = [Signal(signed(2 * F.GRAD_BITS - GG_SPLIT), name=f"gh3_{i}", reset_less=True) for i in range(L)]
        for i in range(L):
            m.d.sync += [m3[i].eq(m_old[i]), mr3[i].eq((m_old[i] + (1 << (BETA1_SHIFT - 1))) >> BETA1_SHIFT),
                         v3[i].eq(v_old[i]), vr3[i].eq((v_old[i] + (1 << (BETA2_SHIFT - 1))) >> BETA2_SHIFT),
                         gl3[i].eq(g2[i] * g2[i][:GG_SPLIT].as_unsigned()),
                         gh3[i].eq(g2[i] * g2[i][GG_SPLIT:].as_signed())]
        m4 = [Signal(signed(M_BITS + 1), name=f"m4_{i}", reset_less=True) for i in range(L)]
        v4 = [Signal(unsigned(V_BITS), name=f"v4_{i}", reset_less=True) for i in range(L)]
        gg4 = [Signal(unsigned(2 * F.GRAD_BITS), name=f"gg4_{i}", reset_less=True) for i in range(L)]
        m.d.sync += [gg4[i].eq(gl3[i] + (gh3[i] << GG_SPLIT)) for i in range(L)]
        m.d.sync += [m4[i].eq(m3[i] - mr3[i]) for i in range(L)]
        m.d.sync += [v4[i].eq(v3[i] - vr3[i]) for i in range(L)]
        m5 = [Signal(signed(M_BITS + 2), name=f"m5_{i}", reset_less=True) for i in range(L)]
        v5 = [Signal(unsigned(V_BITS + 1), name=f"v5_{i}", reset_less=True) for i in range(L)]
        m.d.sync += [m5[i].eq(m4[i] + g_at[4][i]) for i in range(L)]
        m.d.sync += [v5[i].eq(v4[i] + gg4[i]) for i in range(L)]
        m_lo, m_hi = -(1 << (M_BITS - 1)), (1 << (M_BITS - 1)) - 1
        m6 = [Signal(signed(M_BITS), name=f"m6_{i}", reset_less=True) for i in range(L)]
        v6 = [Signal(unsigned(V_BITS), name=f"v6_{i}", reset_less=True) for i in range(L)]
        m.d.sync += [m6[i].eq(sat(m5[i], m_lo, m_hi)) for i in range(L)]
        m.d.sync += [v6[i].eq(Mux(v5[i] >> V_BITS, (1 << V_BITS) - 1, v5[i])) for i in range(L)]
        meta6 = at(6)
        # state write-back (stage 6), or the job-start clear
        with m.If(clear_n != 0):
            m.d.comb += [state.write.addr.eq(clear_n - 1), state.write.data.eq(0), state.write.en.eq(1)]
        with m.Else():
            m.d.comb += [state.write.addr.eq(meta6["row"]), state.write.en.eq(meta6["v"]),
                         state.write.data.eq(Cat(Cat(m6[i].as_unsigned(), v6[i]) for i in range(L)))]

        # -- stages 6..11: the step X * alpha * P, rounded, subtracted, saturated --------------------
        adam = self.job.kind == Optimizer.ADAM_POW2
        x7 = [Signal(signed(F.GRAD_BITS), name=f"x7_{i}", reset_less=True) for i in range(L)]
        vp7 = [Signal(unsigned(V_BITS + 1), name=f"vp7_{i}", reset_less=True) for i in range(L)]
        m.d.sync += [x7[i].eq(Mux(adam, m6[i], g_at[6][i])) for i in range(L)]
        m.d.sync += [vp7[i].eq(v6[i] + 1) for i in range(L)]
        prod_bits = F.GRAD_BITS + F.ALPHA_MANT_BITS + 1
        # The step size of the batch whose weights are in flight, taken when an A line is captured
        # and when B starts: the sequencer moves the scalar unit to the next batch while B's
        # chunks of the last one still run (the next batch's first A line comes much later).
        alpha_m = Signal(F.ALPHA_MANT_BITS, reset_less=True)
        alpha_e = Signal.like(self.alpha.e, reset_less=True)
        with m.If(self.a_lines.valid | self.ctl.b_start):
            m.d.sync += [alpha_m.eq(self.alpha.m), alpha_e.eq(self.alpha.e)]
        mant = Signal(F.ALPHA_MANT_BITS, reset_less=True)  # the DSP's B input: the step's mantissa
        m.d.comb += mant.eq(alpha_m)
        p8 = [Signal(signed(prod_bits), name=f"p8_{i}", reset_less=True) for i in range(L)]
        m.d.sync += [p8[i].eq(x7[i] * mant) for i in range(L)]
        # The shift needs the leading one n of v' + 1 (57 bits), in two stages of at most four LUT
        # levels each: stage 8 per group of 8 bits, whether it has a set bit and, by a table of its
        # leading one's position, its share of s = floor((n - (V_FRAC - 1)) / 2) = 4 g + floor((pos -
        # (V_FRAC - 1)) / 2); stage 9 the highest group with a set bit (a tree of 2:1 selections) and
        # one adder: shift + 4 = (Adam: ADAM_SHIFT, SGD: STEP_SHIFT) + 4 - E (+ s for Adam).
        adam_r = Signal(reset_less=True)        # the job's optimizer (constant through a job)
        base9 = Signal(signed(8), reset_less=True)  # the step's part of the shift
        m.d.sync += [adam_r.eq(adam),
                     base9.eq(Mux(adam, ADAM_SHIFT + 4, STEP_SHIFT + 4) - alpha_e)]
        group = 8
        groups = -(-(V_BITS + 1) // group)
        gany8 = [[Signal(name=f"gany8_{i}_{g}", reset_less=True) for g in range(groups)] for i in range(L)]
        gs8 = [[Signal(signed(8), name=f"gs8_{i}_{g}", reset_less=True) for g in range(groups)] for i in range(L)]
        for i in range(L):
            for g in range(groups):
                bits = vp7[i][g * group:(g + 1) * group]
                table = [4 * g + ((pos - (V_FRAC - 1)) >> 1) for pos in range(len(bits))]
                if len(bits) == 1:
                    share = Const(table[0], signed(8))
                else:
                    share = Array(Const(v, signed(8)) for v in table)[leading_one(m, bits, f"lead{i}_{g}")]
                m.d.sync += [gany8[i][g].eq(bits.any()), gs8[i][g].eq(share)]
        p9 = [delay(m, p8[i], 1, f"p9_{i}") for i in range(L)]
        sh9 = [Signal(range(64), name=f"sh9_{i}", reset_less=True) for i in range(L)]
        for i in range(L):
            level = list(zip(gany8[i], gs8[i]))
            depth = 0
            while len(level) > 1:
                nxt = []
                for j in range(0, len(level), 2):
                    if j + 1 == len(level):
                        nxt.append(level[j])
                        continue
                    (lo_any, lo_s), (hi_any, hi_s) = level[j], level[j + 1]
                    a, s = Signal(name=f"gsa{i}_{depth}_{j // 2}"), Signal(signed(8), name=f"gss{i}_{depth}_{j // 2}")
                    m.d.comb += [a.eq(lo_any | hi_any), s.eq(Mux(hi_any, hi_s, lo_s))]
                    nxt.append((a, s))
                level, depth = nxt, depth + 1
            m.d.sync += sh9[i].eq(base9 + Mux(adam_r, level[0][1], 0))
        # round_half_up(x >> sh) = ((x >> (sh - 1)) + 1) >> 1 with x = prod << 4
        q10 = [Signal(signed(prod_bits + 4), name=f"q10_{i}", reset_less=True) for i in range(L)]
        m.d.sync += [q10[i].eq((p9[i] << 4) >> (sh9[i] - 1).as_unsigned()[:6]) for i in range(L)]
        st11 = [Signal(signed(prod_bits + 4), name=f"st11_{i}", reset_less=True) for i in range(L)]
        m.d.sync += [st11[i].eq((q10[i] + 1) >> 1) for i in range(L)]
        meta11 = at(11)
        # w - step saturated with one carry chain a path: the thresholds w - hi and w - lo come a
        # stage early, so the subtraction and both compares run side by side into the 2:1 selects.
        w_lo, w_hi = F.weight_range()
        th_hi = [Signal(signed(W + 1), name=f"thhi{i}", reset_less=True) for i in range(L)]
        th_lo = [Signal(signed(W + 1), name=f"thlo{i}", reset_less=True) for i in range(L)]
        m.d.sync += [th_hi[i].eq(w_at[10][i] - w_hi) for i in range(L)]
        m.d.sync += [th_lo[i].eq(w_at[10][i] - w_lo) for i in range(L)]
        w12 = [Signal(signed(W), name=f"w12_{i}", reset_less=True) for i in range(L)]
        sat12 = Signal(L)
        for i in range(L):
            raw = Signal(signed(prod_bits + 6), name=f"raw{i}")
            over, under = Signal(name=f"over{i}"), Signal(name=f"under{i}")
            m.d.comb += [raw.eq(w_at[11][i] - st11[i]), over.eq(st11[i] < th_hi[i]), under.eq(st11[i] > th_lo[i])]
            m.d.sync += [w12[i].eq(Mux(over, w_hi, Mux(under, w_lo, raw[:W]))),
                         sat12[i].eq((over | under) & meta11["lane"][i] & meta11["v"])]
        meta12 = at(12)

        # -- stage 12: write back; the saturation count ------------------------------------------
        chunk_data = Cat(*w12)
        reps = -(-p.a_line_bits // (L * W))
        a_wr, b_wr = self.a_wr, self.b_wr
        m.d.sync += [a_wr.addr.eq(meta12["line"]), a_wr.data.eq(Cat(*([chunk_data] * reps))[:p.a_line_bits]),
                     a_wr.en.eq(0), b_wr.en.eq(0), b_wr.tap.eq(meta12["tap"]),
                     b_wr.chunk.eq(meta12["chunk"]), b_wr.data.eq(chunk_data)]
        with m.If(meta12["v"] & ~meta12["b"]):
            seg_mask = (1 << p.chunk_segments) - 1
            m.d.sync += a_wr.en.eq((Const(seg_mask, p.segments) << (meta12["chunk"] * p.chunk_segments))[:p.segments])
        with m.If(meta12["v"] & meta12["b"]):
            m.d.sync += b_wr.en.eq(1)
        count13 = Signal(range(L + 1))
        m.d.sync += count13.eq(sum(sat12[i] for i in range(L)))
        total = Signal(33)
        m.d.comb += total.eq(self.ctl.saturated + count13)
        with m.If(self.ctl.clear_saturated):
            m.d.sync += self.ctl.saturated.eq(0)
        with m.Else():
            m.d.sync += self.ctl.saturated.eq(Mux(total[32], (1 << 32) - 1, total[:32]))
        m.d.comb += self.busy.eq(a_busy | b_fetch | b_feed | Cat(*(meta[s]["v"] for s in meta)).any()
                                 | (clear_n != 0))
        return m
