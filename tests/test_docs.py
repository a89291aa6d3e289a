"""Documentation that restates the contract: generated from its source, and checked against it."""

import re
from pathlib import Path

import pytest

from skip2lora.fixed import formats as F
from skip2lora.fixed.config import KV260
from skip2lora.fixed.cycles import job_cycles
from skip2lora.fixed.packing import Layout
from skip2lora.hw.docs import BLOCKS, DocsStale, render, update_docs

ROOT = Path(__file__).resolve().parents[1]


def test_generated_blocks_are_current():
    """docs/numerics.md and docs/interface.md: regenerate with `skip2lora hw docs`."""
    update_docs(ROOT, check=True)


def test_stale_and_missing_blocks_are_reported(tmp_path):
    for rel in BLOCKS:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text((ROOT / rel).read_text().replace("| Q14 |", "| Q13 |"))
    with pytest.raises(DocsStale, match="numerics.md"):
        update_docs(tmp_path, check=True)
    assert "docs/numerics.md" in update_docs(tmp_path)
    update_docs(tmp_path, check=True)
    with pytest.raises(KeyError, match="missing from the page: constants, formats"):
        render("no blocks here", BLOCKS["docs/numerics.md"])


def test_the_logit_shift_is_the_models():
    """The row the independent testbench caught (it read 18): the page states the model's shift."""
    text = (ROOT / "docs/numerics.md").read_text()
    shift = F.B_FRAC + F.U_FRAC - F.Y_FRAC
    assert f"B_k[c,r] u_k[r] >> {shift}))" in text and shift == 16


def test_prose_that_names_derived_numbers_agrees():
    """Numbers the README restates about the KV260 build."""
    lay = Layout(KV260.geometry, KV260.lanes)
    readme = (ROOT / "README.md").read_text()
    for m in re.finditer(r"(\d+)\s+lines\s+per\s+sample", readme):
        assert int(m.group(1)) == lay.sample_lines, m.group(0)
    for m in re.finditer(r"(\d+)-bit\s+line", readme):
        assert int(m.group(1)) == lay.beat_bits, m.group(0)
    # the KV260 job's cycle count, wherever the README states it as today's
    cycles = job_cycles(lay, 1024, 16, 10, shuffle=True, build=KV260)
    stated = re.findall(r"\*\*([\d,]+) accelerator cycles\*\*", readme) + re.findall(
        r"\| accelerator cycles \(RTL cycle counter = cycle model\) \| ([\d,]+) \|", readme)
    assert len(stated) == 2 and {int(x.replace(",", "")) for x in stated} == {cycles}, stated


def test_the_readme_ddr_rows_are_the_cycle_model():
    """The KV260 build's DDR jobs: the cycles and the projection the README states equal the cycle
    model under the assumed KV260 memory (and the on-chip count it compares them with)."""
    from skip2lora.fixed.cycles import CLOCK_MHZ, KV260_DDR

    lay = Layout(KV260.geometry, KV260.lanes)
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"\| ([\d,]+) samples x 10 epochs, the KV260 build from its DDR cache, seeds 0-2 \|[^|]*?"
                      r"([\d,]+) cycles, \**([\d.]+) ms projected", readme)
    assert {int(n.replace(",", "")) for n, _, _ in rows} == {4096, 16384}, rows
    for n, cycles, ms in rows:
        want = job_cycles(lay, int(n.replace(",", "")), 16, 10, shuffle=True, ddr=KV260_DDR, build=KV260)
        assert int(cycles.replace(",", "")) == want and f"{want / (CLOCK_MHZ * 1e3):.1f}" == ms, (n, cycles, ms)
    on_chip = job_cycles(lay, 16384, 16, 10, shuffle=True, build=KV260)
    assert f"than it would on chip ({on_chip:,})" in readme
    kv260_job = job_cycles(lay, 1024, 16, 10, shuffle=True, ddr=KV260_DDR, build=KV260)
    assert f"| {kv260_job:,} cycles, {kv260_job / (CLOCK_MHZ * 1e3):.2f} ms projected at 200 MHz" in readme


def test_the_pl_fill_page_states_the_bench_figures():
    """docs/pl-fill.md's end-to-end figures are `skip2lora bench`'s (the FILL command's cycle model
    at the shipped LeNet-5's plan, the training job's cycle model), as is the README's row."""
    from skip2lora.bench import pl_fill_figures

    cycles = job_cycles(Layout(KV260.geometry, KV260.lanes), 1024, 16, 10, shuffle=True, build=KV260)
    r = pl_fill_figures(cycles)
    want = [f"{r['fill_cycles']:,} cycles, then 10 epochs, {cycles:,} cycles",
            f"{r['end_to_end_cycles']:,} cycles = {r['end_to_end_ms']:.1f} ms at an assumed 200 MHz"]
    for rel in ("docs/pl-fill.md", "README.md"):
        text = " ".join((ROOT / rel).read_text().replace("**", "").split())
        for phrase in want:
            assert phrase in text, (rel, phrase)


def test_the_pl_predict_page_states_the_predict_cycles():
    """docs/pl-predict.md's PREDICT table is `fill_plan.predict_command_cycles` on the kv260 build."""
    from skip2lora.fixed import fill_plan as FP
    from skip2lora.fixed.config import fill_base_of

    base = fill_base_of(KV260)
    plan = FP.plan_fill(base)
    rows = [line for line in (ROOT / "docs/pl-predict.md").read_text().splitlines()
            if re.match(r"\| [\d,]+ \| [\d,]+ \| [\d,]+ images/s \|$", line)]
    assert len(rows) == 3
    for line in rows:
        n, cycles, rate = [c.strip() for c in line.strip("|").split("|")]
        n = int(n.replace(",", ""))
        want = FP.predict_command_cycles(base, plan, n, KV260)
        assert (cycles, rate) == (f"{want:,}", f"{round(200e6 * n / want):,} images/s"), line


def test_the_pl_predict_page_states_the_plans_figures():
    """docs/pl-predict.md's throughput table (the design's reason for the 1,800-cycle plan) is
    `fill_plan`'s: each plan's DSPs and its images/s for 1024 and 10,000 images at 200 MHz."""
    from skip2lora.fixed import fill_plan as FP
    from skip2lora.fixed.config import fill_base_of

    base = fill_base_of(KV260)
    rows = {int(m.group(1)): line for line in (ROOT / "docs/pl-predict.md").read_text().splitlines()
            if (m := re.match(r"\| `plan_fill\(base, (\d+)\)`", line))}
    assert sorted(rows) == [1800, 2000]
    for interval, line in rows.items():
        plan = FP.plan_fill(base, interval)
        done = FP.fill_done_cycles(base, plan, 10_000)  # each entry's last cycle
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1].split()[0] == str(plan.dsps), line
        assert cells[2:] == [f"{round(200e6 * n / done[n - 1]):,} images/s" for n in (1024, 10_000)], line
