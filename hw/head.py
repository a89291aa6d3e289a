"""The head unit: everything per sample that is not a pass over the cache line by line.

Between a sample's forward pass (u_k = A_k x_k, the MAC array) and the batch's backward pass
(dA_k = sum_j t_jk q_j^T, the MAC array again, line by line), the head unit, which holds B and
its gradient sums, works on the sample (one register after every step; `cycles.head_latency` counts them):

1. Y   per tap k (one per cycle): B_k u_k (DSP M, P), the sum over r (tree), accumulated over k;
       then y_c = sat(z_c + round(sum >> Y_SHIFT)) (round, add, saturate; Y_SHIFT = B_FRAC + U_FRAC - Y_FRAC).
2.     the softmax / cross-entropy unit (hw/softmax.py): gl = (softmax(y) - onehot) / nb, the
       prediction and the sample's loss (the epoch's ``correct`` and ``loss`` sums).
3. SB  per tap k: t_k[r] = sat(round(sum_c B_k[c,r] gl_c >> (16 - e_k))) (DSP M, P, the sum
       over c, shift, the rounding add, saturate) into its t buffer at (slot, k) (``slot``: the
       sample's pair); and the B gradient sums dB_k[c,r] += gl_c u_k[r] (DSP M, P, read-add-write
       of the tap's row).

``done`` pulses when the last t is written; the unit takes the next sample from then on. B is
K*C*R registers; the dB sums are a K-row memory restarted from the rounding offset 2**11 at a
job's start (``clear_grads``) and after the optimizer took a row (``opt_rows.done``), so the
optimizer's Q34 -> Q22 conversion is a plain shift. B is read and written by the optimizer a row
at a time (``opt_rows``, `optimizer.b_rows_signature`: the row is registered, one cycle after the
optimizer's ``tap``, see the row select; ``opt_wr``, `optimizer.b_write_signature`) and loaded /
read back as stream beats (``b_load``, ``b_read``: memory port signatures addressed by beat; a
read answers in its own cycle). t goes out through ``t_wr``, the t buffer's write port.

Every sample's y (the saturated logits z + B u, zero for the classes past the job's) and its class
(the first maximum, as ``numpy.argmax``) leave on ``result`` when the softmax is done: PREDICT
(docs/pl-predict.md) streams head 0's to the host.

`HeadPair` is what the core uses: two head units, one per sample of a pair (`cycles.PASS_SAMPLES`).
They start together and run in lockstep, so the second (``follower=True``) holds neither B nor dB
sums: it multiplies the first unit's selected B row (``b_row``) and hands its dB products
(``pd``) to the first unit, which adds them to its own before the read-add-write of the row. One
copy of B and of the sums (not two added for the optimizer) saves ~7k LUTs in the KV260 build.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..fixed import formats as F
from .datapath import pair_signature
from .optimizer import DB_SHIFT, b_rows_signature, b_write_signature, db_bits
from .params import HwParams, require_params
from .ports import read_port, write_port
from .pipeline import delay, tree_levels, tree_sum
from .softmax import GL_BITS, SoftmaxGradient

__all__ = ["HeadUnit", "HeadPair", "control_signature", "t_write_port", "b_owner_ports", "result_signature",
           "DB_START", "PD_BITS"]

PD_BITS = GL_BITS + F.U_BITS   # a dB product gl_c u_k[r]
DB_START = 1 << (DB_SHIFT - 1)  # dB restarts here: the optimizer's >> DB_SHIFT then rounds half up
Y_SHIFT = F.B_FRAC + F.U_FRAC - F.Y_FRAC


def control_signature() -> wiring.Signature:
    """Sequencer -> head units, the sequencer's view: ``rn`` (this batch's rn(nb), from BATCH on),
    ``clear_grads`` (a job starts: the dB sums restart); ``correct`` and ``loss`` (the epoch's
    sums so far, read at EPOCH_END)."""
    return wiring.Signature({"rn": Out(F.RN_BITS), "clear_grads": Out(1), "correct": In(16), "loss": In(32)})


def b_owner_ports(p: HwParams) -> dict:
    """The ports of the unit that holds B and its gradient sums: the optimizer's view of B, B's
    load (stream beats) and read-back (head 0 of a pair, and the pair itself, which passes them on)."""
    return {
        # the optimizer's view of B
        "opt_rows": In(b_rows_signature(p)),
        "opt_wr": In(b_write_signature(p)),
        # B load (stream beats) and read-back, addressed by beat
        "b_load": Out(write_port(16, p.beat_bits)),
        "b_read": Out(read_port(16, p.beat_bits)),
    }


def result_signature(p: HwParams) -> stream.Signature:
    """A sample's result: y (Z format, the build's C classes, zero past the job's) and its class."""
    return stream.Signature(data.StructLayout({"y": data.ArrayLayout(signed(F.Z_BITS), p.C),
                                               "cls": F.LABEL_BITS}), always_ready=True)


