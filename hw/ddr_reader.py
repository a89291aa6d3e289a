"""The DDR reader: fetches cache entries from a buffer in DDR into an on-chip buffer, by AXI4 bursts.

For jobs larger than the on-chip cache (issue 17) the cache entries live in a DDR buffer the host
allocates (`pynq.allocate`, page aligned): entry i at ``base + i * entry_bytes``, where
``entry_bytes`` is the entry's ``sample_lines`` beats rounded up to a power of two (an entry of
at most 4 KB then never crosses a 4 KB boundary, and a larger one is a whole number of 4 KB
pages). A request names an entry and a destination slot; the reader turns it into INCR bursts of
at most 4 KB (256 beats of 16 bytes), keeps up to ``outstanding`` bursts in flight, and writes
every returned beat to ``slot * sample_lines + line`` of the destination buffer through a memory
write port. ``filled`` pulses with the slot when an entry's last beat is written. A beat whose
RRESP is not OKAY, or an RLAST that disagrees with the burst's length, pulses ``error`` (the
beat is still written: the caller decides).

Throughput: one beat a cycle once the subordinate streams, one AR a cycle. Every output (AR
channel, the write port, ``filled``, ``error``) is a register; the address is one adder behind
registers (base + the entry's offset, whose bits are disjoint from the burst's).
"""

from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .axi4 import BOUNDARY_BYTES, BURST_INCR, MAX_BURST_BEATS, RESP_OKAY, AXI4ReadSignature
from .params import bits_for, invalid
from .ports import write_port

__all__ = ["DDRReader", "entry_bytes", "request_layout"]

ARCACHE = 0b0011  # normal non-cacheable bufferable: what Xilinx's DMA engines issue to the HP ports


