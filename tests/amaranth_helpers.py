"""Manager-side helpers for amaranth.sim testbenches: AXI4-Lite reads/writes and AXI4-Stream beats.

Shared by the register-bank tests and the accelerator tests (the 0.5 docs suggest copying such
helpers into a project's tests rather than shipping them).
"""

OKAY = 0


async def _response(ctx, valid, ready, delay, *payload):
    """Accept a B/R response after holding `ready` low for `delay` cycles of `valid`."""
    if delay:
        await ctx.tick().until(valid)
        for _ in range(delay - 1):
            _, _, still_valid = await ctx.tick().sample(valid)
            assert still_valid, "response dropped before it was accepted"
    ctx.set(ready, 1)
    values = await ctx.tick().sample(*payload).until(valid)
    ctx.set(ready, 0)
    return values


async def axil_write(ctx, bus, addr, data, strb=0xF, *, aw_delay=0, w_delay=0, b_delay=0):
    """One write; AW and W become valid after their own delays (in cycles)."""
    ctx.set(bus.awaddr, addr)
    ctx.set(bus.wdata, data)
    ctx.set(bus.wstrb, strb)
    aw_done = w_done = False
    cycle = 0
    while not (aw_done and w_done):
        ctx.set(bus.awvalid, not aw_done and cycle >= aw_delay)
        ctx.set(bus.wvalid, not w_done and cycle >= w_delay)
        _, _, awv, awr, wv, wr = await ctx.tick().sample(
            bus.awvalid, bus.awready, bus.wvalid, bus.wready)
        aw_done = aw_done or bool(awv and awr)
        w_done = w_done or bool(wv and wr)
        cycle += 1
    ctx.set(bus.awvalid, 0)
    ctx.set(bus.wvalid, 0)
    (bresp,) = await _response(ctx, bus.bvalid, bus.bready, b_delay, bus.bresp)
    assert bresp == OKAY


async def axil_read(ctx, bus, addr, *, ar_delay=0, r_delay=0):
    """One read; returns RDATA."""
    ctx.set(bus.araddr, addr)
    if ar_delay:
        await ctx.tick().repeat(ar_delay)
    ctx.set(bus.arvalid, 1)
    await ctx.tick().until(bus.arready)
    ctx.set(bus.arvalid, 0)
    rdata, rresp = await _response(ctx, bus.rvalid, bus.rready, r_delay, bus.rdata, bus.rresp)
    assert rresp == OKAY
    return rdata



async def stream_send(ctx, axis, beats, *, gaps=None):
    """Send (data, last) beats on a stream sink; ``gaps[i]`` idle cycles before beat i."""
    for i, (data, last) in enumerate(beats):
        if gaps is not None and gaps[i]:
            ctx.set(axis.valid, 0)
            await ctx.tick().repeat(gaps[i])
        ctx.set(axis.p.data, data)
        ctx.set(axis.p.last, last)
        ctx.set(axis.valid, 1)
        await ctx.tick().until(axis.ready)
    ctx.set(axis.valid, 0)
    ctx.set(axis.p.last, 0)


async def stream_recv(ctx, axis, count, *, stalls=None):
    """Receive ``count`` beats from a stream source; ``stalls[i]`` cycles of ready low before beat i."""
    out = []
    for i in range(count):
        if stalls is not None and stalls[i]:
            ctx.set(axis.ready, 0)
            await ctx.tick().repeat(stalls[i])
        ctx.set(axis.ready, 1)
        data, last = await ctx.tick().sample(axis.p.data, axis.p.last).until(axis.valid)
        out.append((data, last))
    ctx.set(axis.ready, 0)
    return out


def to_beats(data, beat_bytes):
    """Little-endian beats of a byte string, TLAST on the last one."""
    data = bytes(data)
    n = len(data) // beat_bytes
    return [(int.from_bytes(data[i * beat_bytes:(i + 1) * beat_bytes], "little"), i == n - 1)
            for i in range(n)]


def from_beats(beats, beat_bytes):
    return b"".join(int(d).to_bytes(beat_bytes, "little") for d, _ in beats)
