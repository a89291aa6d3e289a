"""Fixed-point helpers shared by the blocks: the RTL form of `formats.round_shift` and `saturate`."""

from __future__ import annotations

from amaranth.hdl import Mux, Signal, signed

__all__ = ["round_shift", "saturate", "round_shift_var"]


def round_shift(m, value, shift: int, width: int, name: str):
    """``value * 2**-shift`` rounded half up (add half an LSB, arithmetic shift right)."""
    if shift < 0:
        raise ValueError(f"shift must be non-negative, not {shift}")
    out = Signal(signed(width), name=name)
    if shift == 0:
        m.d.comb += out.eq(value)
    else:
        m.d.comb += out.eq((value + (1 << (shift - 1))) >> shift)
    return out


def round_shift_var(m, value, shift, width: int, name: str):
    """Like `round_shift` with a run-time shift amount (``shift`` an unsigned signal, >= 0)."""
    out = Signal(signed(width), name=name)
    half = Signal(signed(width + 1), name=f"{name}_half")
    m.d.comb += half.eq(Mux(shift == 0, 0, (1 << shift) >> 1))
    m.d.comb += out.eq((value + half) >> shift)
    return out


def saturate(m, value, bits: int, name: str):
    """Clamp a signed value to the signed ``bits``-bit range (never wrap)."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    out = Signal(signed(bits), name=name)
    m.d.comb += out.eq(Mux(value > hi, hi, Mux(value < lo, lo, value)))
    return out
