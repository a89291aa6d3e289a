"""The sequencer: runs a whole job - epochs of mini-batches - with no host involvement.

Per job: INIT (the scalar unit derives the job's constants; the head unit restarts its gradient
sums; the optimizer clears its state), then per epoch: ORDER (with SHUFFLE: the order unit writes the epoch's sample order), then
per mini-batch of nb samples:

    PREFETCH  the batch's cache addresses into the batch buffer (nb reads + the read latency)
    BATCH     the scalar unit moves to the batch's step size (waiting for it if the last batch was
              shorter than its computation); the head takes the batch's rn(nb)
    F         the forward pass of each sample pair (slots 2i, 2i+1), one line per cycle, pair after
              pair; a pair starts early enough for the head units to be free when its u arrives
    WAIT_T    until the head units have written the last pair's t
    B         the backward pass, line-major: for each line of A, every pair of the batch (one op
              per cycle); the line then goes to the optimizer (at least `a_chunks` cycles a line)
    OPT       the optimizer finishes the A lines, then updates B tap by tap; its writes land

Within an epoch OPT runs in the background: the next batch's PREFETCH follows the last backward
op at once, a countdown (``gate``) pulses the optimizer's ``b_start`` when OPT_A would have, and
the next BATCH waits for the countdown's end (`cycles.Timing.batch_gate`: the scalar unit steps
after ``b_start``, where the optimizer takes B's step size; the next forward pass reads A and the
head units take B only after the optimizer's writes). An epoch's last batch runs OPT in the
foreground, so its statistics and the job's adapters are complete; then EPOCH_END writes the
epoch's statistics (correct, loss, saturated updates). An odd batch's
last pair has no second sample: its ops carry ``odd = 0`` (the datapath uses t = 0 for it, the
second head unit is not started). `skip2lora.fixed.cycles` is the closed form of this schedule:
the cycle counter (busy cycles) must equal it.

PREDICT (``predict``, docs/pl-predict.md) is a forward-only mode: no scalar unit, order,
optimizer or clears, so A, B and the optimizer's state are untouched. Per image: P_WAIT until
the geometry walk is over (the first), the fill pipeline has written its entry in the ring
(``entries`` > the passes issued) and the result path has room (``room``); P_F issues the entry's
lines as a pair with ``odd = 0`` from its ring slot (slot n mod `RING_ENTRIES` past the cache's
entries), the first pass with ``epoch_first`` (head 0's ``correct`` restarts: the PREDICT's
images whose class is their label); ``slot_free`` pulses with its last line; F_GAP then spaces
the passes (max(F_GAP, 2) cycles, then P_WAIT's). The mode ends after ``p_count`` passes, or at
the next P_WAIT after an ``abort``.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from ..fixed import formats as F
from .datapath import Op, issue_signature
from .fetcher import control_signature as fetch_control
from .geometry_unit import schedule_signature as geometry_signature
from .memories import READ_LATENCY, STATS_BITS
from .head import control_signature as head_control
from .job import JOB_LAYOUT
from .optimizer import control_signature as opt_control
from .order_unit import control_signature as order_control
from .params import RING_ENTRIES, HwParams, bits_for, require_params
from .ports import read_port, write_port
from .scalar_unit import control_signature as scalar_control

__all__ = ["Sequencer"]


class Sequencer(wiring.Component):
    def __init__(self, params: HwParams):
        self.params = require_params(self, params)
        p = params
        members = {
            "start": In(1),          # configuration already checked and registered
            "job": In(JOB_LAYOUT),   # samples, batch, epochs, shuffle
            "busy": Out(1),
            "done": Out(1),          # one-cycle pulse at the end of a job
            "epoch": Out(16),        # epochs finished in this job
            "issue": Out(issue_signature(p)),
            "scalar": Out(scalar_control()),  # the scalar unit
            # the order unit and its buffer
            "order": Out(order_control()),
            "order_rd": In(read_port(bits_for(p.order_depth - 1), p.order_bits)),
            "head": Out(head_control()),    # the head units
            "opt": Out(opt_control()),      # the optimizer
            # the statistics memory
            "stats_wr": In(write_port(bits_for(F.STAT_EPOCHS - 1), STATS_BITS)),
            # the job's geometry (`geometry_unit.GeometryUnit`): walked during INIT; a bad one ends
            # the job there (``bad_geometry``: a one-cycle pulse, no DONE)
            "geo": In(geometry_signature(p)),
            "bad_geometry": Out(1),
            # PREDICT: the command (its geometry registered and walked with ``geo``), its images,
            # the entries the fill pipeline has written, room for a result; a pass issued (its
            # ring slot is free); the mode runs
            "predict": In(1),
            "p_count": In(16),
            "entries": In(16),
            "room": In(1),
            "abort": In(1),
            "slot_free": Out(1),
            "predicting": Out(1),
        }
        if p.ddr:
            members["fetch"] = Out(fetch_control(p))  # the batch fetcher (DDR mode)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        p = self.params
        tm = p.timing
        S = p.sample_lines  # an entry's stride in the cache and the batch buffer (the build's)
        geo = self.geo      # the job's lines: s_last, t_last; its gaps

        # the batch's cache addresses, slot -> base (written by PREFETCH, read by F and B a pair at a
        # time: two read ports). LUTRAM: read combinationally into the issue register (as block RAM,
        # that register became the RAM's own and the datapath's address adder sat right behind the RAM)
        m.submodules.bases = bases = memory.Memory(shape=p.cache_addr_bits, depth=F.BATCH_MAX, init=[],
                                                   attrs={"ram_style": "distributed"})
        bases_rd = [bases.read_port(domain="comb") for _ in range(p.pair)]
        bases_wr = bases.write_port()

        epoch = self.epoch
        s0 = Signal(16)                      # the batch's first position in the epoch's order
        nb = Signal(bits_for(F.BATCH_MAX))   # samples in the batch
        j = Signal(bits_for(F.BATCH_MAX))     # PREFETCH: the slot; F and B: the pair
        line = Signal(p.line_addr_bits)
        count = Signal(range(max(tm.head, tm.wait_t, tm.opt_a_wait, tm.opt_b_cycles, tm.a_chunks,
                                 F.BATCH_MAX + READ_LATENCY) + 2))
        seq_base = Signal(p.cache_addr_bits)  # without SHUFFLE: the next sample's cache address
        # PREFETCH's writes trail its reads by the order buffer's read latency
        pf_valid = Signal(READ_LATENCY)
        pf_slot = [Signal(bits_for(F.BATCH_MAX), name=f"pf_slot{i}") for i in range(READ_LATENCY)]
        pf_seq = [Signal(p.cache_addr_bits, name=f"pf_seq{i}") for i in range(READ_LATENCY)]
        # DDR mode: the batch alternates between the batch buffer's halves; slot k of the batch is
        # in bank k % 2 at line (half * ddr_batch / 2 + k // 2) * S (both banks read at one address)
        ddr = Signal(reset_less=True)
        half = Signal()
        ddr_base = Signal(p.cache_addr_bits)
        pf_ddr = [Signal(p.cache_addr_bits, name=f"pf_ddr{i}") for i in range(READ_LATENCY)]
        m.d.sync += ddr.eq(self.job.ddr if p.ddr else 0)
        fetch = self.fetch if p.ddr else None
        if p.ddr:
            assert p.bbuf_addr_bits <= p.cache_addr_bits
            m.d.sync += fetch.start.eq(0)
        fetch_ready = fetch.ready if p.ddr else 1

        def fetch_batch(s0_value, nb_value, half_value):
            if p.ddr:
                m.d.sync += [fetch.start.eq(ddr), fetch.s0.eq(s0_value), fetch.nb.eq(nb_value), fetch.half.eq(half_value)]

        iss = self.issue
        m.d.sync += iss.valid.eq(0)
        m.d.comb += [bases_rd[i].addr.eq(Cat(Const(i, 1), j)) for i in range(p.pair)]
        m.d.comb += self.order_rd.addr.eq(s0 + j)
        m.d.sync += [self.done.eq(0), self.stats_wr.en.eq(0), self.bad_geometry.eq(0)]

        def issue(op, last, first=0, ef=0):
            m.d.sync += [iss.valid.eq(1), iss.p.op.eq(op), iss.p.line.eq(line), iss.p.pair.eq(j),
                         iss.p.odd.eq(~(nb[0] & (j == np_m1))), iss.p.last.eq(last), iss.p.first.eq(first),
                         iss.p.epoch_first.eq(ef)]
            m.d.sync += [iss.p.base[i].eq(bases_rd[i].data) for i in range(p.pair)]

        # the prefetch pipeline (runs in PREFETCH)
        reading = Signal()
        m.d.sync += [pf_valid.eq(Cat(reading, pf_valid[:-1]))]
        m.d.sync += [pf_slot[0].eq(j), pf_seq[0].eq(seq_base)]
        m.d.sync += [pf_slot[i].eq(pf_slot[i - 1]) for i in range(1, READ_LATENCY)]
        m.d.sync += [pf_seq[i].eq(pf_seq[i - 1]) for i in range(1, READ_LATENCY)]
        m.d.sync += [pf_ddr[0].eq(ddr_base)] + [pf_ddr[i].eq(pf_ddr[i - 1]) for i in range(1, READ_LATENCY)]
        # PREDICT writes its pass's ring slot base into slot 0 (P_WAIT), so P_F issues from the same
        # read port as F (no select between the LUTRAM and the issue register)
        p_write = Signal()
        p_base = Signal(p.cache_addr_bits)
        m.d.comb += [bases_wr.addr.eq(Mux(p_write, 0, pf_slot[-1])), bases_wr.en.eq(pf_valid[-1] | p_write),
                     bases_wr.data.eq(Mux(p_write, p_base, Mux(ddr, pf_ddr[-1],
                                                               Mux(self.job.shuffle, self.order_rd.data, pf_seq[-1]))))]

        # Values derived from the job's registers and from s0, nb, epoch, registered a cycle or
        # three after their sources change (each is read only long after: no logic deeper than a
        # compare lies behind a state's decisions).
        nb_first = Signal.like(nb, reset_less=True)  # the epoch's first batch: min(N, B)
        s0_next = Signal.like(s0, reset_less=True)  # s0 + nb
        rest = Signal.like(s0, reset_less=True)     # N - (s0 + nb): the samples after this batch
        nb_next = Signal.like(nb, reset_less=True)  # the next batch's size: min(rest, B)
        epoch_end = Signal(reset_less=True)         # s0 + nb == N: this is the epoch's last batch
        job_end = Signal(reset_less=True)           # epoch + 1 == E
        s0_zero = Signal(reset_less=True)
        n_pairs = Signal.like(nb, reset_less=True)  # ceil(nb / 2): the batch's pairs
        np_m1 = Signal.like(nb, reset_less=True)    # pairs - 1 (F and B: the batch's last pair)
        nb_full = Signal(reset_less=True)           # nb == B
        pf_end = Signal.like(count, reset_less=True)  # nb + READ_LATENCY - 1 (PREFETCH's last cycle)
        f_short = Signal(reset_less=True)           # pairs < wait_t: WAIT_T follows F
        f_wait = Signal.like(count, reset_less=True)  # wait_t - 1 - pairs
        b_short = Signal(reset_less=True)           # pairs < a_chunks: B_GAP follows each line
        b_wait = Signal.like(count, reset_less=True)  # a_chunks - pairs - 1
        m.d.sync += [
            nb_first.eq(Mux(self.job.samples < self.job.batch, self.job.samples, self.job.batch)),
            s0_next.eq(s0 + nb), rest.eq(self.job.samples - s0_next),
            nb_next.eq(Mux(rest < self.job.batch, rest, self.job.batch)), epoch_end.eq(s0_next == self.job.samples),
            job_end.eq(epoch + 1 == self.job.epochs), s0_zero.eq(s0 == 0),
            n_pairs.eq((nb + 1) >> 1), np_m1.eq(n_pairs - 1), nb_full.eq(nb == self.job.batch),
            pf_end.eq(nb + (READ_LATENCY - 1)),
            f_short.eq(n_pairs < tm.wait_t), f_wait.eq(tm.wait_t - 1 - n_pairs),
            b_short.eq(n_pairs < p.a_chunks), b_wait.eq(p.a_chunks - 1 - n_pairs),
        ]

        def next_batch(size, half_value):
            m.d.sync += [j.eq(0), count.eq(0), nb.eq(size), half.eq(half_value),
                         ddr_base.eq(Mux(half_value, p.ddr_batch // 2 * S, 0))]
            m.next = "PREFETCH"

        # The optimizer's tail of the last batch, in the background: a countdown from the last
        # backward op; b_start when OPT_A would have pulsed it, the next BATCH at its end.
        gate = Signal.like(geo.gate_m1)
        with m.If(gate != 0):
            m.d.sync += gate.eq(gate - 1)
        m.d.comb += self.opt.b_start.eq(gate == geo.gate_b)

        # PREDICT: passes issued, the next entry's ring slot and its first line
        issued = Signal(16)
        p_slot = Signal(range(RING_ENTRIES))
        p_first = Signal()
        p_gap = Signal.like(count, reset_less=True)  # F_GAP's count after a pass: at least 1 (from the walk)
        p_done = Signal(reset_less=True)   # issued == p_count (registered: no 16-bit compare in P_WAIT)
        p_ready = Signal(reset_less=True)  # entries != issued (an entry written and not yet passed)
        aborted = Signal()
        m.d.sync += [p_done.eq(issued == self.p_count), p_ready.eq(self.entries != issued), self.slot_free.eq(0),
                     p_gap.eq(Mux(geo.has_gap & (geo.f_gap_m1 > 1), geo.f_gap_m1, 1))]
        with m.If(self.abort):
            m.d.sync += aborted.eq(1)
        ring_base = p.cache_lines  # the ring's first line: past the cache's entries

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.comb += [self.scalar.start.eq(1), self.order.job_start.eq(1), self.head.clear_grads.eq(1),
                                 self.opt.clear_state.eq(1), self.opt.clear_saturated.eq(1)]
                    m.d.sync += [epoch.eq(0), self.busy.eq(1)]
                    m.next = "INIT"
                with m.Elif(self.predict):
                    m.d.sync += [self.busy.eq(1), self.predicting.eq(1), issued.eq(0), p_slot.eq(0),
                                 p_base.eq(ring_base), p_first.eq(1), aborted.eq(0), j.eq(0)]
                    m.next = "P_WAIT"
            # (two states of their own, F_GAP shared: the FSM keeps 16 states, a 4-bit decode)
            with m.State("P_WAIT"):  # p_done, p_ready: registered a cycle after ``issued`` moved
                with m.If(aborted | p_done):
                    m.d.sync += [self.busy.eq(0), self.predicting.eq(0)]
                    m.next = "IDLE"
                with m.Elif(p_ready & self.room & geo.ready):  # (first: the geometry walk is over)
                    m.d.comb += p_write.eq(1)  # the ring slot's base into slot 0 (j = 0)
                    m.d.sync += line.eq(0)
                    m.next = "P_F"
            with m.State("P_F"):  # the entry's lines from its ring slot, head 0 only
                m.d.sync += [iss.valid.eq(1), iss.p.op.eq(Op.FWD), iss.p.line.eq(line), iss.p.pair.eq(0),
                             iss.p.odd.eq(0), iss.p.last.eq(line == geo.s_last), iss.p.first.eq(0),
                             iss.p.epoch_first.eq(p_first)]
                m.d.sync += [iss.p.base[i].eq(bases_rd[i].data) for i in range(p.pair)]
                m.d.sync += line.eq(line + 1)
                with m.If(line == geo.s_last):
                    m.d.sync += [line.eq(0), issued.eq(issued + 1), self.slot_free.eq(1), p_first.eq(0),
                                 p_slot.eq(Mux(p_slot == RING_ENTRIES - 1, 0, p_slot + 1)),
                                 p_base.eq(Mux(p_slot == RING_ENTRIES - 1, ring_base, p_base + S))]
                    # P_WAIT's flags see ``issued`` two cycles on: wait at least that long
                    m.d.sync += count.eq(p_gap)
                    m.next = "F_GAP"
            with m.State("INIT"):  # the scalar unit's job constants; the optimizer's state cleared
                # the geometry unit's walk ends before the scalar unit's constants (GeometryUnit
                # checks walk_cycles < INIT_LATENCY): its ``bad`` is valid here without a wait
                with m.If(self.scalar.ready & self.opt.state_ready):
                    with m.If(geo.bad):  # a geometry the build does not run: no epoch
                        m.d.sync += [self.bad_geometry.eq(1), self.busy.eq(0)]
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "EPOCH"
            with m.State("EPOCH"):
                m.d.sync += [s0.eq(0), seq_base.eq(0)]
                with m.If(self.job.shuffle):
                    m.d.comb += self.order.epoch_start.eq(1)
                    m.next = "ORDER"
                with m.Else():
                    fetch_batch(0, nb_first, 0)
                    next_batch(nb_first, 0)
            with m.State("ORDER"):
                with m.If(self.order.done):
                    fetch_batch(0, nb_first, 0)
                    next_batch(nb_first, 0)
            with m.State("PREFETCH"):  # nb reads, then READ_LATENCY cycles for the last write
                m.d.sync += count.eq(count + 1)
                with m.If(count < nb):
                    m.d.comb += reading.eq(1)
                    m.d.sync += [j.eq(j + 1), seq_base.eq(seq_base + S)]
                    with m.If(j[0]):
                        m.d.sync += ddr_base.eq(ddr_base + S)
                with m.If((count == pf_end) & (count != 0)):  # pf_end is nb's from the second cycle on
                    m.next = "BATCH"
            with m.State("BATCH"):  # waits for the scalar unit's alpha and the optimizer's tail
                with m.If(self.scalar.next_ready & (gate == 0) & fetch_ready):
                    m.d.comb += self.scalar.step.eq(1)
                    with m.If(~epoch_end):  # DDR mode: the next batch into the other half meanwhile
                        fetch_batch(s0_next, nb_next, ~half)
                    m.d.sync += [self.head.rn.eq(Mux(nb_full, self.scalar.rn_full, self.scalar.rn_last)), j.eq(0), line.eq(0)]
                    m.next = "F"
            with m.State("F"):
                issue(Op.FWD, line == geo.s_last, ef=s0_zero & (j == 0))
                m.d.sync += line.eq(line + 1)
                with m.If(line == geo.s_last):
                    m.d.sync += line.eq(0)
                    with m.If(j == np_m1):
                        with m.If(f_short):  # WAIT_T lasts wait_t - pairs cycles
                            m.d.sync += count.eq(f_wait)
                            m.next = "WAIT_T"
                        with m.Else():
                            m.d.sync += [j.eq(0), line.eq(0)]
                            m.next = "B"
                    with m.Else():
                        m.d.sync += j.eq(j + 1)
                        with m.If(geo.has_gap):
                            m.d.sync += count.eq(geo.f_gap_m1)
                            m.next = "F_GAP"
            with m.State("F_GAP"):  # the head units must be free when the next pair's u arrives
                m.d.sync += count.eq(count - 1)
                with m.If(count == 0):
                    with m.If(self.predicting):
                        m.next = "P_WAIT"
                    with m.Else():
                        m.next = "F"
            with m.State("WAIT_T"):  # until the last pair's t is in the t buffers
                m.d.sync += count.eq(count - 1)
                with m.If(count == 0):
                    m.d.sync += [j.eq(0), line.eq(0)]
                    m.next = "B"
            with m.State("B"):
                issue(Op.BWD, j == np_m1, first=j == 0)
                m.d.sync += j.eq(j + 1)
                with m.If(j == np_m1):
                    m.d.sync += [j.eq(0), line.eq(line + 1)]
                    with m.If((line == geo.t_last) & epoch_end):
                        m.d.sync += count.eq(tm.opt_a_wait - 1)
                        m.next = "OPT_A"
                    with m.Elif(line == geo.t_last):  # the next batch now, the optimizer's tail behind it
                        m.d.sync += [gate.eq(geo.gate_m1), s0.eq(s0_next)]
                        next_batch(nb_next, ~half)
                    with m.Elif(b_short):
                        m.d.sync += count.eq(b_wait)
                        m.next = "B_GAP"
            with m.State("B_GAP"):  # the optimizer takes a_chunks cycles a line
                m.d.sync += count.eq(count - 1)
                with m.If(count == 0):
                    m.next = "B"
            with m.State("OPT_A"):  # the last A line through the optimizer's chunk feed
                m.d.sync += count.eq(count - 1)
                with m.If(count == 0):
                    m.d.comb += self.opt.b_start.eq(1)
                    m.d.sync += count.eq(tm.opt_b_cycles - 1)
                    m.next = "OPT_B"
            with m.State("OPT_B"):  # B tap by tap, then the optimizer's last write lands
                m.d.sync += count.eq(count - 1)
                with m.If(count == 0):
                    m.next = "EPOCH_END"
            with m.State("EPOCH_END"):
                m.d.sync += [self.stats_wr.en.eq(1), self.stats_wr.addr.eq(epoch),
                             self.stats_wr.data.eq(Cat(self.head.correct, self.head.loss, self.opt.saturated))]
                m.d.comb += self.opt.clear_saturated.eq(1)
                m.d.sync += epoch.eq(epoch + 1)
                with m.If(job_end):
                    m.d.sync += [self.done.eq(1), self.busy.eq(0)]
                    m.next = "IDLE"
                with m.Else():
                    m.next = "EPOCH"
        # busy is a register (it leaves IDLE with the FSM): no state decode behind the core's command checks
        return m
