"""The geometry unit: a job's model geometry, from its registers to what the blocks run by.

One bitstream runs many models: a job's taps, their dims and its classes are registers
(TAPk_DIM, CLASSES), up to the build's maxima (`AcceleratorConfig.taps_max`, ``classes_max``,
``tap_lines_max``; the rank is the build's, a lower one runs padded with zero rows by the host).
At a job's start, while the scalar unit derives the job's constants (INIT), this unit walks the
geometry once, a line a cycle, and

* writes the datapath's line table (`LINE_INFO` per cache line of an entry: the line's tap,
  whether it is the tap's first or last line, or which tail line it is): the entry is the job's
  own layout (`packing.Layout` of its geometry): its tap lines, then its tail lines (base logits,
  then the label);
* sets ``t_last`` and ``s_last`` (the entry's last tap line and last line: the sequencer's
  backward and forward passes end there), ``lines_m1`` (the DDR reader's beats an entry, less
  one), the taps present (``tap_on``: the head units take u = 0 for the others), the classes
  present (``class_on``: the softmax leaves the others out) and where the label is
  (``label_line``, ``label_word``: the word after the job's last logit);
* checks the geometry (``bad``): at least one tap, no tap after an absent one, at most
  ``tap_lines_max`` tap lines, 2 <= classes <= ``classes_max``.

It takes at most 2 K + S + 8 cycles (K tap slots, S the build's entry lines), which the build
checks is under `cycles.INIT_LATENCY`: the job's schedule does not wait for it.
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..fixed import cycles
from ..fixed import formats as F
from .params import HwParams, bits_for, require_params
from .ports import write_port

__all__ = ["GeometryUnit", "line_info_layout", "schedule_signature", "DIM_BITS", "CLASSES_BITS", "walk_cycles"]

DIM_BITS = 16      # TAPk_DIM
CLASSES_BITS = 8   # CLASSES


def line_info_layout(p: HwParams) -> data.StructLayout:
    """The datapath's line table entry: a tap line (its tap, first / last of the tap) or a tail line."""
    return data.StructLayout({"tap": p.tap_bits, "first": 1, "last": 1, "tail": 1,
                              "tail_line": bits_for(p.tail_lines - 1)})


def schedule_signature(p: HwParams) -> wiring.Signature:
    """Geometry unit -> sequencer, the unit's view: the walk is over (``ready``; ``bad``: the build
    does not run this geometry); the entry's last tap line and last line; F_GAP's cycles (``has_gap``,
    ``f_gap_m1``); the batch gate's countdown start (``gate_m1``) and its b_start point (``gate_b``)."""
    return wiring.Signature({
        "ready": Out(1), "bad": Out(1),
        "t_last": Out(p.line_addr_bits), "s_last": Out(p.line_addr_bits),
        "has_gap": Out(1), "f_gap_m1": Out(range(p.timing.head + 1)),
        "gate_m1": Out(range(gate_max(p) + 1)), "gate_b": Out(range(gate_max(p) + 1)),
    })


def walk_cycles(p: HwParams) -> int:
    """The longest walk: start -> ``ready``."""
    return 2 * p.K + p.sample_lines + 8


def gate_max(p: HwParams) -> int:
    """An upper bound of `cycles.Timing.batch_gate` over the geometries the build runs."""
    tm = p.timing
    return tm.opt_a_wait + max(cycles.OPT_LATENCY + 3, tm.opt_b_cycles + 1)


