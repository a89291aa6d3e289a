"""Pipeline helpers: a register after every reduction level, delay lines, level counts.

Every helper returns its result together with the number of register stages it added, so the
blocks can state their latencies (`skip2lora.fixed.cycles.Timing` counts them) without restating
the structure. Datapath registers carry no reset (``reset_less``): only state and valid bits reset.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed

__all__ = ["tree_levels", "tree_sum", "tree_argmax", "delay", "leading_one"]


def tree_levels(n: int) -> int:
    """Register stages of a balanced binary reduction of ``n`` terms."""
    return max(n - 1, 0).bit_length()


def tree_sum(m: Module, terms, width: int, name: str):
    """Balanced sum of ``terms``, one adder level per stage; returns (sum, stages)."""
    level, depth = list(terms), 0
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level), 2):
            pair = i + 1 < len(level)
            # An odd term passes as a plain delay; it carries a reset (the one datapath register
            # that does) only so that yosys keeps it out of a shift register (SRL16E): the SRL took
            # the DSP's output register along with it (yosys honours neither keep nor shreg_extract here).
            s = Signal(signed(width), name=f"{name}_l{depth}_{i // 2}", reset_less=pair)
            m.d.sync += s.eq(level[i] + level[i + 1] if pair else level[i])
            nxt.append(s)
        level, depth = nxt, depth + 1
    return level[0], depth


def tree_argmax(m: Module, values, index_bits: int, name: str):
    """The first maximum of ``values`` and its index, one compare level per stage; returns
    (value, index, stages). Ties go to the lower index, as ``numpy.argmax`` does."""
    level = [(v, i) for i, v in enumerate(values)]
    depth = 0
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level), 2):
            va, ia = level[i]
            v = Signal.like(va, name=f"{name}_v{depth}_{i // 2}", reset_less=True)
            ix = Signal(index_bits, name=f"{name}_i{depth}_{i // 2}", reset_less=True)
            if i + 1 < len(level):
                vb, ib = level[i + 1]
                right = vb > va
                m.d.sync += [v.eq(Mux(right, vb, va)), ix.eq(Mux(right, ib, ia))]
            else:
                m.d.sync += [v.eq(va), ix.eq(ia)]
            nxt.append((v, ix))
        level, depth = nxt, depth + 1
    v, i = level[0]
    if depth == 0:
        ix = Signal(index_bits, name=f"{name}_i", reset_less=True)
        return v, ix, 0  # a single value: index 0 (the signal's reset value, never driven)
    return v, i, depth


def delay(m: Module, signal, stages: int, name: str | None = None, *, reset_less: bool = True):
    """``signal`` delayed by ``stages`` registers."""
    out = signal
    for i in range(stages):
        d = Signal.like(signal, name=f"{name or signal.name}_d{i + 1}", reset_less=reset_less)
        m.d.sync += d.eq(out)
        out = d
    return out


def leading_one(m: Module, value, name: str):
    """The position of the highest set bit of ``value`` (0 if none), combinational: a balanced tree
    of (any, position) pairs, one 2:1 selection a level, ceil(log2(width)) LUT levels."""
    width = len(value)
    level = [(value[i], None) for i in range(width)]  # (any bit set, position inside the group)
    bits, depth = 0, 0
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level), 2):
            if i + 1 == len(level):  # an odd group out: its position widens with a zero on top
                lo_any, lo_pos = level[i]
                pos = Signal(bits + 1, name=f"{name}_p{depth}_{i // 2}")
                m.d.comb += pos.eq(lo_pos if lo_pos is not None else 0)
                nxt.append((lo_any, pos))
                continue
            (lo_any, lo_pos), (hi_any, hi_pos) = level[i], level[i + 1]
            any_ = Signal(name=f"{name}_a{depth}_{i // 2}")
            pos = Signal(bits + 1, name=f"{name}_p{depth}_{i // 2}")
            m.d.comb += any_.eq(lo_any | hi_any)
            if lo_pos is None:
                m.d.comb += pos.eq(hi_any)
            else:
                m.d.comb += pos.eq(Mux(hi_any, (1 << bits) | hi_pos, lo_pos))
            nxt.append((any_, pos))
        level, bits, depth = nxt, bits + 1, depth + 1
    _, pos = level[0]
    out = Signal(range(width), name=name)
    m.d.comb += out.eq(pos if pos is not None else 0)
    return out