def entry_bytes(sample_lines: int, beat_bits: int) -> int:
    """Bytes between two entries in the DDR buffer: the entry's beats rounded up to a power of two
    (`packing.Layout.ddr_stride` for a build's layout)."""
    return (1 << (sample_lines - 1).bit_length()) * (beat_bits // 8)


def request_layout(entry_bits: int, slot_bits: int) -> data.StructLayout:
    return data.StructLayout({"entry": entry_bits, "slot": slot_bits})


class DDRReader(wiring.Component):
    """Parameters: ``addr_width`` (the AXI address), ``beat_bits`` (the data bus: one cache line),
    ``sample_lines`` (beats of an entry), ``slots`` (destination slots), ``entry_bits`` (the width
    of an entry index), ``outstanding`` (bursts in flight), ``slot_dest`` (each slot's first line
    in the write port's address space; default ``slot * sample_lines``); ``runtime_lines``: an
    entry's beats less one come from the ``lines_m1`` input (a job's own entry, at most
    ``sample_lines``, which still sets the stride), for entries of one burst."""

    def __init__(self, *, addr_width: int, beat_bits: int, sample_lines: int, slots: int, entry_bits: int = 16,
                 outstanding: int = 4, slot_dest=None, runtime_lines: bool = False):
        for name, v in (("addr_width", addr_width), ("beat_bits", beat_bits), ("sample_lines", sample_lines),
                        ("slots", slots), ("entry_bits", entry_bits), ("outstanding", outstanding)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise invalid(self, TypeError(f"{name} must be a positive integer, not {v!r}"))
        if beat_bits % 8 or beat_bits & (beat_bits - 1):
            raise invalid(self, ValueError(f"beat_bits must be a power of two number of bytes, not {beat_bits}"))
        if addr_width < entry_bits + (entry_bytes(sample_lines, beat_bits) - 1).bit_length():
            raise invalid(self, ValueError(f"{addr_width} address bits cannot reach {2 ** entry_bits} entries"))
        self.addr_width, self.beat_bits, self.sample_lines = addr_width, beat_bits, sample_lines
        self.slots, self.entry_bits, self.outstanding = slots, entry_bits, outstanding
        beat_bytes = beat_bits // 8
        self.burst_lines = min(MAX_BURST_BEATS, BOUNDARY_BYTES // beat_bytes)
        self.bursts = -(-sample_lines // self.burst_lines)  # bursts of an entry (the last one shorter)
        if slot_dest is None:
            slot_dest = [s * sample_lines for s in range(slots)]
        self.slot_dest = tuple(int(d) for d in slot_dest)
        if len(self.slot_dest) != slots or min(self.slot_dest) < 0:
            raise invalid(self, ValueError(f"slot_dest must give {slots} non-negative addresses"))
        self.dest_bits = bits_for(max(self.slot_dest) + sample_lines - 1)
        self.slot_bits = bits_for(slots - 1)
        if runtime_lines and self.bursts != 1:
            raise invalid(self, ValueError(f"run-time entry lines need entries of one burst, not {self.bursts}"))
        self.runtime_lines = bool(runtime_lines)
        members = {"lines_m1": In(8)} if runtime_lines else {}
        super().__init__({
            **members,
            "axi": Out(AXI4ReadSignature(addr_width, beat_bits)),
            "base": In(addr_width),            # the DDR buffer's bus address (4 KB aligned)
            "requests": In(stream.Signature(request_layout(entry_bits, self.slot_bits))),
            "write": In(write_port(self.dest_bits, beat_bits)),
            "filled": Out(stream.Signature(self.slot_bits, always_ready=True)),
            "error": Out(1),                   # a one-cycle pulse: RRESP not OKAY, or RLAST misplaced
            "idle": Out(1),                    # no request held, no burst in flight
        })

    def elaborate(self, platform):
        m = Module()
        S, BL, NB = self.sample_lines, self.burst_lines, self.bursts
        beat_bytes = self.beat_bits // 8
        entry_shift = (entry_bytes(S, self.beat_bits) - 1).bit_length()
        burst_shift = (BL * beat_bytes - 1).bit_length()
        axi = self.axi

        # a burst in flight: where its beats go, its length, whether it ends its entry, the slot
        track = data.StructLayout({"dest": self.dest_bits, "beats_m1": 8, "last": 1, "slot": self.slot_bits})
        m.submodules.track = tq = fifo.SyncFIFOBuffered(width=track.size, depth=self.outstanding)

        # -- the request, then its bursts on AR ------------------------------------------------
        held = Signal()
        entry = Signal(self.entry_bits, reset_less=True)
        slot = Signal(self.slot_bits, reset_less=True)
        dest0 = Signal(self.dest_bits, reset_less=True)  # slot * S, from a table (no multiplier)
        burst = Signal(range(max(NB, 2)))
        m.d.comb += self.requests.ready.eq(~held)
        with m.If(self.requests.valid & ~held):
            req = self.requests.p
            m.d.sync += [held.eq(1), entry.eq(req.entry), slot.eq(req.slot), burst.eq(0),
                         dest0.eq(Array(Const(d, self.dest_bits) for d in self.slot_dest)[req.slot])]

        m.d.comb += [axi.arid.eq(0), axi.arsize.eq((beat_bytes - 1).bit_length()), axi.arburst.eq(BURST_INCR),
                     axi.arcache.eq(ARCACHE), axi.arprot.eq(0)]
        last_burst = burst == NB - 1
        entry_off = Signal(self.addr_width)  # the entry's offset OR the burst's: disjoint bits
        m.d.comb += entry_off.eq((entry << entry_shift) | (burst << burst_shift))
        issue = Signal()
        m.d.comb += issue.eq(held & (~axi.arvalid | axi.arready) & tq.w_rdy)
        with m.If(axi.arvalid & axi.arready):
            m.d.sync += axi.arvalid.eq(0)
        entry_in = Signal(track)
        m.d.comb += [entry_in.dest.eq(dest0 + burst * BL), entry_in.last.eq(last_burst), entry_in.slot.eq(slot),
                     entry_in.beats_m1.eq(self.lines_m1 if self.runtime_lines
                                          else Mux(last_burst, S - (NB - 1) * BL - 1, BL - 1)),
                     tq.w_data.eq(entry_in), tq.w_en.eq(issue)]
        with m.If(issue):
            m.d.sync += [axi.arvalid.eq(1), axi.araddr.eq(self.base + entry_off), axi.arlen.eq(entry_in.beats_m1),
                         burst.eq(burst + 1)]
            with m.If(last_burst):
                m.d.sync += held.eq(0)

        # -- R: the beats of the burst at the queue's head, in order ----------------------------
        head = Signal(track)
        m.d.comb += head.eq(tq.r_data)
        beat = Signal(8)
        m.d.comb += axi.rready.eq(tq.r_rdy)
        take = axi.rvalid & axi.rready
        end = beat == head.beats_m1
        m.d.sync += [self.write.en.eq(take), self.filled.valid.eq(take & end & head.last),
                     self.error.eq(take & ((axi.rresp != RESP_OKAY) | (axi.rlast != end)))]
        m.d.sync += [self.write.addr.eq(head.dest + beat), self.write.data.eq(axi.rdata), self.filled.p.eq(head.slot)]
        m.d.comb += tq.r_en.eq(take & end)
        with m.If(take):
            m.d.sync += beat.eq(Mux(end, 0, beat + 1))
        m.d.comb += self.idle.eq(~held & ~axi.arvalid & ~tq.r_rdy & ~self.write.en)
        return m