class GeometryUnit(wiring.Component):
    def __init__(self, params: HwParams):
        self.params = require_params(self, params)
        p = params
        assert walk_cycles(p) < cycles.INIT_LATENCY, "the geometry walk must end within INIT"
        super().__init__({
            "start": In(1),                       # the job's registers below are valid from here on
            "dims": In(DIM_BITS).array(p.K),
            "classes": In(CLASSES_BITS),
            "schedule": Out(schedule_signature(p)),
            "info_wr": In(write_port(p.line_addr_bits, line_info_layout(p).size)),
            "lines_m1": Out(8),                   # an entry's lines less one (the DDR reader's burst)
            "tap_on": Out(1).array(p.K),
            "class_on": Out(1).array(p.C),
            "label_line": Out(bits_for(p.tail_lines - 1)),
            "label_word": Out(bits_for(max(p.beat_bits // 16 - 1, 1))),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        K, C, P, T = p.K, p.C, p.P, p.tap_lines
        out = self.schedule
        lanes_log = P.bit_length() - 1
        wpl = p.beat_bits // 16                # 16-bit tail words a line
        wpl_log = wpl.bit_length() - 1
        # per tap its lines, ceil(d / P); the job's tail lines and checks (registered: the dims and
        # classes are constant from ``start`` on, and the walk reads these a cycle later)
        nl = [Signal(DIM_BITS - lanes_log + 1, name=f"lines{k}", reset_less=True) for k in range(K)]
        m.d.sync += [nl[k].eq((self.dims[k] + (P - 1)) >> lanes_log) for k in range(K)]
        tail_n = Signal(bits_for(CLASSES_BITS + 16), reset_less=True)  # ceil(16 (C + 1) / beat_bits)
        m.d.sync += tail_n.eq(((self.classes + 1) + (wpl - 1)) >> wpl_log)
        classes_ok = Signal(reset_less=True)
        m.d.sync += classes_ok.eq((self.classes >= 2) & (self.classes <= C))
        m.d.sync += [self.tap_on[k].eq(nl[k] != 0) for k in range(K)]
        m.d.sync += [self.class_on[c].eq(self.classes > c) for c in range(C)]
        m.d.sync += [self.label_line.eq(self.classes >> wpl_log),
                     self.label_word.eq(self.classes[:wpl_log] if wpl_log else 0)]

        k = Signal(range(K + 1))
        line = Signal(range(p.sample_lines + 2))
        rem = Signal.like(nl[0])
        first = Signal()
        absent = Signal()          # an absent tap was seen
        tail = Signal(range(p.tail_lines + 1))
        info = Signal(line_info_layout(p))
        tm, oaw = p.timing, p.timing.opt_a_wait
        wide = signed(bits_for(gate_max(p) + p.sample_lines + tm.head) + 1)
        fg, g2, g3, g23 = (Signal(wide, name=n, reset_less=True) for n in ("fg", "g2", "g3", "g23"))
        wr = self.info_wr
        m.d.sync += wr.en.eq(0)
        m.d.comb += [wr.data.eq(info)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [out.ready.eq(0), out.bad.eq(0), k.eq(0), line.eq(0), absent.eq(0)]
                    m.next = "SETTLE"
            with m.State("SETTLE"):   # nl, tail_n and the checks take the job's registers
                m.next = "TAP"
            with m.State("TAP"):
                m.d.sync += [rem.eq(Array(nl)[k]), first.eq(1)]
                m.next = "TAP_LINES"
            with m.State("TAP_LINES"):
                with m.If(rem == 0):   # an absent tap: the next one
                    m.d.sync += [absent.eq(1), k.eq(k + 1)]
                    with m.If(k == K - 1):
                        m.next = "TAIL"
                    with m.Else():
                        m.next = "TAP"
                with m.Elif(absent | (line == T)):  # a tap after an absent one; too many lines
                    m.d.sync += out.bad.eq(1)
                    m.next = "DONE"
                with m.Else():
                    m.d.sync += [wr.en.eq(1), wr.addr.eq(line), info.tap.eq(k), info.first.eq(first),
                                 info.last.eq(rem == 1), info.tail.eq(0), info.tail_line.eq(0),
                                 line.eq(line + 1), rem.eq(rem - 1), first.eq(0)]
                    with m.If(rem == 1):
                        m.d.sync += k.eq(k + 1)
                        with m.If(k == K - 1):
                            m.next = "TAIL"
                        with m.Else():
                            m.next = "TAP"
            with m.State("TAIL"):
                m.d.sync += [out.t_last.eq(line - 1), tail.eq(0)]
                with m.If((line == 0) | ~classes_ok):
                    m.d.sync += out.bad.eq(1)
                    m.next = "DONE"
                with m.Else():
                    m.next = "TAIL_LINES"
            with m.State("TAIL_LINES"):
                m.d.sync += [wr.en.eq(1), wr.addr.eq(line), info.tap.eq(0), info.first.eq(0), info.last.eq(0),
                             info.tail.eq(1), info.tail_line.eq(tail), line.eq(line + 1), tail.eq(tail + 1)]
                with m.If(tail == tail_n - 1):
                    m.d.sync += [out.s_last.eq(line), self.lines_m1.eq(line)]
                    m.next = "GATE1"
            # f_gap = max(0, head - S); batch_gate = max(oaw + 1, oaw + OPT_LATENCY + 3 - T,
            # oaw + opt_b + 1 - S - fwd) (`cycles.Timing`), S = s_last + 1, T = t_last + 1
            with m.State("GATE1"):
                m.d.sync += [fg.eq(tm.head - 1 - out.s_last), g2.eq(oaw + cycles.OPT_LATENCY + 2 - out.t_last),
                             g3.eq(oaw + tm.opt_b_cycles - tm.fwd - out.s_last)]
                m.next = "GATE2"
            with m.State("GATE2"):
                m.d.sync += [out.has_gap.eq(fg > 0), out.f_gap_m1.eq(fg - 1),
                             g23.eq(Mux(g2 > g3, g2, g3))]
                m.next = "GATE3"
            with m.State("GATE3"):
                gate = Mux(g23 > oaw + 1, g23, oaw + 1)
                m.d.sync += [out.gate_m1.eq(gate - 1), out.gate_b.eq(gate - oaw)]
                m.next = "DONE"
            with m.State("DONE"):
                m.d.sync += out.ready.eq(1)
                m.next = "IDLE"
        return m
