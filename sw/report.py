"""Text tables and plots of results (matplotlib is imported only when a plot is asked for)."""

from __future__ import annotations

__all__ = ["finetune_text", "compare_text", "plot_curves"]


def _pct(v):
    return "   n/a" if v is None else f"{100 * v:5.2f}%"


def _secs(v):
    if v is None:
        return "n/a"
    return f"{v * 1e3:.2f} ms" if v < 1 else f"{v:.2f} s"


def finetune_text(r: dict) -> str:
    if r.get("diverged"):
        return f"{r['method']} on {r['dataset']} ({r['backend']}): DIVERGED - {r.get('error')}"
    lines = [
        f"{r['method']} on {r['dataset']} ({r['backend']} backend): {r['samples']} samples, "
        f"{r['epochs']} epochs, batch {r['batch']}, lr {r['lr']:g}, seed {r['seed']}",
        f"  accuracy before fine-tuning  {_pct(r.get('accuracy_before'))}",
        f"  accuracy after fine-tuning   {_pct(r.get('accuracy'))}",
        f"  fine-tuning wall time        {_secs(r.get('ft_seconds'))}",
    ]
    if r.get("epoch_seconds") is not None:
        lines.append(f"  mean epoch after the first   {_secs(r['epoch_seconds'])}")
    if r.get("cycles") is not None:
        lines.append(f"  accelerator cycles           {r['cycles']:,}")
        lines.append(f"  projected KV260 time         {r['projected_ms']:.3f} ms "
                     f"(projection: cycles / {r['clock_mhz']:g} MHz assumed clock)")
    if r.get("wall_seconds") is not None:
        lines.append(f"  wall time (this machine)     {_secs(r['wall_seconds'])}")
    return "\n".join(lines)


def compare_text(out: dict) -> str:
    head = (f"{'method':<17} {'before':>7} {'after':>7} {'± std':>6} {'FT time':>10} {'epoch':>10} "
            f"{'fwd/batch':>10} {'bwd/batch':>10} {'upd/batch':>10}")
    lines = [f"{out['dataset']}: mean over {out['seeds']} seed(s), {out.get('order', 'shuffle')} sample order, "
             f"{out.get('schedule', 'warmup-linear')} learning rate ({out['machine']}, {out['date']})", head,
             "-" * len(head)]
    for r in out["results"]:
        if r["accuracy"] is None:
            lines.append(f"{r['method']:<17} DIVERGED: {'; '.join(r['errors'])}")
            continue
        t = r["time_per_batch"]
        lines.append(f"{r['method']:<17} {_pct(r['accuracy_before']):>7} {_pct(r['accuracy']):>7} "
                     f"{100 * r['accuracy_std']:5.2f}  {_secs(r['ft_seconds']):>10} {_secs(r['epoch_seconds']):>10} "
                     f"{_secs(t['forward']):>10} {_secs(t['backward']):>10} {_secs(t['update']):>10}")
    for m, s in out.get("speedup_vs_lora_all", {}).items():
        epoch = f"{s['epoch']:.1f}x" if s["epoch"] else "n/a"
        lines.append(f"{m} vs lora-all: whole job {s['job']:.1f}x faster, each epoch after the first {epoch}")
    return "\n".join(lines)


def plot_curves(curves: dict, path: str, title: str = "") -> None:
    """Accuracy per epoch per method (mean over seeds) saved to ``path``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("--plot needs matplotlib: pip install 'skip2lora[dev]'") from exc
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, runs in curves.items():
        runs = [r for r in runs if r]
        if not runs:
            continue
        acc = 100 * np.mean(np.array(runs, dtype=float), axis=0)
        ax.plot(np.arange(1, len(acc) + 1), acc, marker="o", ms=3, label=method)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
