"""The forward engine: one layer pass of the integer base model (`skip2lora.fixed.base_int`).

A pass computes one `IntLayer` bit for bit (docs/base-numerics.md, "One layer"):

    acc_c = b_c + sum_j W[c, j] a_j          exact, ACC_BITS
    y_c   = sat(round_shift(acc_c, s_c))     per-channel shift, round half up, saturate to
                                             [out_lo, out_hi] (a ReLU is the saturation at 0)
    with a 2x2 max-pool of the accumulators first (it commutes with the requantization)

1. ``start`` loads the layer's geometry into registers (the loop bounds, address strides and
   output range: build-time constants in this increment, the registers a run-time geometry will
   write) and opens ``act_in``: ``in_size`` activations, one a beat, NHWC order (channel
   fastest), the raw 8-bit integers (uint8, or int8 when the layer's input is signed).
2. The loop nest of `skip2lora.fixed.forward_cycles` issues one patch entry a cycle: for each
   (pooled) output position, each group of ``lanes`` output channels, each of the 4 pool
   positions (or 1), each patch entry (channel, ky, kx). The activation address and the zero-
   padding test are counted incrementally (adds of stride registers, no multiplier); the weight
   memory holds a word of ``lanes`` int8 weights per (group, patch entry), in banks of
   `WEIGHT_BANK_DEPTH` words.
3. Each lane multiplies the (masked, sign-extended 9-bit) activation by its weight and
   accumulates, starting from its bias (a DSP48E2: A/B, M and P registers, C = the bias); the
   pool keeps the maximum accumulator of a window; then round (add half), shift, saturate.
4. ``values_out`` carries the outputs one a beat in NHWC order (channel fastest), ``last`` on the
   layer's last value; ``done`` pulses after it was taken. A dense layer is the 1x1 convolution
   of a 1x1 image with ``fan_in`` channels.

Every memory read is registered twice (`memories.READ_LATENCY`), every DSP input and output is a
register, and only state and valid bits reset. A stalled ``values_out`` stalls the pipeline (one
enable); with an always-ready consumer it never stalls, and the pass takes exactly
`forward_cycles.layer_cycles` cycles.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..fixed import base_formats as BF
from ..fixed import forward_cycles as FC
from ..fixed.base_int import IntLayer
from .memories import READ_LATENCY
from .params import bits_for, invalid

__all__ = ["LANES_MAX", "ActivationLayout", "ValueLayout", "activation_signature", "value_signature",
           "geometry_layout", "geometry_registers", "ForwardEngine"]

LANES_MAX = 64  # output channels computed in parallel (one DSP each)
WEIGHT_BANK_DEPTH = 512  # words of a weight bank: a RAMB36's depth at 72 bits (8 lanes of int8)
PROD_BITS = BF.W_BITS + BF.ACT_BITS + 1  # int8 x (uint8 or int8 as 9-bit signed)
OUT_BITS = BF.Z_BITS                      # the widest output: the Q8 int16 logits
ROUND_BITS = BF.ACC_BITS + 1              # accumulator + half an LSB never wraps

assert READ_LATENCY == FC.READ_LATENCY

ActivationLayout = data.StructLayout({"data": unsigned(BF.ACT_BITS)})
ValueLayout = data.StructLayout({"data": signed(OUT_BITS), "last": 1})


def activation_signature() -> stream.Signature:
    return stream.Signature(ActivationLayout)


def value_signature() -> stream.Signature:
    return stream.Signature(ValueLayout)


def _geometry_registers(g: FC.EngineGeometry, lanes: int) -> dict[str, int]:
    """The values the engine loads into its geometry registers at ``start``."""
    c, w, k1, p = g.channels, g.width, g.kernel - 1, g.padding
    step = 2 if g.pool else 1
    out_h, out_w = g.out_hw
    n_groups = FC.groups(g, lanes)
    return {
        "in_last": g.in_size - 1, "height": g.height, "width": g.width,
        "k1": k1, "c1": c - 1, "sub_last": g.pool_positions - 1, "g1": n_groups - 1,
        "ow1": out_w - 1, "oh1": out_h - 1, "fan_in": g.fan_in, "idle": FC.window_cycles(g, lanes)[1],
        "neg_pad": -p, "step": step,
        # address strides: kx+1, (ky+1, kx=0), (c+1, ky=kx=0); the pool window's (1,0) and (1,1)
        # from its (0,0); the next position; the next row
        "s_kx": c, "s_ky": w * c - k1 * c, "s_c": 1 - k1 * w * c - k1 * c, "s_row": w * c, "s_diag": w * c + c,
        "s_ox": step * c, "s_oy": step * w * c - (out_w - 1) * step * c, "addr0": (-p * w - p) * c,
        "signed": int(g.signed), "lo": g.out_lo, "hi": g.out_hi,
        "n_full": min(lanes, g.out_channels), "n_last": g.out_channels - (n_groups - 1) * lanes,
    }


def geometry_layout(g: FC.EngineGeometry, lanes: int) -> data.StructLayout:
    """The geometry registers' fields (`lib.data`): loop bounds, address strides, the output
    range. Sized for this layer here; a run-time geometry will size them for the largest."""
    rv = _geometry_registers(g, lanes)
    n_groups = FC.groups(g, lanes)

    def sized(*values):  # a signed shape holding every value (and the sums of two)
        return signed(max(bits_for(abs(v)) for v in values) + 2)

    span = (g.height + 2 * g.kernel + 2 * g.padding + 2) * (g.width + 2 * g.kernel + 2 * g.padding + 2) * g.channels
    addr_shape = sized(span, *(rv[k] for k in ("s_ky", "s_c", "s_oy", "addr0")))
    coord_shape = sized(g.height + g.kernel + g.padding + 2, g.width + g.kernel + g.padding + 2)
    return data.StructLayout({
        "in_last": unsigned(bits_for(g.in_size - 1)), "height": coord_shape, "width": coord_shape,
        "k1": unsigned(bits_for(g.kernel - 1)), "c1": unsigned(bits_for(g.channels - 1)), "sub_last": 2,
        "g1": unsigned(bits_for(n_groups - 1)), "ow1": unsigned(bits_for(g.out_hw[1])),
        "oh1": unsigned(bits_for(g.out_hw[0])), "fan_in": unsigned(bits_for(n_groups * g.fan_in)),
        "idle": unsigned(bits_for(lanes)), "neg_pad": coord_shape, "step": coord_shape,
        **{k: addr_shape for k in ("s_kx", "s_ky", "s_c", "s_row", "s_diag", "s_ox", "s_oy", "addr0")},
        "signed": 1, "lo": signed(OUT_BITS), "hi": signed(OUT_BITS),
        "n_full": unsigned(bits_for(lanes)), "n_last": unsigned(bits_for(lanes)),
    })


def geometry_registers(layer: IntLayer, lanes: int) -> tuple[data.StructLayout, dict[str, int]]:
    """The geometry registers of a pass of ``layer`` on ``lanes`` lanes: their layout and the
    values ``start`` loads."""
    g = FC.engine_geometry(layer)
    return geometry_layout(g, lanes), _geometry_registers(g, lanes)


class ForwardEngine(wiring.Component):
    """One layer pass of ``layer`` (an `IntLayer`) with ``lanes`` output channels in parallel.

    Ports: ``start`` (a pulse, when idle), ``busy``, ``done`` (a pulse after the last value was
    taken), ``act_in`` (stream sink of `ActivationLayout`), ``values_out`` (stream source of
    `ValueLayout`). The weights, biases and shifts are initialized memories (build-time, like
    the geometry registers' values).
    """

    def __init__(self, layer: IntLayer, lanes: int = 8):
        if not isinstance(layer, IntLayer):
            raise invalid(self, TypeError(f"layer must be an IntLayer, not {type(layer).__name__}"))
        if isinstance(lanes, bool) or not isinstance(lanes, (int, np.integer)):
            raise invalid(self, TypeError(f"lanes must be an int, not {lanes!r}"))
        if not 1 <= lanes <= LANES_MAX:
            raise invalid(self, ValueError(f"lanes must be in 1..{LANES_MAX}, not {lanes}"))
        lo, hi = -(1 << (OUT_BITS - 1)), (1 << (OUT_BITS - 1)) - 1
        if not (lo <= layer.out_lo <= layer.out_hi <= hi):
            raise invalid(self, ValueError(f"{layer.name}: the output range [{layer.out_lo}, {layer.out_hi}] "
                                           f"must lie within {OUT_BITS}-bit signed values"))
        self.layer, self.lanes = layer, int(lanes)
        self.geometry = FC.engine_geometry(layer)
        self.geometry_layout, self.regs = geometry_registers(layer, self.lanes)
        super().__init__({
            "start": In(1), "busy": Out(1), "done": Out(1),
            "act_in": In(activation_signature()),
            "values_out": Out(value_signature()),
        })

    @property
    def cycles(self) -> int:
        """The pass's cycle count (`forward_cycles.layer_cycles`)."""
        return FC.layer_cycles(self.geometry, self.lanes)

    # -- the initialized memories ----------------------------------------------------------------
    def _weight_words(self):
        L, g = self.lanes, self.geometry
        w = np.zeros((FC.groups(g, L) * L, g.fan_in), np.int64)
        w[:g.out_channels] = np.asarray(self.layer.weight, np.int64)
        # word (group, j): lanes l of group g hold W[g L + l, j]
        return [list(row) for row in w.reshape(-1, L, g.fan_in).transpose(0, 2, 1).reshape(-1, L).tolist()]

    def _channel_words(self):
        L, g = self.lanes, self.geometry
        n = FC.groups(g, L) * L
        bias, shift = np.zeros(n, np.int64), np.zeros(n, np.int64)
        bias[:g.out_channels] = self.layer.bias
        shift[:g.out_channels] = self.layer.shift
        return [{"bias": bias[i:i + L].tolist(), "shift": shift[i:i + L].tolist()} for i in range(0, n, L)]

    def elaborate(self, platform):
        m = Module()
        L, g, rv = self.lanes, self.geometry, self.regs
        n_groups = FC.groups(g, L)
        abits = bits_for(g.in_size - 1)

        # -- geometry registers, loaded at start --------------------------------------------------
        layout = self.geometry_layout
        addr_shape, coord_shape = layout["addr0"].shape, layout["height"].shape
        shapes = {name: field.shape for name, field in layout}
        r = Signal(layout, name="geometry", reset_less=True)
        with m.If(self.start & ~self.busy):
            m.d.sync += r.eq(layout.const(rv))

        # -- memories -----------------------------------------------------------------------------
        m.submodules.act_mem = act_mem = memory.Memory(shape=unsigned(BF.ACT_BITS), depth=1 << abits, init=[])
        act_w, act_r = act_mem.write_port(), act_mem.read_port()
        w_shape = data.ArrayLayout(signed(BF.W_BITS), L)
        # the weights in banks of WEIGHT_BANK_DEPTH words, each read into its own output register:
        # the bank select is a mux after those registers (in front of the DSP's B register), never
        # logic between a block RAM and its register
        words = self._weight_words()
        n_banks = -(-len(words) // WEIGHT_BANK_DEPTH)
        bank_bits = bits_for(WEIGHT_BANK_DEPTH - 1)
        w_ports = []
        for b in range(n_banks):
            chunk = words[b * WEIGHT_BANK_DEPTH:(b + 1) * WEIGHT_BANK_DEPTH]
            m.submodules[f"w_mem{b}"] = w_mem = memory.Memory(shape=w_shape, depth=len(chunk), init=chunk)
            w_ports.append(w_mem.read_port())
        ch_shape = data.StructLayout({"bias": data.ArrayLayout(signed(BF.BIAS_BITS), L),
                                      "shift": data.ArrayLayout(unsigned(BF.SHIFT_BITS), L)})
        m.submodules.ch_mem = ch_mem = memory.Memory(shape=ch_shape, depth=n_groups, init=self._channel_words())
        ch_r = ch_mem.read_port()

        # -- control ------------------------------------------------------------------------------
        out = self.values_out
        adv = Signal()          # the pipeline advances (low only while the output buffer is full)
        issue = Signal()        # stage 0 holds a valid patch entry
        load_cnt = Signal(abits, reset_less=True)
        m.d.comb += [act_w.addr.eq(load_cnt), act_w.data.eq(self.act_in.p.data)]

        # issue-stage counters (down counters: their last value is 0)
        kx, ky = (Signal(shapes["k1"], name=n, reset_less=True) for n in ("kx", "ky"))
        ch = Signal(shapes["c1"], reset_less=True)
        sub = Signal(2, reset_less=True)
        grp = Signal(shapes["g1"], reset_less=True)
        oxd, oyd = Signal(shapes["ow1"], reset_less=True), Signal(shapes["oh1"], reset_less=True)
        idle = Signal(shapes["idle"], reset_less=True)
        idling = Signal()  # idle != 0, as a register
        iy, ix = Signal(coord_shape, reset_less=True), Signal(coord_shape, reset_less=True)
        org_iy, org_ix = Signal(coord_shape, reset_less=True), Signal(coord_shape, reset_less=True)
        addr, org_addr = Signal(addr_shape, reset_less=True), Signal(addr_shape, reset_less=True)
        widx, wbase = Signal(shapes["fan_in"], reset_less=True), Signal(shapes["fan_in"], reset_less=True)
        first = Signal(reset_less=True)
        # each counter's "last value" flag is a register, set when the counter moves: no compare
        # (a carry chain) sits in front of the address adders
        last_kx, last_ky, last_c, last_sub, last_g, last_ox, last_oy = (
            Signal(name=n, reset_less=True) for n in ("last_kx", "last_ky", "last_c", "last_sub", "last_g",
                                                       "last_ox", "last_oy"))
        sweep_end = last_kx & last_ky & last_c
        last_pos = last_ox & last_oy

        def reload(counter, flag, value):   # down counters
            m.d.sync += [counter.eq(value), flag.eq(value == 0)]

        def count_down(counter, flag):
            m.d.sync += [counter.eq(counter - 1), flag.eq(counter == 1)]

        def restart(counter, flag, last):   # up counters from 0 to a register's value
            m.d.sync += [counter.eq(0), flag.eq(last == 0)]

        def count_up(counter, flag, last):
            m.d.sync += [counter.eq(counter + 1), flag.eq(counter + 1 == last)]

        def init_counters():
            reload(kx, last_kx, r["k1"])
            reload(ky, last_ky, r["k1"])
            reload(ch, last_c, r["c1"])
            reload(oxd, last_ox, r["ow1"])
            reload(oyd, last_oy, r["oh1"])
            restart(sub, last_sub, r["sub_last"])
            restart(grp, last_g, r["g1"])
            m.d.sync += [idling.eq(0), first.eq(1),
                         iy.eq(r["neg_pad"]), ix.eq(r["neg_pad"]), org_iy.eq(r["neg_pad"]), org_ix.eq(r["neg_pad"]),
                         addr.eq(r["addr0"]), org_addr.eq(r["addr0"]), widx.eq(0), wbase.eq(0)]

        def advance_counters():
            """The next patch entry after the one issued now."""
            m.d.sync += first.eq(sweep_end)
            with m.If(~last_kx):
                count_down(kx, last_kx)
                m.d.sync += [ix.eq(ix + 1), addr.eq(addr + r["s_kx"]), widx.eq(widx + 1)]
            with m.Elif(~last_ky):
                reload(kx, last_kx, r["k1"])
                count_down(ky, last_ky)
                m.d.sync += [ix.eq(ix - r["k1"]), iy.eq(iy + 1), addr.eq(addr + r["s_ky"]), widx.eq(widx + 1)]
            with m.Elif(~last_c):
                reload(kx, last_kx, r["k1"])
                reload(ky, last_ky, r["k1"])
                count_down(ch, last_c)
                m.d.sync += [ix.eq(ix - r["k1"]), iy.eq(iy - r["k1"]), addr.eq(addr + r["s_c"]), widx.eq(widx + 1)]
            with m.Else():  # the end of a sweep over the patch
                reload(kx, last_kx, r["k1"])
                reload(ky, last_ky, r["k1"])
                reload(ch, last_c, r["c1"])
                with m.If(~last_sub):  # the next pool position of the window: (0,1), (1,0), (1,1)
                    dx, dy = ~sub[0], sub[0] | sub[1]  # the next position's bits, without an adder
                    count_up(sub, last_sub, r["sub_last"])
                    m.d.sync += [widx.eq(wbase), iy.eq(org_iy + dy), ix.eq(org_ix + dx),
                                 addr.eq(org_addr + Mux(dy, Mux(dx, r["s_diag"], r["s_row"]), r["s_kx"]))]
                with m.Else():
                    restart(sub, last_sub, r["sub_last"])
                    m.d.sync += [idle.eq(r["idle"]), idling.eq(r["idle"] != 0)]
                    with m.If(~last_g):  # the next group of output channels at the same position
                        count_up(grp, last_g, r["g1"])
                        m.d.sync += [wbase.eq(wbase + r["fan_in"]), widx.eq(wbase + r["fan_in"]),
                                     iy.eq(org_iy), ix.eq(org_ix), addr.eq(org_addr)]
                    with m.Else():
                        restart(grp, last_g, r["g1"])
                        m.d.sync += [wbase.eq(0), widx.eq(0)]
                        with m.If(~last_ox):  # the next output position in the row
                            count_down(oxd, last_ox)
                            m.d.sync += [org_ix.eq(org_ix + r["step"]), ix.eq(org_ix + r["step"]),
                                         iy.eq(org_iy), org_addr.eq(org_addr + r["s_ox"]),
                                         addr.eq(org_addr + r["s_ox"])]
                        with m.Else():      # the next row
                            reload(oxd, last_ox, r["ow1"])
                            count_down(oyd, last_oy)
                            m.d.sync += [org_ix.eq(r["neg_pad"]),
                                         ix.eq(r["neg_pad"]), org_iy.eq(org_iy + r["step"]),
                                         iy.eq(org_iy + r["step"]), org_addr.eq(org_addr + r["s_oy"]),
                                         addr.eq(org_addr + r["s_oy"])]

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += load_cnt.eq(0)
                    m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += [self.act_in.ready.eq(1), act_w.en.eq(self.act_in.valid)]
                with m.If(self.act_in.valid):
                    m.d.sync += load_cnt.eq(load_cnt + 1)
                    with m.If(load_cnt == r["in_last"]):
                        init_counters()
                        m.next = "RUN"
            with m.State("RUN"):
                with m.If(adv):
                    with m.If(idling):
                        m.d.sync += [idle.eq(idle - 1), idling.eq(idle != 1)]
                    with m.Else():
                        m.d.comb += issue.eq(1)
                        advance_counters()
                        with m.If(sweep_end & last_sub & last_g & last_pos):
                            m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(out.valid & out.ready & out.p.last):
                    m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        m.d.sync += self.done.eq(fsm.ongoing("DRAIN") & out.valid & out.ready & out.p.last)

        # -- the pipeline: every register below advances with `adv` ------------------------------
        Ctrl = data.StructLayout({"first": 1, "last": 1, "wfirst": 1, "wlast": 1, "glast": 1, "final": 1})
        ctrl0 = Signal(Ctrl)
        m.d.comb += [ctrl0.first.eq(first), ctrl0.last.eq(sweep_end), ctrl0.wfirst.eq(sub == 0),
                     ctrl0.wlast.eq(last_sub), ctrl0.glast.eq(last_g), ctrl0.final.eq(last_g & last_pos)]
        depth = FC.PIPE_LATENCY  # stages 1..9 below, the output buffer the 10th
        v = [issue] + [Signal(name=f"v{i}") for i in range(1, depth)]
        c = [ctrl0] + [Signal(Ctrl, name=f"ctrl{i}", reset_less=True) for i in range(1, depth)]
        with m.If(adv):
            m.d.sync += [v[i].eq(v[i - 1]) for i in range(1, depth)]
            m.d.sync += [c[i].eq(c[i - 1]) for i in range(1, depth)]

        # stage 1: the memories' read registers; the padding test
        inb1, inb2 = Signal(reset_less=True), Signal(reset_less=True)
        grp1, grp2 = Signal.like(grp, reset_less=True), Signal.like(grp, reset_less=True)
        bank1, bank2 = (Signal(range(n_banks), name=n, reset_less=True) for n in ("bank1", "bank2"))
        m.d.comb += [act_r.addr.eq(addr[:abits]), act_r.en.eq(adv)]
        m.d.comb += [p.en.eq(adv) for p in w_ports]
        m.d.comb += [p.addr.eq(widx[:bank_bits] if n_banks > 1 else widx) for p in w_ports]
        # stage 2: the memories' output registers; the channel memory's address
        act2 = Signal(BF.ACT_BITS, reset_less=True)
        w2 = [Signal(w_shape, name=f"w2_{b}", reset_less=True) for b in range(n_banks)]
        m.d.comb += [ch_r.addr.eq(grp2), ch_r.en.eq(adv)]
        # stage 3: the DSP's A (the 9-bit signed activation) and B (the bank's weights) registers,
        # both zero outside the image (the padding): masking both keeps each a logic stage (three
        # plain registers in a row would be packed into a shift-register LUT before the DSP)
        a3, w3 = Signal(signed(BF.ACT_BITS + 1), reset_less=True), Signal(w_shape, reset_less=True)
        act9 = Mux(r["signed"], act2.as_signed(), act2.as_unsigned())
        w_bank = Array(w.as_value() for w in w2)[bank2] if n_banks > 1 else w2[0].as_value()
        # stage 4: M (products), the channel memory's output register (C: the bias)
        prod4 = [Signal(signed(PROD_BITS), name=f"prod4_{i}", reset_less=True) for i in range(L)]
        ch4 = Signal(ch_shape, reset_less=True)
        # stage 5: P (the accumulators)
        acc5 = [Signal(signed(BF.ACC_BITS), name=f"acc5_{i}", reset_less=True) for i in range(L)]
        shift5 = Signal(data.ArrayLayout(unsigned(BF.SHIFT_BITS), L), reset_less=True)
        # stage 6: the pool maximum; half an LSB of each channel's shift
        pm6 = [Signal(signed(BF.ACC_BITS), name=f"pm6_{i}", reset_less=True) for i in range(L)]
        half6 = [Signal(unsigned(BF.ACC_BITS), name=f"half6_{i}", reset_less=True) for i in range(L)]
        shift6 = Signal.like(shift5, reset_less=True)
        pv = [None] * depth  # a window's result is in the stage: pv[6..9]
        for i in range(6, depth):
            pv[i] = Signal(name=f"pv{i}")
        # stage 7: the rounding add; stage 8: the shift; stage 9: the saturation
        r7 = [Signal(signed(ROUND_BITS), name=f"r7_{i}", reset_less=True) for i in range(L)]
        shift7 = Signal.like(shift5, reset_less=True)
        s8 = [Signal(signed(ROUND_BITS), name=f"s8_{i}", reset_less=True) for i in range(L)]
        y9 = Signal(data.ArrayLayout(signed(OUT_BITS), L), reset_less=True)

        with m.If(adv):
            m.d.sync += [bank1.eq(widx[bank_bits:]), bank2.eq(bank1)] if n_banks > 1 else []
            m.d.sync += [w2[b].eq(p.data) for b, p in enumerate(w_ports)]
            m.d.sync += [inb1.eq((iy >= 0) & (iy < r["height"]) & (ix >= 0) & (ix < r["width"])), grp1.eq(grp),
                         inb2.eq(inb1), grp2.eq(grp1), act2.eq(act_r.data), a3.eq(Mux(inb2, act9, 0)),
                         w3.eq(Mux(inb2, w_bank, 0)), ch4.eq(ch_r.data), shift5.eq(ch4.shift),
                         shift6.eq(shift5), shift7.eq(shift6)]
            m.d.sync += [prod4[i].eq(a3 * w3[i]) for i in range(L)]
            with m.If(v[4]):
                m.d.sync += [acc5[i].eq(Mux(c[4].first, ch4.bias[i], acc5[i]) + prod4[i]) for i in range(L)]
            with m.If(v[5] & c[5].last):
                m.d.sync += [pm6[i].eq(Mux(c[5].wfirst | (acc5[i] > pm6[i]), acc5[i], pm6[i])) for i in range(L)]
            m.d.sync += pv[6].eq(v[5] & c[5].last & c[5].wlast)
            m.d.sync += [pv[i].eq(pv[i - 1]) for i in range(7, depth)]
            m.d.sync += [half6[i].eq((Const(1, BF.ACC_BITS) << shift5[i]) >> 1) for i in range(L)]
            m.d.sync += [r7[i].eq(pm6[i] + half6[i]) for i in range(L)]
            m.d.sync += [s8[i].eq(r7[i] >> shift7[i]) for i in range(L)]
            m.d.sync += [y9[i].eq(Mux(s8[i] < r["lo"], r["lo"], Mux(s8[i] > r["hi"], r["hi"], s8[i])))
                         for i in range(L)]

        # -- the output buffer: a window's values, shifted out one a beat --------------------------
        obuf = Signal(data.ArrayLayout(signed(OUT_BITS), L), reset_less=True)
        ocount = Signal(range(L + 1))
        ofinal = Signal()
        take = out.valid & out.ready
        can_load = (ocount == 0) | ((ocount == 1) & out.ready)
        m.d.comb += [adv.eq(~pv[depth - 1] | can_load), out.valid.eq(ocount != 0), out.p.data.eq(obuf[0]),
                     out.p.last.eq(ofinal & (ocount == 1))]
        with m.If(pv[depth - 1] & can_load):
            m.d.sync += [obuf.eq(y9), ocount.eq(Mux(c[depth - 1].glast, r["n_last"], r["n_full"])),
                         ofinal.eq(c[depth - 1].final)]
        with m.Elif(take):
            m.d.sync += [obuf[i].eq(obuf[i + 1]) for i in range(L - 1)]
            m.d.sync += ocount.eq(ocount - 1)
        return m
