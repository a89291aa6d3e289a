"""AXI4-Stream input: cache entries and initial adapters, checked against the armed command.

The host arms a transfer (LOAD_CACHE with LOAD_COUNT entries, or LOAD_ADAPTERS), then sends the
beats (`skip2lora.fixed.packing` is the format). The beat count is known, so TLAST is checked:

* TLAST before the last expected beat -> TLAST_EARLY; the transfer is dropped (nothing committed)
* no TLAST on the last expected beat  -> TLAST_LATE; the rest is drained up to TLAST
* beats with nothing armed            -> STREAM_UNEXPECTED; drained up to TLAST

TREADY stays high for LOAD_CACHE, LOAD_ADAPTERS and draining, so a DMA never hangs on the
accelerator, except in the one cycle a LOAD_CACHE or FILL command reaches the loader (the core
registers it): a beat offered then waits for it. Cache entries are committed (N_LOADED grows)
only when a whole transfer arrived correctly; ``adapters_loaded`` pulses when a whole adapter
image did (the core then marks the adapters valid). A stream whose TLAST never comes keeps the
loader armed until the expected beats arrived or a soft reset. The core checks a LOAD_CACHE or FILL command (count, room, ...) before it
arms the loader.

FILL (a build with a PL base, ``image_beats`` > 0): LOAD_COUNT images of ``image_beats`` beats
(hw/fill_feeder.py has the format) go to the fill feeder (``beats``), and TREADY is the feeder's
ready: it can be low during a FILL, for as long as the base's engines take to make room (the
pipeline's pace, about `fill_plan.FillPlan.interval` cycles an image). TLAST is checked as above;
an error also pulses ``fill_abort`` (the core resets the feeder and the pipeline: nothing
committed, the lines already written past N_LOADED are free again). After the last beat with
TLAST the loader waits (still armed) until the pipeline has written every entry (``fill_entries``
= LOAD_COUNT), then commits: N_LOADED += LOAD_COUNT and the next free line steps past them.

PREDICT (the same builds): LOAD_COUNT images in FILL's format, with two differences. Their
entries go to PREDICT's ring (the core sets the pipeline's ring mode), so nothing is committed:
after the last entry is written the loader is idle and N_LOADED is unchanged. And an image's first
beat is taken only while a ring slot is free (``credit``: fewer than ``ring_entries`` images taken
whose forward pass has not been issued; ``slot_free`` pulses when one has), so a stalled result
stream stalls the input instead of overwriting an entry not yet read.

Nothing deep lies behind a beat: the transfer's end is a registered flag (per sample line and
per sample for the cache, a down-counter for the adapters), the cache's next free line is kept
(``fill``: advanced by a committed transfer, zeroed by CLEAR_CACHE), and B's beats reach the
head unit one cycle later from registers, with their own small beat counter.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .params import HwParams, invalid, require_params
from .ports import write_port
from .regmap import ErrorCode

__all__ = ["StreamLoader", "axis_signature"]


def axis_signature(width: int) -> stream.Signature:
    return stream.Signature(data.StructLayout({"data": width, "last": 1}))


class StreamLoader(wiring.Component):
    """``image_beats``: a FILL image's beats (0: the build has no PL base, no FILL)."""

    def __init__(self, params: HwParams, image_beats: int = 0, ring_entries: int = 0):
        self.params = require_params(self, params)
        p = params
        for name, v in (("image_beats", image_beats), ("ring_entries", ring_entries)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise invalid(self, ValueError(f"{name} must be a non-negative int, not {v!r}"))
        self.image_beats, self.ring_entries = image_beats, ring_entries
        abits = p.line_bits
        self.segments = p.segments
        super().__init__({
            "s_axis": In(axis_signature(p.beat_bits)),
            "load_cache": In(1),      # command pulses (checked by the core: only when idle and valid)
            "load_adapters": In(1),
            "clear_cache": In(1),     # CLEAR_CACHE (accepted by the core): the cache's next line is 0
            "fill": In(1),            # FILL (accepted by the core)
            "predict": In(1),         # PREDICT (accepted by the core; a build with a PL base)
            "slot_free": In(1),       # PREDICT: an image's forward pass was issued (its ring slot is free)
            "count": In(16),          # LOAD_COUNT
            "count_one": In(1),       # LOAD_COUNT == 1 (registered by the core)
            "armed": Out(1),          # a transfer is expected or being drained
            "error": Out(1),          # one-cycle pulse with error_code
            "error_code": Out(8),
            "commit": Out(1),         # one-cycle pulse: N_LOADED += count
            "adapters_loaded": Out(1),  # one-cycle pulse: a whole adapter image arrived
            # FILL: the beats to the feeder; the pipeline's entries written; the cache's next free
            # line (the fill's first line); a fill runs; a fill failed (reset the pipeline)
            "beats": Out(stream.Signature(p.beat_bits)),
            "fill_entries": In(16),
            "next_line": Out(p.cache_addr_bits),
            "filling": Out(1),        # a FILL or PREDICT streams images or waits for their entries
            "predicting": Out(1),     # the same, a PREDICT
            "slot_wait": Out(1),      # PREDICT: an image's first beat is offered and waits for a ring slot
            "fill_abort": Out(1),
            # the writes: the cache, the A memory (a beat is one segment of a line), B by beat
            "cache_wr": In(write_port(p.cache_addr_bits, p.beat_bits)),
            "a_wr": In(write_port(abits, p.a_line_bits, p.beat_bits)),
            "b_wr": In(write_port(16, p.beat_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        S = p.sample_lines
        addr = Signal(p.cache_addr_bits)
        fill = Signal(p.cache_addr_bits)     # the cache's next free line: N_LOADED * sample_lines
        line_in = Signal(range(S))           # the beat's line within its sample
        line_last = Signal()                 # line_in == S - 1
        samples_left = Signal(16)            # samples still to come, this one included
        sample_last = Signal()               # samples_left == 1
        seg = Signal(range(max(self.segments, 2)))
        line = Signal(p.line_bits)
        a_beats, b_beats = p.layout.a_beats, p.layout.b_beats
        total = a_beats + b_beats
        left = Signal(range(total))          # adapter beats after this one
        adapters_last = Signal()             # left == 0
        in_b = Signal()                      # the adapter beats have reached B
        b_beat = Signal(range(max(b_beats, 2)))
        axis = self.s_axis
        m.d.comb += [axis.ready.eq(1), self.cache_wr.data.eq(axis.p.data), self.cache_wr.addr.eq(addr),
                     self.a_wr.addr.eq(line)]
        m.d.comb += self.a_wr.data.eq(axis.p.data.replicate(self.segments))
        m.d.sync += [self.error.eq(0), self.commit.eq(0), self.adapters_loaded.eq(0), self.b_wr.en.eq(0),
                     self.fill_abort.eq(0)]
        m.d.comb += [self.next_line.eq(fill), self.beats.p.eq(axis.p.data)]
        IB = max(self.image_beats, 1)
        beat_in = Signal(range(IB))          # FILL: the beat's place in its image
        beat_last = Signal()                 # beat_in == image_beats - 1
        fill_count = Signal(16)              # FILL: LOAD_COUNT
        pmode = Signal()                     # the armed FILL is a PREDICT
        first = Signal()                     # FILL: the next beat is an image's first
        W = self.ring_entries
        inflight = Signal(range(W + 1))      # PREDICT: images taken whose pass is not issued
        credit = Signal(init=1)              # PREDICT: inflight < W, a register (a ring slot is free)
        b_data = Signal(p.beat_bits, reset_less=True)
        b_index = Signal(16, reset_less=True)
        m.d.comb += [self.b_wr.data.eq(b_data), self.b_wr.addr.eq(b_index)]
        with m.If(self.clear_cache):
            m.d.sync += fill.eq(0)

        def fail(code):
            m.d.sync += [self.error.eq(1), self.error_code.eq(code)]

        def check_end(last_beat, abort=False):
            """TLAST must come exactly with the last expected beat."""
            with m.If(axis.p.last & ~last_beat):
                fail(ErrorCode.TLAST_EARLY)
                m.d.sync += self.fill_abort.eq(abort)
                m.next = "IDLE"
            with m.Elif(last_beat & ~axis.p.last):
                fail(ErrorCode.TLAST_LATE)
                m.d.sync += self.fill_abort.eq(abort)
                m.next = "DRAIN"

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.load_cache):  # a beat already offered waits for CACHE (not drained)
                    m.d.comb += axis.ready.eq(0)
                    m.d.sync += [addr.eq(fill), line_in.eq(0), line_last.eq(S == 1),
                                 samples_left.eq(self.count), sample_last.eq(self.count_one)]
                    m.next = "CACHE"
                if self.image_beats:
                    with m.Elif(self.fill | self.predict):  # a beat already offered waits for it (not drained)
                        m.d.comb += axis.ready.eq(0)
                        m.d.sync += [addr.eq(fill), beat_in.eq(0), beat_last.eq(self.image_beats == 1),
                                     samples_left.eq(self.count), sample_last.eq(self.count_one),
                                     fill_count.eq(self.count), pmode.eq(self.predict), first.eq(1)]
                        m.next = "FILL"
                with m.Elif(self.load_adapters):
                    m.d.sync += [left.eq(total - 1), adapters_last.eq(total == 1), in_b.eq(a_beats == 0),
                                 b_beat.eq(0), seg.eq(0), line.eq(0)]
                    m.next = "ADAPTERS"
                with m.Elif(axis.valid):
                    fail(ErrorCode.STREAM_UNEXPECTED)
                    with m.If(~axis.p.last):
                        m.next = "DRAIN"
            with m.State("CACHE"):
                with m.If(axis.valid):
                    last_beat = line_last & sample_last
                    m.d.comb += self.cache_wr.en.eq(1)
                    m.d.sync += addr.eq(addr + 1)
                    with m.If(line_last):
                        m.d.sync += [line_in.eq(0), line_last.eq(S == 1), samples_left.eq(samples_left - 1),
                                     sample_last.eq(samples_left == 2)]
                    with m.Else():
                        m.d.sync += [line_in.eq(line_in + 1), line_last.eq(line_in == S - 2)]
                    with m.If(last_beat & axis.p.last):
                        m.d.sync += [self.commit.eq(1), fill.eq(addr + 1)]
                        m.next = "IDLE"
                    check_end(last_beat)
            with m.State("ADAPTERS"):
                with m.If(axis.valid):
                    m.d.sync += [left.eq(left - 1), adapters_last.eq(left == 1)]
                    with m.If(~in_b):  # A: 4R beats per line, one write segment each
                        m.d.comb += self.a_wr.en.eq(1 << seg)
                        m.d.sync += seg.eq(seg + 1)
                        with m.If(seg == self.segments - 1):
                            m.d.sync += [seg.eq(0), line.eq(line + 1)]
                            with m.If(line == p.layout.a_beats // self.segments - 1):
                                m.d.sync += in_b.eq(1)
                    with m.Else():  # B: to the head unit from registers, one cycle later
                        m.d.sync += [self.b_wr.en.eq(1), b_beat.eq(b_beat + 1)]
                    m.d.sync += [b_data.eq(axis.p.data), b_index.eq(b_beat)]
                    with m.If(adapters_last & axis.p.last):
                        m.d.sync += self.adapters_loaded.eq(1)
                        m.next = "IDLE"
                    check_end(adapters_last)
            if self.image_beats:
                with m.State("FILL"):  # the beats to the feeder, at its pace; addr: the next image's line
                    # PREDICT: an image's first beat waits for a ring slot
                    go = Signal()
                    m.d.comb += [go.eq(~pmode | ~first | credit), self.slot_wait.eq(axis.valid & ~go)]
                    m.d.comb += [self.beats.valid.eq(axis.valid & go), axis.ready.eq(self.beats.ready & go)]
                    with m.If(axis.valid & self.beats.ready & go):
                        last_beat = beat_last & sample_last
                        m.d.sync += first.eq(beat_last)
                        with m.If(beat_last):
                            m.d.sync += [beat_in.eq(0), beat_last.eq(self.image_beats == 1), addr.eq(addr + S),
                                         samples_left.eq(samples_left - 1), sample_last.eq(samples_left == 2)]
                        with m.Else():
                            m.d.sync += [beat_in.eq(beat_in + 1), beat_last.eq(beat_in == self.image_beats - 2)]
                        with m.If(last_beat & axis.p.last):
                            m.next = "FILL_WAIT"
                        check_end(last_beat, abort=True)
                with m.State("FILL_WAIT"):  # every beat in: until the pipeline wrote every entry
                    with m.If(self.fill_entries == fill_count):
                        with m.If(~pmode):  # PREDICT's entries are in the ring: nothing to commit
                            m.d.sync += [self.commit.eq(1), fill.eq(addr)]
                        m.next = "IDLE"
            with m.State("DRAIN"):
                with m.If(axis.valid & axis.p.last):
                    m.next = "IDLE"
        m.d.comb += self.armed.eq(~fsm.ongoing("IDLE"))
        if self.image_beats:
            m.d.comb += self.filling.eq(fsm.ongoing("FILL") | fsm.ongoing("FILL_WAIT"))
            m.d.comb += self.predicting.eq(self.filling & pmode)
            if W:  # a slot taken with an image's first beat, freed with its pass
                taken = fsm.ongoing("FILL") & pmode & first & axis.valid & self.beats.ready & go
                free = self.slot_free
                with m.If(fsm.ongoing("IDLE")):
                    m.d.sync += [inflight.eq(0), credit.eq(1)]
                with m.Else():  # inflight moves by one at most, so it reaches W only from W - 1 or W
                    m.d.sync += [inflight.eq(inflight + taken - free),
                                 credit.eq(~(((inflight == W - 1) & taken & ~free) | ((inflight == W) & ~free)))]
        return m
