"""Pipeline helpers: a register after every reduction level, delay lines, level counts.

Every helper returns its result together with the number of register stages it added, so the
blocks can state their latencies (`skip2lora.fixed.cycles.Timing` counts them) without restating
the structure. Datapath registers carry no reset (``reset_less``): only state and valid bits reset.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed

__all__ = ["tree_levels", "tree_sum", "tree_argmax", "delay"]


def tree_levels(n: int) -> int:
    """Register stages of a balanced binary reduction of ``n`` terms."""
    return max(n - 1, 0).bit_length()


def tree_sum(m: Module, terms, width: int, name: str):
    """Balanced sum of ``terms``, one adder level per stage; returns (sum, stages)."""
    level, depth = list(terms), 0
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level), 2):
            s = Signal(signed(width), name=f"{name}_l{depth}_{i // 2}", reset_less=True)
            m.d.sync += s.eq(level[i] + level[i + 1] if i + 1 < len(level) else level[i])
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
