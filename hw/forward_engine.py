"""The forward engine: one layer of the integer base model (`skip2lora.fixed.base_int`), streaming.

Each sample is one `IntLayer` pass, bit for bit (docs/base-numerics.md, "One layer"):

    acc_c = b_c + sum_j W[c, j] a_j          exact, ACC_BITS
    y_c   = sat(round_shift(acc_c, s_c))     per-channel shift, round half up, saturate to
                                             [out_lo, out_hi] (a ReLU is the saturation at 0)
    with a 2x2 max-pool of the accumulators first (it commutes with the requantization)

1. ``start`` loads the layer's geometry into registers (loop bounds, address strides, output
   range: build-time constants here, the registers a run-time geometry will write) and opens
   ``act_in``. From then on the engine takes samples continuously: ``in_size`` activations a
   sample, one a beat, NHWC (channel fastest), the raw 8-bit integers (uint8, or int8 when the
   layer's input is signed).
2. The input buffer is a ping-pong pair of banks: the load side fills one while the run side
   reads the other. A word holds E = `forward_cycles.word_entries` activations (consecutive
   channels of one position; a position takes ceil(C / E) words, the last zero padded), each beat
   written as its byte (a byte enable), in R = simd / E replicas (LUTRAM when small, `act_ram`).
   A sample issues once its bank is full and the run side is free; its bank is free again the
   cycle after its last issue, so the pipeline's drain overlaps the next sample.
3. The issue loop (`skip2lora.fixed.forward_cycles`): for each (pooled) output position, each
   group of ``lanes`` output channels, each of the 4 pool positions (or 1), each patch word q of
   ``simd`` entries: R memory words of E entries (the patch swept as (ky, kx, word of the
   position) items, R a cycle; the sums do not depend on the order). A build-time patch-offset
   table (a ROM addressed by q) gives each replica's word-address offset from the window origin
   and (dy, dx), and each entry's validity (in the patch, not a padding channel); a front end
   (loop counters, the table's read, the adds) computes the R addresses ahead of the issue. The
   weights are words of simd x lanes int8 per (group, q) in the same entry order, in banks of
   `WEIGHT_BANK_DEPTH` words.
4. Per lane: simd products (DSP A/B and M registers), a pipelined two-input adder tree, the
   accumulator starting from the bias, the pool maximum, then round (add half), shift, saturate.
   With ``pack`` (the default) lanes 2i and 2i+1 share one DSP48E2 a patch entry: one 9 x 27-bit
   product a (w_hi 2**18 + w_lo) carries both lanes' products (`PACK_MAX`, docs/forward-engine.md),
   the high lane's borrows enter its adds as carry-ins; values and cycles are those unpacked.
5. ``values_out`` carries each sample's outputs one a beat in NHWC order, ``last`` on its last
   value; ``done`` pulses the cycle after that value was taken. A dense layer is the 1x1
   convolution of a 1x1 image with ``fan_in`` channels.

Every memory read is registered twice (`memories.READ_LATENCY`), every DSP input and output is a
register, and only state and valid bits reset. A stalled ``values_out`` stalls the pipeline (one
enable); with an always-ready consumer it never stalls, a sample takes exactly
`forward_cycles.layer_cycles` cycles from ``start`` and back-to-back samples follow every
`forward_cycles.layer_interval` cycles.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..fixed import base_formats as BF
from ..fixed import forward_cycles as FC
from ..fixed.base_int import IntLayer
from .memories import READ_LATENCY
from .params import bits_for, invalid

__all__ = ["LANES_MAX", "SIMD_MAX", "ActivationLayout", "ValueLayout", "activation_signature", "value_signature",
           "geometry_layout", "geometry_registers", "ForwardEngine"]

LANES_MAX = 64  # output channels computed in parallel
SIMD_MAX = FC.SIMD_MAX  # patch entries computed in parallel (lanes x simd multipliers)
WEIGHT_BANK_DEPTH = 512  # words of a weight bank: a RAMB36's depth at 72 bits
PROD_BITS = BF.W_BITS + BF.ACT_BITS + 1  # int8 x (uint8 or int8 as 9-bit signed)
# Two lanes a DSP48E2 (``pack``): lanes 2i and 2i+1 share the activation a, and one 9 x 27-bit
# signed product X = a (w_hi 2**18 + w_lo) holds both: X[:18] = a w_lo (|a w_lo| <= 255 x 128 <
# 2**15) and X >> 18 = a w_hi - [a w_lo < 0] (the borrow, bit 17). Up to PACK_MAX packed products
# are summed before the split (their low parts' sum stays within +-2**17).
LO_BITS = 18                                  # the packed product's low field
PACKED_BITS = BF.ACT_BITS + 1 + 27            # 9 x 27 bits signed
PACK_MAX = (1 << (LO_BITS - 1)) // (((1 << BF.ACT_BITS) - 1) << (BF.W_BITS - 1))  # 4
OUT_BITS = BF.Z_BITS                      # the widest output: the Q8 int16 logits
ROUND_BITS = BF.ACC_BITS + 1              # accumulator + half an LSB never wraps
#: the activation replicas' memory: "block" (RAMB18/36), "distributed" (LUTRAM) or "auto" (LUTRAM
#: up to ACT_LUTRAM_BITS a replica, both banks)
ACT_RAM_STYLES = ("auto", "block", "distributed")
ACT_LUTRAM_BITS = FC.ACT_LUTRAM_BITS

assert READ_LATENCY == FC.READ_LATENCY

ActivationLayout = data.StructLayout({"data": unsigned(BF.ACT_BITS)})
ValueLayout = data.StructLayout({"data": signed(OUT_BITS), "last": 1})


def activation_signature() -> stream.Signature:
    return stream.Signature(ActivationLayout)


def value_signature() -> stream.Signature:
    return stream.Signature(ValueLayout)


def _geometry_registers(g: FC.EngineGeometry, lanes: int, simd: int) -> dict[str, int]:
    """The values the engine loads into its geometry registers at ``start``."""
    e = FC.word_entries(g, simd)
    c, w, p = -(-g.channels // e), g.width, g.padding  # c: words a position
    step = 2 if g.pool else 1
    out_h, out_w = g.out_hw
    n_groups = FC.groups(g, lanes)
    q = FC.patch_words(g, simd)
    return {
        "in_last": g.in_size - 1, "c1": g.channels - 1, "e1": e - 1, "height": g.height, "width": g.width,
        "neg_pad": -p, "step": step,
        "q1": q - 1, "q_words": q, "sub_last": g.pool_positions - 1, "g1": n_groups - 1,
        "ow1": out_w - 1, "oh1": out_h - 1, "idle": FC.window_cycles(g, lanes, simd)[1],
        # word-address strides of the window origin: the pool window's (0,1), (1,0) and (1,1)
        # from its (0,0); the next position; the next row (from the row's last position)
        "s_col": c, "s_row": w * c, "s_diag": w * c + c,
        "s_ox": step * c, "s_oy": step * w * c - (out_w - 1) * step * c, "addr0": (-p * w - p) * c,
        "signed": int(g.signed), "lo": g.out_lo, "hi": g.out_hi,
        "n_full": min(lanes, g.out_channels), "n_last": g.out_channels - (n_groups - 1) * lanes,
    }


def geometry_layout(g: FC.EngineGeometry, lanes: int, simd: int = 1) -> data.StructLayout:
    """The geometry registers' fields (`lib.data`): loop bounds, address strides, the output
    range. Sized for this layer here; a run-time geometry will size them for the largest."""
    rv = _geometry_registers(g, lanes, simd)
    n_groups = FC.groups(g, lanes)
    q = FC.patch_words(g, simd)

    def sized(*values):  # a signed shape holding every value (and the sums of two)
        return signed(max(bits_for(abs(v)) for v in values) + 2)

    span = (g.height + 2 * g.kernel + 2 * g.padding + 2) * (g.width + 2 * g.kernel + 2 * g.padding + 2) * g.channels
    addr_shape = sized(span, *(rv[k] for k in ("s_diag", "s_oy", "addr0")))
    coord_shape = sized(g.height + g.kernel + g.padding + 2, g.width + g.kernel + g.padding + 2)
    return data.StructLayout({
        "in_last": unsigned(bits_for(g.in_size - 1)), "c1": unsigned(bits_for(g.channels - 1)),
        "e1": unsigned(bits_for(FC.word_entries(g, simd) - 1)), "height": coord_shape, "width": coord_shape,
        "neg_pad": coord_shape, "step": coord_shape,
        "q1": unsigned(bits_for(q - 1)), "q_words": unsigned(bits_for(n_groups * q)), "sub_last": 2,
        "g1": unsigned(bits_for(n_groups - 1)), "ow1": unsigned(bits_for(g.out_hw[1])),
        "oh1": unsigned(bits_for(g.out_hw[0])), "idle": unsigned(bits_for(lanes)),
        **{k: addr_shape for k in ("s_col", "s_row", "s_diag", "s_ox", "s_oy", "addr0")},
        "signed": 1, "lo": signed(OUT_BITS), "hi": signed(OUT_BITS),
        "n_full": unsigned(bits_for(lanes)), "n_last": unsigned(bits_for(lanes)),
    })


def geometry_registers(layer: IntLayer, lanes: int, simd: int = 1) -> tuple[data.StructLayout, dict[str, int]]:
    """The geometry registers of ``layer`` on ``lanes`` lanes of ``simd`` entries: their layout
    and the values ``start`` loads."""
    g = FC.engine_geometry(layer)
    return geometry_layout(g, lanes, simd), _geometry_registers(g, lanes, simd)


class ForwardEngine(wiring.Component):
    """One layer of ``layer`` (an `IntLayer`) with ``lanes`` output channels and ``simd`` patch
    entries in parallel (lanes x simd multipliers), taking samples back to back. ``pack``: two
    lanes a DSP48E2 (lane pairs; an odd lane alone), `dsps` = ceil(lanes / 2) x simd; else one a
    lane. The values and cycles do not depend on it.

    Ports: ``start`` (a pulse: load the geometry registers, open ``act_in``; ignored while
    ``busy``), ``busy`` (a sample is in flight: partly or fully loaded, or not yet all out),
    ``done`` (a pulse per sample, the cycle after its last value was taken), ``act_in`` (stream
    sink of `ActivationLayout`), ``values_out`` (stream source of `ValueLayout`). The weights,
    biases, shifts and the patch-offset table are initialized memories (build-time, like the
    geometry registers' values).
    """

    def __init__(self, layer: IntLayer, lanes: int = 8, simd: int = 1, pack: bool = True, act_ram: str = "auto"):
        if not isinstance(layer, IntLayer):
            raise invalid(self, TypeError(f"layer must be an IntLayer, not {type(layer).__name__}"))
        for label, value, top in (("lanes", lanes, LANES_MAX), ("simd", simd, SIMD_MAX)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise invalid(self, TypeError(f"{label} must be an int, not {value!r}"))
            if not 1 <= value <= top:
                raise invalid(self, ValueError(f"{label} must be in 1..{top}, not {value}"))
        if not isinstance(pack, bool):
            raise invalid(self, TypeError(f"pack must be a bool, not {pack!r}"))
        if act_ram not in ACT_RAM_STYLES:
            raise invalid(self, ValueError(f"act_ram must be one of {', '.join(ACT_RAM_STYLES)}, not {act_ram!r}"))
        lo, hi = -(1 << (OUT_BITS - 1)), (1 << (OUT_BITS - 1)) - 1
        if not (lo <= layer.out_lo <= layer.out_hi <= hi):
            raise invalid(self, ValueError(f"{layer.name}: the output range [{layer.out_lo}, {layer.out_hi}] "
                                           f"must lie within {OUT_BITS}-bit signed values"))
        self.layer, self.lanes, self.simd = layer, int(lanes), int(simd)
        self.pack = pack
        self.act_ram = act_ram
        #: lane pairs sharing a DSP (lanes 2i, 2i+1), the rest (an odd lane, or all unpacked) alone
        self.pairs = self.lanes // 2 if pack else 0
        self.singles = self.lanes - 2 * self.pairs
        self.geometry = FC.engine_geometry(layer)
        #: activations a word of the activation memory (E consecutive channels of a position) and
        #: its replicas (one read port each): simd = entries x replicas
        self.entries = FC.word_entries(self.geometry, self.simd)
        self.replicas = self.simd // self.entries
        self.geometry_layout, self.regs = geometry_registers(layer, self.lanes, self.simd)
        super().__init__({
            "start": In(1), "busy": Out(1), "done": Out(1),
            "act_in": In(activation_signature()),
            "values_out": Out(value_signature()),
        })

    @property
    def cycles(self) -> int:
        """One sample's cycles from ``start`` (`forward_cycles.layer_cycles`)."""
        return FC.layer_cycles(self.geometry, self.lanes, self.simd)

    @property
    def interval(self) -> int:
        """Steady-state cycles a sample (`forward_cycles.layer_interval`)."""
        return FC.layer_interval(self.geometry, self.lanes, self.simd)

    @property
    def multipliers(self) -> int:
        """Products a cycle: lanes x simd."""
        return self.lanes * self.simd

    @property
    def dsps(self) -> int:
        """DSP48E2s: one a lane pair (packed) or a lone lane, per patch entry."""
        return (self.pairs + self.singles) * self.simd

    # -- the initialized memories ----------------------------------------------------------------
    def _entry_layout(self) -> data.StructLayout:
        """One patch entry's weights of a lane group: per lane pair, the low lane's int8 and the
        high lane's less the low one's sign (9 bits: the packed operand is then wiring), then the
        lone lanes' int8."""
        fields = {}
        if self.pairs:
            pair = data.StructLayout({"lo": signed(BF.W_BITS), "hi": signed(BF.W_BITS + 1)})
            fields["pairs"] = data.ArrayLayout(pair, self.pairs)
        if self.singles:
            fields["single"] = data.ArrayLayout(signed(BF.W_BITS), self.singles)
        return data.StructLayout(fields)

    def _patch_items(self):
        """Per patch word q and replica r: the word it reads, as (ky, kx, word of the position),
        or None past the patch; per entry s = r E + e its weight column (channel, ky, kx) or -1
        (past the patch or a padding channel)."""
        g, S, E, R = self.geometry, self.simd, self.entries, self.replicas
        k, wpp = g.kernel, -(-g.channels // E)
        Q = FC.patch_words(g, S)
        items = [(ky, kx, cc) for ky in range(k) for kx in range(k) for cc in range(wpp)]
        words, cols = [], np.full((Q, S), -1, np.int64)
        for q in range(Q):
            row = []
            for r in range(R):
                i = q * R + r
                it = items[i] if i < len(items) else None
                row.append(it)
                if it is not None:
                    ky, kx, cc = it
                    for e in range(E):
                        ch = cc * E + e
                        if ch < g.channels:
                            cols[q, r * E + e] = (ch * k + ky) * k + kx
            words.append(row)
        return words, cols

    def _weight_words(self):
        L, S, g = self.lanes, self.simd, self.geometry
        n_groups, q = FC.groups(g, L), FC.patch_words(g, S)
        w = np.zeros((n_groups * L, g.fan_in + 1), np.int64)  # the last column: zero (no entry)
        w[:g.out_channels, :g.fan_in] = np.asarray(self.layer.weight, np.int64)
        cols = self._patch_items()[1]
        # word (group, q), entry s, lane l: W[group L + l, the entry's column]
        w = w[:, np.where(cols < 0, g.fan_in, cols)]  # (n_groups L, q, S)
        w = w.reshape(n_groups, L, q, S).transpose(0, 2, 3, 1).reshape(n_groups * q, S, L)
        P = self.pairs
        lo, hi = w[:, :, 0:2 * P:2], w[:, :, 1:2 * P:2]
        hi = hi - (lo < 0)
        words = []
        for k in range(len(w)):
            word = []
            for s in range(S):
                entry = {}
                if P:
                    entry["pairs"] = [{"lo": int(lo[k, s, i]), "hi": int(hi[k, s, i])} for i in range(P)]
                if self.singles:
                    entry["single"] = w[k, s, 2 * P:].tolist()
                word.append(entry)
            words.append(word)
        return words

    def _channel_words(self):
        L, g = self.lanes, self.geometry
        n = FC.groups(g, L) * L
        bias, shift = np.zeros(n, np.int64), np.zeros(n, np.int64)
        bias[:g.out_channels] = self.layer.bias
        shift[:g.out_channels] = self.layer.shift
        return [{"bias": bias[i:i + L].tolist(), "shift": shift[i:i + L].tolist()} for i in range(0, n, L)]

    def _patch_layout(self):
        g = self.geometry
        k = unsigned(bits_for(g.kernel - 1))
        wpp = -(-g.channels // self.entries)
        read = data.StructLayout({"off": unsigned(bits_for(g.kernel * g.width * wpp)), "dy": k, "dx": k})
        return data.StructLayout({"read": data.ArrayLayout(read, self.replicas), "valid": self.simd})

    def _patch_words(self):
        """Word q: per replica the word it reads (its word-address offset from the window origin,
        (dy, dx)); per entry whether it is one (the weights' columns follow `_patch_items`)."""
        g = self.geometry
        wpp = -(-g.channels // self.entries)
        items, cols = self._patch_items()
        words = []
        for row, col in zip(items, cols):
            read = [{"off": (ky * g.width + kx) * wpp + cc, "dy": ky, "dx": kx} if it is not None
                    else {"off": 0, "dy": 0, "dx": 0} for it in row for (ky, kx, cc) in [it or (0, 0, 0)]]
            words.append({"read": read, "valid": sum(1 << s for s in range(self.simd) if col[s] >= 0)})
        return words

    def elaborate(self, platform):
        m = Module()
        L, S, g, rv = self.lanes, self.simd, self.geometry, self.regs
        E, R = self.entries, self.replicas
        n_groups, Q, T = FC.groups(g, L), FC.patch_words(g, S), FC.tree_stages(S)
        depth = FC.pipe_latency(S)  # stages 1..depth-1 below, the output buffer the last
        A = depth - 5               # the accumulator's stage
        abits = bits_for(FC.activation_words(g, S) - 1)  # a bank's word address

        # -- geometry registers, loaded at start --------------------------------------------------
        layout = self.geometry_layout
        addr_shape, coord_shape = layout["addr0"].shape, layout["height"].shape
        shapes = {name: field.shape for name, field in layout}
        r = Signal(layout, name="geometry", reset_less=True)
        active = Signal()   # a start was taken: the input is open
        init = Signal()     # the cycle after an accepted start: the loop counters load from r
        take_start = self.start & ~self.busy
        m.d.sync += init.eq(take_start)
        with m.If(take_start):
            m.d.sync += [r.eq(layout.const(rv)), active.eq(1)]

        # -- memories -----------------------------------------------------------------------------
        # the input: words of E activations (consecutive channels of a position), two banks (the
        # address's top bit) in each of R = S / E identical replicas, one read port each; every
        # replica takes every write (one activation a beat: its byte of the word, a byte enable)
        act_w, act_r = [], []
        style = self.act_ram
        if style == "auto":
            style = "distributed" if FC.activation_bits(g, S) <= ACT_LUTRAM_BITS else "block"
        attrs = {"ram_style": style}
        for r_ in range(R):
            m.submodules[f"act_mem{r_}"] = mem = memory.Memory(shape=unsigned(E * BF.ACT_BITS), depth=2 << abits,
                                                              init=[], attrs=attrs)
            act_w.append(mem.write_port(granularity=BF.ACT_BITS))
            act_r.append(mem.read_port())
        rom_shape = self._patch_layout()
        m.submodules.patch_rom = patch_rom = memory.Memory(shape=rom_shape, depth=Q, init=self._patch_words())
        rom_r = patch_rom.read_port()
        w_shape = data.ArrayLayout(self._entry_layout(), S)
        # the weights in banks of WEIGHT_BANK_DEPTH words, each read into its own output register:
        # the bank select is a mux after those registers (in front of the DSPs' B registers),
        # never logic between a block RAM and its register
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

        out = self.values_out
        adv = Signal()          # the pipeline advances (low only while the output buffer is full)
        issue = Signal()        # the issue registers' patch word is read from its bank this cycle
        take = out.valid & out.ready
        sample_out = take & out.p.last

        # -- the load side: fill bank `wsel`, then the other --------------------------------------
        load_cnt = Signal(bits_for(g.in_size - 1))
        load_word = Signal(abits)         # the beat's word in the bank
        load_ch = Signal(range(g.channels))
        load_e = Signal(range(E))         # its byte in the word
        # load_ch == C - 1, load_e == E - 1, as registers (between samples all are 0)
        ch_last, e_last = Signal(init=rv["c1"] == 0), Signal(init=rv["e1"] == 0)
        wsel, rsel = Signal(), Signal()   # the bank being loaded; the bank the run side reads
        full = Signal(2)                  # a bank holds a whole sample not yet read to its end
        f_valid = Signal(3)               # the front end's stages hold a patch word (see below)
        rfull = Mux(rsel, full[1], full[0])
        beat = Signal()
        load_last = load_cnt == r["in_last"]
        # a sample's last beat waits for a full front end (only a sample shorter than the front
        # end's fill after start ever waits), so every sample issues the cycle its bank is full
        m.d.comb += [self.act_in.ready.eq(active & ~Mux(wsel, full[1], full[0]) & (f_valid[2] | ~load_last)),
                     beat.eq(self.act_in.valid & self.act_in.ready)]
        byte_en = Signal(E)
        m.d.comb += byte_en.eq(Mux(beat, Const(1, E) << load_e, 0))
        for p in act_w:
            m.d.comb += [p.addr.eq(Cat(load_word, wsel)), p.data.eq(self.act_in.p.data.replicate(E)),
                         p.en.eq(byte_en)]
        with m.If(beat):
            m.d.sync += load_cnt.eq(Mux(load_last, 0, load_cnt + 1))
            with m.If(load_last):
                m.d.sync += [wsel.eq(~wsel), load_word.eq(0), load_ch.eq(0), load_e.eq(0),
                             ch_last.eq(r["c1"] == 0), e_last.eq(r["e1"] == 0)]
            with m.Elif(ch_last | e_last):  # the next word: the next position's first, or E channels on
                m.d.sync += [load_word.eq(load_word + 1), load_e.eq(0), e_last.eq(r["e1"] == 0)]
                m.d.sync += [load_ch.eq(Mux(ch_last, 0, load_ch + 1)),
                             ch_last.eq(Mux(ch_last, r["c1"] == 0, load_ch + 1 == r["c1"]))]
            with m.Else():
                m.d.sync += [load_e.eq(load_e + 1), e_last.eq(load_e + 1 == r["e1"]),
                             load_ch.eq(load_ch + 1), ch_last.eq(load_ch + 1 == r["c1"])]

        # samples in flight (from the first beat to the last value taken): `busy`
        pending = Signal(range(depth + 5))
        m.d.sync += pending.eq(pending + (beat & (load_cnt == 0)) - sample_out)
        m.d.comb += self.busy.eq(pending != 0)
        m.d.sync += self.done.eq(sample_out)

        # -- the run side's front end: the loop counters (F0), the patch-offset table's read (F1,
        # F2) and each entry's address, row and column (the issue registers). It runs ahead of
        # the issue (the addresses depend on the geometry only), so a bank is read at the issue
        # itself and free the cycle after its last issue; it moves whenever its issue registers
        # are empty or issued, and once filled after start never empties.
        q = Signal(shapes["q1"], reset_less=True)
        sub = Signal(2, reset_less=True)
        grp = Signal(shapes["g1"], reset_less=True)
        oxd, oyd = Signal(shapes["ow1"], reset_less=True), Signal(shapes["oh1"], reset_less=True)
        base_iy, base_ix, org_iy, org_ix = (Signal(coord_shape, name=n, reset_less=True)
                                            for n in ("base_iy", "base_ix", "org_iy", "org_ix"))
        base_addr, org_addr = Signal(addr_shape, reset_less=True), Signal(addr_shape, reset_less=True)
        widx, wbase = Signal(shapes["q_words"], reset_less=True), Signal(shapes["q_words"], reset_less=True)
        first = Signal(reset_less=True)
        # each counter's "last value" flag is a register, set when the counter moves: no compare
        # (a carry chain) sits in front of the address adders
        last_q, last_sub, last_g, last_ox, last_oy = (
            Signal(name=n, reset_less=True) for n in ("last_q", "last_sub", "last_g", "last_ox", "last_oy"))
        last_pos = last_ox & last_oy
        v_issue = Signal()  # the issue registers hold a patch word
        fmove = ~v_issue | issue

        def reload(counter, flag, value):   # down counters
            m.d.sync += [counter.eq(value), flag.eq(value == 0)]

        def count_down(counter, flag):
            m.d.sync += [counter.eq(counter - 1), flag.eq(counter == 1)]

        def restart(counter, flag, last):   # up counters from 0 to a register's value
            m.d.sync += [counter.eq(0), flag.eq(last == 0)]

        def count_up(counter, flag, last):
            m.d.sync += [counter.eq(counter + 1), flag.eq(counter + 1 == last)]

        def origin(iy, ix, a):  # the next window's origin is also its position's
            m.d.sync += [base_iy.eq(iy), base_ix.eq(ix), base_addr.eq(a), org_iy.eq(iy), org_ix.eq(ix), org_addr.eq(a)]

        def first_position():
            reload(oxd, last_ox, r["ow1"])
            reload(oyd, last_oy, r["oh1"])
            origin(r["neg_pad"], r["neg_pad"], r["addr0"])

        def advance():
            """The next patch word after this one (after a sample's last: the next sample's first)."""
            m.d.sync += first.eq(last_q)
            with m.If(~last_q):
                count_up(q, last_q, r["q1"])
                m.d.sync += widx.eq(widx + 1)
            with m.Else():  # the end of a sweep over the patch
                restart(q, last_q, r["q1"])
                with m.If(~last_sub):  # the next pool position of the window: (0,1), (1,0), (1,1)
                    dx, dy = ~sub[0], sub[0] | sub[1]  # the next position's bits, without an adder
                    count_up(sub, last_sub, r["sub_last"])
                    m.d.sync += [widx.eq(wbase), org_iy.eq(base_iy + dy), org_ix.eq(base_ix + dx),
                                 org_addr.eq(base_addr + Mux(dy, Mux(dx, r["s_diag"], r["s_row"]), r["s_col"]))]
                with m.Else():
                    restart(sub, last_sub, r["sub_last"])
                    m.d.sync += [org_iy.eq(base_iy), org_ix.eq(base_ix), org_addr.eq(base_addr)]
                    with m.If(~last_g):  # the next group of output channels at the same position
                        count_up(grp, last_g, r["g1"])
                        m.d.sync += [wbase.eq(wbase + r["q_words"]), widx.eq(wbase + r["q_words"])]
                    with m.Else():
                        restart(grp, last_g, r["g1"])
                        m.d.sync += [wbase.eq(0), widx.eq(0)]
                        with m.If(~last_ox):  # the next output position in the row
                            count_down(oxd, last_ox)
                            origin(base_iy, base_ix + r["step"], base_addr + r["s_ox"])
                        with m.Elif(~last_oy):  # the next row
                            reload(oxd, last_ox, r["ow1"])
                            count_down(oyd, last_oy)
                            origin(base_iy + r["step"], r["neg_pad"], base_addr + r["s_oy"])
                        with m.Else():  # the sample's last word: back to the first position
                            first_position()

        with m.If(init):  # after a taken start (nothing in flight): the first word, refill
            first_position()
            restart(q, last_q, r["q1"])
            restart(sub, last_sub, r["sub_last"])
            restart(grp, last_g, r["g1"])
            m.d.sync += [first.eq(1), widx.eq(0), wbase.eq(0), f_valid.eq(0b001), v_issue.eq(0)]
        with m.Elif(fmove):
            advance()
            m.d.sync += [f_valid.eq(Cat(f_valid[0], f_valid[:2])), v_issue.eq(f_valid[2])]

        Ctrl = data.StructLayout({"first": 1, "last": 1, "wfirst": 1, "wlast": 1, "glast": 1, "final": 1, "send": 1})
        ctrl_f = Signal(Ctrl)
        m.d.comb += [ctrl_f.first.eq(first), ctrl_f.last.eq(last_q), ctrl_f.wfirst.eq(sub == 0),
                     ctrl_f.wlast.eq(last_sub), ctrl_f.glast.eq(last_g), ctrl_f.final.eq(last_g & last_pos),
                     ctrl_f.send.eq(last_q & last_sub & last_g & last_pos)]
        front = []  # the statements under `fmove`

        def fdelay(sig, shape, name, reset_issue=False):
            """[sig at F0, F1, F2, the issue registers]."""
            line = [sig]
            for i in ("f1", "f2", "i"):
                s = Signal(shape, name=f"{name}_{i}", reset_less=not (reset_issue and i == "i"))
                front.append(s.eq(line[-1]))
                line.append(s)
            return line

        ctrl_i = fdelay(ctrl_f, Ctrl, "ctrl")[3]
        # (a reset keeps the weight address a flip-flop: a plain register chain becomes a shift-
        # register LUT, whose slow output would sit in front of a LUT-mapped weight ROM's logic)
        widx_i = fdelay(widx, shapes["q_words"], "widx", reset_issue=True)[3]
        grp_i = fdelay(grp, grp.shape(), "grp")[3]
        org = [fdelay(s, coord_shape if s is not org_addr else addr_shape, s.name)[2]
               for s in (org_iy, org_ix, org_addr)]  # at F2
        m.d.comb += [rom_r.addr.eq(q), rom_r.en.eq(fmove)]
        rom2 = Signal(rom_shape, reset_less=True)
        front.append(rom2.eq(rom_r.data))
        addr_i = [Signal(addr_shape, name=f"addr_i{r_}", reset_less=True) for r_ in range(R)]
        iy_i = [Signal(coord_shape, name=f"iy_i{r_}", reset_less=True) for r_ in range(R)]
        ix_i = [Signal(coord_shape, name=f"ix_i{r_}", reset_less=True) for r_ in range(R)]
        val_i = Signal(S, reset_less=True)
        front.append(val_i.eq(rom2.valid))
        for r_ in range(R):
            e = rom2.read[r_]
            front += [addr_i[r_].eq(org[2] + e.off), iy_i[r_].eq(org[0] + e.dy), ix_i[r_].eq(org[1] + e.dx)]
        with m.If(fmove):
            m.d.sync += front

        # -- the issue: the bank `rsel` is read at the issue registers' addresses ------------------
        idle = Signal(shapes["idle"], reset_less=True)
        idling = Signal()  # idle != 0, as a register
        m.d.comb += issue.eq(adv & v_issue & rfull & ~idling)
        with m.If(issue & ctrl_i.last & ctrl_i.wlast):  # after each window
            m.d.sync += [idle.eq(r["idle"]), idling.eq(r["idle"] != 0)]
        with m.Elif(adv & idling):
            m.d.sync += [idle.eq(idle - 1), idling.eq(idle != 1)]
        with m.If(init):
            m.d.sync += idling.eq(0)
        # a bank is full from its last beat to its sample's last issue (never the same bank)
        for b in range(2):
            set_b = beat & load_last & (wsel == b)
            clear_b = issue & ctrl_i.send & (rsel == b)
            m.d.sync += full[b].eq((full[b] | set_b) & ~clear_b)
        with m.If(issue & ctrl_i.send):
            m.d.sync += rsel.eq(~rsel)

        # -- the pipeline: every register below advances with `adv` ------------------------------
        piped = []  # the statements under `adv`

        def delay(sig, shape, n, name, reset_less=True):
            """[sig, sig one stage later, ..., n stages later]."""
            line = [sig]
            for i in range(1, n + 1):
                s = Signal(shape, name=f"{name}{i}", reset_less=reset_less)
                piped.append(s.eq(line[-1]))
                line.append(s)
            return line

        v = delay(issue, 1, depth - 1, "v", reset_less=False)
        c = delay(ctrl_i, Ctrl, depth - 1, "ctrl")
        gr = delay(grp_i, grp.shape(), A - 3, "grp")

        # stage 1: the memories' read registers; the padding test (compares)
        for r_ in range(R):
            m.d.comb += [act_r[r_].addr.eq(Cat(addr_i[r_][:abits], rsel)), act_r[r_].en.eq(adv)]
        m.d.comb += [p.en.eq(adv) for p in w_ports]
        m.d.comb += [p.addr.eq(widx_i[:bank_bits] if n_banks > 1 else widx_i) for p in w_ports]
        inside = [(iy_i[r_] >= 0) & (iy_i[r_] < r["height"]) & (ix_i[r_] >= 0) & (ix_i[r_] < r["width"])
                  for r_ in range(R)]
        inb = delay(Cat(*(val_i[s] & inside[s // E] for s in range(S))), S, 2, "inb")  # inb[2]: stage 2
        wbank = delay(widx_i[bank_bits:] if n_banks > 1 else Const(0, 1), range(n_banks), 2, "wbank")
        # stage 2: the memories' output registers
        word2 = [Signal(E * BF.ACT_BITS, name=f"act2_{r_}", reset_less=True) for r_ in range(R)]
        w2 = [Signal(w_shape, name=f"w2_{b}", reset_less=True) for b in range(n_banks)]
        piped += [word2[r_].eq(act_r[r_].data) for r_ in range(R)]
        act2 = [word2[s // E].word_select(s % E, BF.ACT_BITS) for s in range(S)]  # entry s = r E + e
        piped += [w2[b].eq(p.data) for b, p in enumerate(w_ports)]
        # stage 3: the DSPs' A (9-bit signed activations) and B (the bank's weights) registers,
        # both zero outside the image or past fan_in: masking both keeps each a logic stage (three
        # plain registers in a row would be packed into a shift-register LUT before the DSP)
        a3 = [Signal(signed(BF.ACT_BITS + 1), name=f"a3_{s}", reset_less=True) for s in range(S)]
        w3 = Signal(w_shape, reset_less=True)
        w_sel = w_shape(Array(w.as_value() for w in w2)[wbank[2]] if n_banks > 1 else w2[0].as_value())
        for s in range(S):
            act9 = Mux(r["signed"], act2[s].as_signed(), act2[s].as_unsigned())
            piped.append(a3[s].eq(Mux(inb[2][s], act9, 0)))
            piped.append(w3[s].eq(Mux(inb[2][s], w_sel[s].as_value(), 0)))
        # stage 4: M (the products: per lane pair one 9 x 27-bit product, per lone lane a 9 x 8);
        # stages 5..4+T: the adder trees, one two-input add a stage. A pair's tree adds its packed
        # products while at most PACK_MAX are summed, then splits each sum into the low lane's
        # value (its low 18 bits), the high lane's (the bits above) and the borrow (bit 17): each
        # later add of the high lane takes one pending borrow as its carry-in and passes the other
        # on, the accumulator's add takes the last (no adder is added, no path deepens).
        P1 = self.pairs

        def reg(shape, name):
            return Signal(shape, name=name, reset_less=True)

        def width(n):  # a sum of n products (or of n products' high or low parts)
            return PROD_BITS + (n - 1).bit_length()

        def split(x):
            """A packed sum -> ("s", low, high, borrow, n); true high = high + borrow."""
            if x[0] != "p":
                return x
            _, val, n = x
            return ("s", val[:LO_BITS].as_signed(), val[LO_BITS:LO_BITS + width(n)].as_signed(), val[LO_BITS - 1], n)

        def combine(x, y, name):
            n = x[-1] + y[-1]
            if x[0] == "u":
                node = reg(signed(width(n)), name)
                piped.append(node.eq(x[1] + y[1]))
                return ("u", node, n)
            if x[0] == "p" and y[0] == "p" and n <= PACK_MAX:
                node = reg(signed(PACKED_BITS + (n - 1).bit_length()), name)
                piped.append(node.eq(x[1] + y[1]))
                return ("p", node, n)
            x, y = split(x), split(y)
            lo, hi, b = reg(signed(width(n)), f"{name}_lo"), reg(signed(width(n)), f"{name}_hi"), reg(1, f"{name}_b")
            piped.extend([lo.eq(x[1] + y[1]), hi.eq(x[2] + y[2] + x[3]), b.eq(y[3])])
            return ("s", lo, hi, b, n)

        def keep(x, name):
            regs = []
            for k, part in enumerate(x[1:-1]):
                r_ = reg(part.shape(), name + ("_lo", "_hi", "_b")[k] if x[0] == "s" else name)
                piped.append(r_.eq(part))
                regs.append(r_)
            return (x[0], *regs, x[-1])

        def tree(level, tag):
            for t in range(T):
                # an odd one out passes to the next level, where it goes first: no value passes
                # twice in a row (plain register chains become shift-register LUTs, and a DSP's
                # output register with them)
                nxt = []
                for k in range(0, len(level), 2):
                    name = f"sum{5 + t}_{k // 2}_{tag}"
                    nxt.append(combine(level[k], level[k + 1], name) if k + 1 < len(level) else keep(level[k], name))
                level = nxt[-1:] + nxt[:-1] if len(level) % 2 else nxt
            return level[0]

        sums, carries = [None] * L, [0] * L
        for i in range(P1):
            leaves = []
            for s in range(S):
                pair = w3[s].pairs[i]
                operand = Cat(pair.lo, pair.lo[-1].replicate(LO_BITS - BF.W_BITS), pair.hi).as_signed()
                x = reg(signed(PACKED_BITS), f"prod4_{s}_p{i}")
                piped.append(x.eq(a3[s] * operand))
                leaves.append(("p", x, 1))
            _, sums[2 * i], sums[2 * i + 1], carries[2 * i + 1], _ = split(tree(leaves, f"p{i}"))
        for j in range(self.singles):
            leaves = []
            for s in range(S):
                x = reg(signed(PROD_BITS), f"prod4_{s}_{2 * P1 + j}")
                piped.append(x.eq(a3[s] * w3[s].single[j]))
                leaves.append(("u", x, 1))
            sums[2 * P1 + j] = tree(leaves, str(2 * P1 + j))[1]
        # stage A-1: the channel memory's output register (C: the biases), read at A-3
        m.d.comb += [ch_r.addr.eq(gr[A - 3]), ch_r.en.eq(adv)]
        ch = Signal(ch_shape, reset_less=True)
        piped.append(ch.eq(ch_r.data))
        # stage A: P (the accumulators)
        acc = [Signal(signed(BF.ACC_BITS), name=f"acc_{i}", reset_less=True) for i in range(L)]
        sh = delay(ch.shift, data.ArrayLayout(unsigned(BF.SHIFT_BITS), L), 3, "shift")  # sh[1]: stage A
        # stage A+1: the pool maximum; half an LSB of each channel's shift
        pm = [Signal(signed(BF.ACC_BITS), name=f"pm_{i}", reset_less=True) for i in range(L)]
        half = [Signal(unsigned(BF.ACC_BITS), name=f"half_{i}", reset_less=True) for i in range(L)]
        pv = [None] * depth  # a window's result is in the stage: pv[A+1 .. depth-1]
        for i in range(A + 1, depth):
            pv[i] = Signal(name=f"pv{i}")
        # stage A+2: the rounding add; A+3: the shift; A+4: the saturation
        rnd = [Signal(signed(ROUND_BITS), name=f"rnd_{i}", reset_less=True) for i in range(L)]
        shr = [Signal(signed(ROUND_BITS), name=f"shr_{i}", reset_less=True) for i in range(L)]
        y = Signal(data.ArrayLayout(signed(OUT_BITS), L), reset_less=True)

        with m.If(adv):
            m.d.sync += piped
            with m.If(v[A - 1]):
                m.d.sync += [acc[i].eq(Mux(c[A - 1].first, ch.bias[i], acc[i]) + sums[i] + carries[i])
                             for i in range(L)]
            with m.If(v[A] & c[A].last):
                m.d.sync += [pm[i].eq(Mux(c[A].wfirst | (acc[i] > pm[i]), acc[i], pm[i])) for i in range(L)]
            m.d.sync += pv[A + 1].eq(v[A] & c[A].last & c[A].wlast)
            m.d.sync += [pv[i].eq(pv[i - 1]) for i in range(A + 2, depth)]
            m.d.sync += [half[i].eq((Const(1, BF.ACC_BITS) << sh[1][i]) >> 1) for i in range(L)]
            m.d.sync += [rnd[i].eq(pm[i] + half[i]) for i in range(L)]
            m.d.sync += [shr[i].eq(rnd[i] >> sh[3][i]) for i in range(L)]
            m.d.sync += [y[i].eq(Mux(shr[i] < r["lo"], r["lo"], Mux(shr[i] > r["hi"], r["hi"], shr[i])))
                         for i in range(L)]

        # -- the output buffer: a window's values, shifted out one a beat --------------------------
        obuf = Signal(data.ArrayLayout(signed(OUT_BITS), L), reset_less=True)
        ocount = Signal(range(L + 1))
        ofinal = Signal()
        can_load = (ocount == 0) | ((ocount == 1) & out.ready)
        m.d.comb += [adv.eq(~pv[depth - 1] | can_load), out.valid.eq(ocount != 0), out.p.data.eq(obuf[0]),
                     out.p.last.eq(ofinal & (ocount == 1))]
        with m.If(pv[depth - 1] & can_load):
            m.d.sync += [obuf.eq(y), ocount.eq(Mux(c[depth - 1].glast, r["n_last"], r["n_full"])),
                         ofinal.eq(c[depth - 1].final)]
        with m.Elif(take):
            m.d.sync += [obuf[i].eq(obuf[i + 1]) for i in range(L - 1)]
            m.d.sync += ocount.eq(ocount - 1)
        return m
