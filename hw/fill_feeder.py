"""The FILL transfer's feeder: stream beats in, the PL base's image bytes and labels out, at its pace.

A FILL transfer carries LOAD_COUNT images, each in `image_beats` beats of B = ``beat_bits / 8``
bytes (little-endian, as every stream of the core):

    bytes 0-1                the image's label (16 bits, little-endian)
    bytes 2 .. 2+in_size-1   the image's quantized integers (`IntBase.quantize_input`), NHWC order
    then zeros               up to the image's last whole beat

so ``image_beats = ceil((2 + in_size) / B)`` (`packing.image_beats`), and an image always starts a beat.
The feeder splits each beat into the label (to the fill pipeline's ``label`` stream, from a
register) and one image byte a cycle (to its ``image`` stream). Its input is ready only while it
has room, so the stream input follows the pipeline's pace (TREADY low while the engines are full).

Two beat registers (the one being sent, ``cur``, and the next, ``nxt``; a beat goes straight to
``cur`` when that is free) keep the bytes gapless: with a stream that is always valid, ``image``
never idles between beats or images, so the fill's timing is the pipeline's
(`fill_plan.fill_done_cycles`) offset by a constant (`fill_plan.first_byte_lag`). A beat of only the label
(B = 2: the image's first beat) bypasses the beat registers (it waits only for the label register).
``ready`` is a register's inverse (no path from the pipeline's ``ready`` to TREADY).

It keeps its place in the transfer (the beat of the image) itself and starts each fill at an
image's first beat: the core resets it with the pipeline (soft reset, an aborted fill).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..fixed import formats as F
from ..fixed.packing import LABEL_BYTES, image_beats
from .forward_engine import activation_signature
from .params import HwParams, invalid, require_params

__all__ = ["FillFeeder"]

assert LABEL_BYTES == F.LABEL_BITS // 8


class FillFeeder(wiring.Component):
    """Ports: ``i`` (the transfer's beats), ``image`` (one image integer a beat, NHWC),
    ``label`` (one label an image)."""

    def __init__(self, params: HwParams, in_size: int):
        self.params = require_params(self, params)
        if isinstance(in_size, bool) or not isinstance(in_size, int) or in_size < 1:
            raise invalid(self, ValueError(f"in_size must be a positive int, not {in_size!r}"))
        self.in_size = in_size
        self.beats = image_beats(params.beat_bits // 8, in_size)
        super().__init__({
            "i": In(stream.Signature(params.beat_bits)),
            "image": Out(activation_signature()),
            "label": Out(stream.Signature(F.LABEL_BITS)),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        B, N = p.beat_bits // 8, self.beats
        rem = LABEL_BYTES + self.in_size - (N - 1) * B   # bytes of the last beat before its padding
        label_only = N > 1 and B == LABEL_BYTES            # an image's first beat holds its label alone

        def bytes_after_first(first, last):
            """Image bytes of a beat less one (its first one sent, the rest counted down)."""
            end = rem if last else B
            return max(end - (LABEL_BYTES if first else 0) - 1, 0)

        # -- the incoming beat's place: first / last of its image -----------------------------------
        beat = Signal(range(N))
        b_first = Signal(init=1)
        b_last = Signal(init=int(N == 1))
        # -- registers: the label, the beat being sent (cur), the next (nxt) --------------------------
        lbl = Signal(F.LABEL_BITS, reset_less=True)
        lbl_full = Signal()
        cur = Signal(p.beat_bits, reset_less=True)
        left = Signal(range(B))        # bytes of cur after the one offered
        full = Signal()
        nxt = Signal(p.beat_bits, reset_less=True)
        nxt_first, nxt_last = Signal(reset_less=True), Signal(reset_less=True)
        nxt_full = Signal()

        i, image, label = self.i, self.image, self.label
        if label_only:
            m.d.comb += i.ready.eq(Mux(b_first, ~lbl_full, ~nxt_full))
        else:
            m.d.comb += i.ready.eq(~nxt_full & ~(b_first & lbl_full))
        take = i.valid & i.ready
        carries = take & ~b_first if label_only else take   # the beat holds image bytes
        with m.If(take):
            with m.If(b_last):
                m.d.sync += [beat.eq(0), b_first.eq(1), b_last.eq(N == 1)]
            with m.Else():
                m.d.sync += [beat.eq(beat + 1), b_first.eq(0), b_last.eq(beat == N - 2)]

        m.d.comb += [label.valid.eq(lbl_full), label.p.eq(lbl)]
        with m.If(label.ready):
            m.d.sync += lbl_full.eq(0)
        with m.If(take & b_first):
            m.d.sync += [lbl.eq(i.p[:F.LABEL_BITS]), lbl_full.eq(1)]

        def load_cur(raw, first, last):
            m.d.sync += [cur.eq(Mux(first, raw >> 8 * LABEL_BYTES, raw)), full.eq(1),
                         left.eq(Mux(first, Mux(last, bytes_after_first(True, True), bytes_after_first(True, False)),
                                     Mux(last, bytes_after_first(False, True), bytes_after_first(False, False))))]

        m.d.comb += [image.valid.eq(full), image.p.data.eq(cur[:8])]
        sent = full & image.ready
        with m.If(sent):
            m.d.sync += [cur.eq(cur >> 8), left.eq(left - 1)]
        free = ~full | (sent & (left == 0))   # cur is empty next cycle unless loaded
        with m.If(free):
            with m.If(nxt_full):
                load_cur(nxt, nxt_first, nxt_last)
                with m.If(carries):
                    m.d.sync += [nxt.eq(i.p), nxt_first.eq(b_first), nxt_last.eq(b_last)]
                with m.Else():
                    m.d.sync += nxt_full.eq(0)
            with m.Elif(carries):
                load_cur(i.p, b_first, b_last)
            with m.Else():
                m.d.sync += full.eq(0)
        with m.Elif(carries):
            m.d.sync += [nxt.eq(i.p), nxt_first.eq(b_first), nxt_last.eq(b_last), nxt_full.eq(1)]
        return m