def t_write_port(p: HwParams):
    """A head unit's t buffer write: t_k[0..R-1] of its sample at (pair, k) (`memories.TBuffer`)."""
    return write_port(p.pair_bits + p.tap_bits, p.R * F.T_BITS)


class HeadUnit(wiring.Component):
    def __init__(self, params: HwParams, *, follower: bool = False):
        self.params = require_params(self, params)
        self.follower = bool(follower)
        p = params
        # flat (c, r) words: with array-layout ports, yosys' abc9 reintegration trips over the
        # element wires' names (``b_row[0]``)
        row, products = p.b_words * F.W_BITS, p.b_words * PD_BITS
        if follower:  # B's selected row from the first unit; the dB products to it
            shared = {"b_row": In(row), "pd": Out(products), "pd_valid": Out(1)}
        else:
            shared = {"b_row": Out(row), "pd": In(products), "pd_valid": In(1)}
        super().__init__({
            **shared,
            # one sample from the forward pass
            "start": In(1),
            "u": In(signed(F.U_BITS)).array(p.K, p.R),
            "z": In(signed(F.Z_BITS)).array(p.C),
            "label": In(F.LABEL_BITS),
            "slot": In(p.pair_bits),       # the sample's row in the t buffer (its pair)
            "epoch_first": In(1),          # first sample of an epoch: restart correct and loss
            "clear_stats": In(1),          # correct and loss to 0 (an epoch without a sample here)
            # the batch and the job
            "rn": In(F.RN_BITS),
            "t_shift": In(6).array(p.K),   # formats.t_shift(e_k), registered at the job's start
            # the job's geometry (`geometry_unit.GeometryUnit`): its taps (u = 0 for the others)
            # and classes (the softmax leaves the others out)
            "tap_on": In(1, init=1).array(p.K),
            "class_on": In(1, init=1).array(p.C),
            "t_wr": In(t_write_port(p)),   # the t buffer
            "done": Out(1),
            "busy": Out(1),
            "result": Out(result_signature(p)),  # y and the class, when the softmax is done
            "correct": Out(16),
            "loss": Out(32),
            **({} if follower else {"clear_grads": In(1), **b_owner_ports(p)}),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        K, R, C, L = p.K, p.R, p.C, p.opt_lanes
        W, DB = F.W_BITS, db_bits()
        m.submodules.softmax = smx = self.softmax = SoftmaxGradient(C)
        m.d.comb += [smx.class_on[c].eq(self.class_on[c]) for c in range(C)]

        lead = not self.follower
        # -- B and its gradient sums (the first unit's) --------------------------------------------
        if lead:
            if b_in_memory(p):  # B as a LUTRAM of K rows (one tap's C x R words each)
                B = memory.Memory(shape=C * R * W, depth=K, init=[], attrs={"ram_style": "distributed"})
                m.submodules.b_mem = B
                b_row_rd = B.read_port(domain="comb")
            else:
                B = [[[Signal(signed(W), name=f"b{k}_{c}_{r}", reset_less=True) for r in range(R)] for c in range(C)]
                     for k in range(K)]
            row_bits = C * R * DB
            start_row = sum(DB_START << (i * DB) for i in range(C * R))
            m.submodules.db_mem = db_mem = memory.Memory(shape=row_bits, depth=K, init=[start_row] * K)
            db_rd = db_mem.read_port(domain="comb")
            db_wr = db_mem.write_port()
            m.d.comb += self.opt_rows.grad.eq(db_rd.data)

        # -- capture the sample ------------------------------------------------------------------
        u = [[Signal(signed(F.U_BITS), name=f"u{k}_{r}", reset_less=True) for r in range(R)] for k in range(K)]
        z = [Signal(signed(F.Z_BITS), name=f"z{c}", reset_less=True) for c in range(C)]
        label = Signal(F.LABEL_BITS, reset_less=True)
        slot = Signal(p.slot_bits, reset_less=True)
        epoch_first = Signal(reset_less=True)
        with m.If(self.start):
            m.d.sync += [u[k][r].eq(self.u[k][r]) for k in range(K) for r in range(R)]
            m.d.sync += [z[c].eq(self.z[c]) for c in range(C)]
            m.d.sync += [label.eq(self.label), slot.eq(self.slot), epoch_first.eq(self.epoch_first)]

        # -- the phases: Y issue (K cycles), softmax, SB issue (K cycles) -------------------------
        k = Signal(p.tap_bits)
        y_issue, sb_issue = Signal(), Signal()
        m.d.sync += self.done.eq(0)
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += k.eq(0)
                    m.next = "Y"
            with m.State("Y"):
                m.d.comb += y_issue.eq(1)
                m.d.sync += k.eq(k + 1)
                with m.If(k == K - 1):
                    m.next = "SOFTMAX"
            with m.State("SOFTMAX"):
                with m.If(smx.done):
                    m.d.sync += k.eq(0)
                    m.next = "SB"
            with m.State("SB"):
                m.d.comb += sb_issue.eq(1)
                m.d.sync += k.eq(k + 1)
                with m.If(k == K - 1):
                    m.next = "SB_DRAIN"
            with m.State("SB_DRAIN"):
                with m.If(self.t_wr.en & (self.t_wr.addr[:p.tap_bits] == K - 1)):
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))

        # Row select (stage 1 of Y and of SB): B_k and u_k of the tap being issued (a follower takes
        # the first unit's B_k: the units run in lockstep). While the unit is idle the same register
        # holds the optimizer's row (``opt_rows.weights``): the optimizer fetches a row the cycle after
        # its b_start (tap 0) or after a row's last chunk (``opt_rows.done``: the next tap), so the row
        # it will fetch is selected in that cycle - one row multiplexer for both.
        if lead:
            b_sel = [[Signal(signed(W), name=f"bs{c}_{r}", reset_less=True) for r in range(R)] for c in range(C)]
            m.d.comb += self.b_row.eq(Cat(b_sel[c][r] for c in range(C) for r in range(R)))
            m.d.comb += self.opt_rows.weights.eq(self.b_row)
            next_tap = Signal(p.tap_bits, reset_less=True)
            m.d.sync += next_tap.eq(self.opt_rows.tap + 1)
            row_k = Signal(p.tap_bits)
            m.d.comb += row_k.eq(Mux(fsm.ongoing("IDLE"), Mux(self.opt_rows.done, next_tap, 0), k))
            if b_in_memory(p):
                m.d.comb += b_row_rd.addr.eq(row_k)
                m.d.sync += [b_sel[c][r].eq(b_row_rd.data[(c * R + r) * W:(c * R + r + 1) * W].as_signed())
                             for c in range(C) for r in range(R)]
            else:
                with m.Switch(row_k):
                    for kk in range(K):
                        with m.Case(kk):
                            m.d.sync += [b_sel[c][r].eq(B[kk][c][r]) for c in range(C) for r in range(R)]
        else:
            b_sel = [[self.b_row[(c * R + r) * W:(c * R + r + 1) * W].as_signed() for r in range(R)] for c in range(C)]
        u_sel = [Signal(signed(F.U_BITS), name=f"us{r}", reset_less=True) for r in range(R)]
        with m.Switch(k):
            for kk in range(K):
                with m.Case(kk):  # a tap the job does not have: u = 0 (its B and dB stay as they are)
                    m.d.sync += [u_sel[r].eq(Mux(self.tap_on[kk], u[kk][r], 0)) for r in range(R)]
        k1 = delay(m, k, 1, "k1")
        y1 = delay(m, y_issue, 1, "y1", reset_less=False)
        sb1 = delay(m, sb_issue, 1, "sb1", reset_less=False)

        # -- Y: products, the sum over r, accumulated over k ---------------------------------------
        prod_y = [[Signal(signed(2 * W), name=f"py{c}_{r}", reset_less=True) for r in range(R)] for c in range(C)]
        m.d.sync += [prod_y[c][r].eq(b_sel[c][r] * u_sel[r]) for c in range(C) for r in range(R)]
        acc_bits = 2 * W + (K * R).bit_length() + 1
        rsum = []
        for c in range(C):
            pp = [delay(m, prod_y[c][r], 1, f"pyp{c}_{r}") for r in range(R)]
            s, _ = tree_sum(m, pp, acc_bits, f"ysum{c}")
            rsum.append(s)
        ystages = 2 + tree_levels(R)  # M, P, tree after the row select
        yv = delay(m, y1, ystages, "yv", reset_less=False)
        yfirst = delay(m, k1 == 0, ystages, "yfirst")
        ylast = delay(m, k1 == K - 1, ystages, "ylast")
        yacc = [Signal(signed(acc_bits), name=f"yacc{c}", reset_less=True) for c in range(C)]
        with m.If(yv):
            m.d.sync += [yacc[c].eq(Mux(yfirst, 0, yacc[c]) + rsum[c]) for c in range(C)]
        ydone = delay(m, yv & ylast, 1, "ydone", reset_less=False)
        # y_c = sat(z_c + round(yacc_c >> Y_SHIFT)): round | add z | saturate
        yr = [Signal(signed(acc_bits - Y_SHIFT + 1), name=f"yr{c}", reset_less=True) for c in range(C)]
        m.d.sync += [yr[c].eq((yacc[c] + (1 << (Y_SHIFT - 1))) >> Y_SHIFT) for c in range(C)]
        yz = [Signal(signed(acc_bits - Y_SHIFT + 2), name=f"yz{c}", reset_less=True) for c in range(C)]
        m.d.sync += [yz[c].eq(z[c] + yr[c]) for c in range(C)]
        zlo, zhi = -(1 << (F.Z_BITS - 1)), (1 << (F.Z_BITS - 1)) - 1
        for c in range(C):
            m.d.comb += smx.y[c].eq(Mux(yz[c] > zhi, zhi, Mux(yz[c] < zlo, zlo, yz[c])))
        m.d.comb += [smx.start.eq(delay(m, ydone, 2, "ysat", reset_less=False)), smx.label.eq(label),
                     smx.rn.eq(self.rn)]
        # the result: y as the softmax takes it (the job's classes; 0 past them), the class at its done
        res = self.result
        with m.If(smx.start):
            m.d.sync += [res.p.y[c].eq(Mux(self.class_on[c], smx.y[c], 0)) for c in range(C)]
        m.d.comb += [res.valid.eq(smx.done), res.p.cls.eq(smx.argmax)]
        # the epoch's statistics
        with m.If(self.clear_stats):
            m.d.sync += [self.correct.eq(0), self.loss.eq(0)]
        with m.Elif(smx.done):
            hit = smx.argmax == label
            with m.If(epoch_first):
                m.d.sync += [self.correct.eq(hit), self.loss.eq(smx.loss)]
            with m.Else():
                m.d.sync += [self.correct.eq(self.correct + hit), self.loss.eq(self.loss + smx.loss)]

        # -- SB: t_k = sat(round(B_k^T gl >> t_shift_k)) and dB_k += gl u_k^T ------------------------
        prod_s = [[Signal(signed(W + GL_BITS), name=f"ps{c}_{r}", reset_less=True) for r in range(R)] for c in range(C)]
        prod_d = [[Signal(signed(GL_BITS + F.U_BITS), name=f"pd{c}_{r}", reset_less=True) for r in range(R)]
                  for c in range(C)]
        m.d.sync += [prod_s[c][r].eq(b_sel[c][r] * smx.gl[c]) for c in range(C) for r in range(R)]
        m.d.sync += [prod_d[c][r].eq(smx.gl[c] * u_sel[r]) for c in range(C) for r in range(R)]
        ps = [[delay(m, prod_s[c][r], 1, f"psp{c}_{r}") for r in range(R)] for c in range(C)]
        pd = [[delay(m, prod_d[c][r], 1, f"pdp{c}_{r}") for r in range(R)] for c in range(C)]
        sb3 = delay(m, sb1, 2, "sb3", reset_less=False)
        k3 = delay(m, k1, 2, "k3")
        if lead:
            # dB: the products of this unit and of a follower (pd_valid: it has a sample) summed,
            # then read the tap's row, add, write back; the optimizer's row requests and restarts
            # use the same ports while the unit is idle.
            pds = [[Signal(signed(PD_BITS + 1), name=f"pds{c}_{r}", reset_less=True) for r in range(R)]
                   for c in range(C)]
            pd_in = [[self.pd[(c * R + r) * PD_BITS:(c * R + r + 1) * PD_BITS].as_signed() for r in range(R)]
                     for c in range(C)]
            m.d.sync += [pds[c][r].eq(pd[c][r] + Mux(self.pd_valid, pd_in[c][r], 0))
                         for c in range(C) for r in range(R)]
            sb4, k4 = delay(m, sb3, 1, "sb4", reset_less=False), delay(m, k3, 1, "k4")
            db_now = [[db_rd.data[(c * R + r) * DB:(c * R + r + 1) * DB].as_signed() for r in range(R)]
                      for c in range(C)]
            m.d.comb += db_rd.addr.eq(Mux(sb4, k4, self.opt_rows.tap))
            clear_n = Signal(range(K + 1))
            with m.If(self.clear_grads):
                m.d.sync += clear_n.eq(K)
            with m.Elif(clear_n != 0):
                m.d.sync += clear_n.eq(clear_n - 1)
            # the written word: db + products, or 0 + DB_START (a restart): the selection sits in
            # the adder's own LUTs, not in a multiplexer behind it
            m.d.comb += db_wr.data.eq(Cat((Mux(sb4, db_now[c][r], 0) + Mux(sb4, pds[c][r], DB_START))[:DB]
                                          for c in range(C) for r in range(R)))
            with m.If(sb4):
                m.d.comb += [db_wr.addr.eq(k4), db_wr.en.eq(1)]
            with m.Elif(clear_n != 0):
                m.d.comb += [db_wr.addr.eq(clear_n - 1), db_wr.en.eq(1)]
            with m.Elif(self.opt_rows.done):
                m.d.comb += [db_wr.addr.eq(self.opt_rows.tap), db_wr.en.eq(1)]
        else:
            m.d.comb += [self.pd_valid.eq(sb3)]
            m.d.comb += self.pd.eq(Cat(pd[c][r] for c in range(C) for r in range(R)))
        # t: the sum over c, the per-tap shift, rounding and saturation
        sum_bits = W + GL_BITS + C.bit_length() + 1
        csum = [tree_sum(m, [ps[c][r] for c in range(C)], sum_bits, f"tsum{r}")[0] for r in range(R)]
        lv = tree_levels(C)
        tv = delay(m, sb3, lv, "tv", reset_less=False)
        kt_before = delay(m, k3, lv - 1, "kt")
        kt = delay(m, kt_before, 1, "kt")
        shift = Signal(6, reset_less=True)  # the tap's shift, selected with kt's register
        m.d.sync += shift.eq(Array(self.t_shift)[kt_before])
        # round_half_up(x >> s) = ((2x >> s) + 1) >> 1
        tsh = [Signal(signed(sum_bits + 1), name=f"tsh{r}", reset_less=True) for r in range(R)]
        m.d.sync += [tsh[r].eq((csum[r] << 1) >> shift) for r in range(R)]
        tr = [Signal(signed(sum_bits + 1), name=f"tr{r}", reset_less=True) for r in range(R)]
        m.d.sync += [tr[r].eq((tsh[r] + 1) >> 1) for r in range(R)]  # the rounding add, its own stage
        tv2, kt2 = delay(m, tv, 2, "tv2", reset_less=False), delay(m, kt, 2, "kt2")
        tlo, thi = -(1 << (F.T_BITS - 1)), (1 << (F.T_BITS - 1)) - 1
        t_out = [Signal(signed(F.T_BITS), name=f"t{r}", reset_less=True) for r in range(R)]
        m.d.sync += [t_out[r].eq(Mux(tr[r] > thi, thi, Mux(tr[r] < tlo, tlo, tr[r]))) for r in range(R)]
        tv3, kt3 = delay(m, tv2, 1, "tv3", reset_less=False), delay(m, kt2, 1, "kt3")
        m.d.sync += [self.t_wr.en.eq(tv3), self.t_wr.addr.eq(Cat(kt3, slot)), self.t_wr.data.eq(Cat(*t_out))]

        if lead:
            self._b_writes(m, B)
        return m

    def _b_writes(self, m, B):
        """B writes (the optimizer's chunks, the stream loader's beats) and the read-back beats."""
        p = self.params
        K, R, C, L, W = p.K, p.R, p.C, p.opt_lanes, F.W_BITS
        if b_in_memory(p):
            self._b_memory_ports(m, B)
            return
        words = [B[kk][c][r] for kk in range(K) for c in range(C) for r in range(R)]
        for kk in range(K):
            for i in range(C * R):
                c, r = divmod(i, R)
                chunk, lane = divmod(i, L)
                wr = self.opt_wr
                with m.If(wr.en & (wr.tap == kk) & (wr.chunk == chunk)):
                    m.d.sync += B[kk][c][r].eq(wr.data[lane * W:(lane + 1) * W])
        wpb = p.words_per_beat
        for w, sig in enumerate(words):
            beat, lane = divmod(w, wpb)
            with m.If(self.b_load.en & (self.b_load.addr == beat)):
                m.d.sync += sig.eq(self.b_load.data[lane * W:(lane + 1) * W])
        with m.Switch(self.b_read.addr):
            for beat in range(-(-len(words) // wpb)):
                with m.Case(beat):
                    chunk = words[beat * wpb:(beat + 1) * wpb]
                    m.d.comb += self.b_read.data.eq(Cat(*(x.as_unsigned() for x in chunk)))


    def _b_memory_ports(self, m, B):
        """B as a memory: one write port with a write enable per word (an optimizer chunk of a row,
        or a stream beat of a row: never both, the loader writes only while no job runs) and a
        read port for the read-back beats (a row, then the beat's words)."""
        p = self.params
        W, L, wpb = F.W_BITS, p.opt_lanes, p.words_per_beat
        words = p.C * p.R
        bpr = words // wpb                       # beats a row (a power of two: `b_in_memory`)
        wr, ld = self.opt_wr, self.b_load
        port = B.write_port(granularity=W)
        m.d.comb += port.addr.eq(Mux(ld.en, ld.addr >> (bpr.bit_length() - 1), wr.tap))
        beat_in_row = ld.addr[:bpr.bit_length() - 1] if bpr > 1 else 0
        for i in range(words):
            m.d.comb += [
                port.data[i * W:(i + 1) * W].eq(Mux(ld.en, ld.data.word_select(i % wpb, W),
                                                    wr.data.word_select(i % L, W))),
                port.en[i].eq((ld.en & (beat_in_row == i // wpb)) | (wr.en & (wr.chunk == i // L))),
            ]
        rd = B.read_port(domain="comb")
        m.d.comb += rd.addr.eq(self.b_read.addr >> (bpr.bit_length() - 1))
        m.d.comb += self.b_read.data.eq(rd.data.word_select(self.b_read.addr[:bpr.bit_length() - 1], wpb * W)
                                        if bpr > 1 else rd.data)


def b_in_memory(p: HwParams) -> bool:
    """B is a LUTRAM (one row a tap) when a stream beat never straddles two taps' rows and a row
    is a power of two of beats (the beat's row and place are bit fields); else registers."""
    words, wpb = p.C * p.R, p.words_per_beat
    return words % wpb == 0 and (words // wpb) & (words // wpb - 1) == 0


class HeadPair(wiring.Component):
    """Two head units, one per sample of a pair: head 0 takes the even slot, head 1 the odd one.

    Head 0 holds B and the dB sums (the optimizer, the loader and the streamer see only it); head 1
    is a follower: it starts with head 0 (when the pair has its odd sample), so it runs in the same
    cycles and takes head 0's selected B row, and its dB products go into head 0's sums.
    ``ctl.correct`` and ``ctl.loss`` are the units' sums (registered).
    """

    def __init__(self, params: HwParams):
        self.params = require_params(self, params)
        p = params
        S2 = p.pair
        super().__init__({
            "pairs": In(pair_signature(p)),  # a pair of samples from the forward pass
            "ctl": In(control_signature()),  # the sequencer's: rn, clear_grads; correct, loss
            "t_shift": In(6).array(p.K),
            "tap_on": In(1, init=1).array(p.K),
            "class_on": In(1, init=1).array(p.C),
            "t_wr": In(t_write_port(p)).array(S2),  # the t buffers, one per unit
            "result": Out(result_signature(p)),     # head 0's results (PREDICT's passes use head 0 alone)
            **b_owner_ports(p),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        K, R, C = p.K, p.R, p.C
        heads = [HeadUnit(p, follower=s > 0) for s in range(p.pair)]
        lead = heads[0]
        smp = self.pairs.p
        for s, h in enumerate(heads):
            m.submodules[f"head{s}"] = h
            start = self.pairs.valid if s == 0 else self.pairs.valid & smp.odd
            m.d.comb += [h.start.eq(start), h.slot.eq(smp.pair), h.label.eq(smp.label[s]),
                         h.epoch_first.eq(smp.epoch_first), h.rn.eq(self.ctl.rn)]
            wiring.connect(m, h.t_wr, wiring.flipped(self.t_wr[s]))
            m.d.comb += [h.t_shift[k].eq(self.t_shift[k]) for k in range(K)]
            m.d.comb += [h.tap_on[k].eq(self.tap_on[k]) for k in range(K)]
            m.d.comb += [h.class_on[c].eq(self.class_on[c]) for c in range(C)]
            m.d.comb += [h.u[k][r].eq(smp.u[s][k][r]) for k in range(K) for r in range(R)]
            m.d.comb += [h.z[c].eq(smp.z[s][c]) for c in range(C)]
            if s:  # a follower: head 0's B row in, its dB products out
                m.d.comb += [h.b_row.eq(lead.b_row), lead.pd.eq(h.pd), lead.pd_valid.eq(h.pd_valid)]
                # an epoch whose first pair has no sample here: its statistics restart all the same
                m.d.comb += h.clear_stats.eq(self.pairs.valid & smp.epoch_first & ~smp.odd)
        for name, member in b_owner_ports(p).items():  # B's ports are head 0's
            ours, its = getattr(self, name), getattr(lead, name)
            if member.is_signature:
                wiring.connect(m, wiring.flipped(ours), its)
            else:
                m.d.comb += its.eq(ours) if member.flow == In else ours.eq(its)
        m.d.comb += lead.clear_grads.eq(self.ctl.clear_grads)
        wiring.connect(m, lead.result, wiring.flipped(self.result))
        m.d.sync += [self.ctl.correct.eq(sum(h.correct for h in heads)), self.ctl.loss.eq(sum(h.loss for h in heads))]
        return m
