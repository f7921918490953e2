"""Loss curve (and dev AP) from the metrics log."""
from __future__ import annotations

import json
from pathlib import Path


def plot_metrics(metrics: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, rows, evals = [], [], []
    for line in Path(metrics).read_text().splitlines():
        record = json.loads(line)
        if "eval" in record:
            evals.append(record)
        elif "loss" in record:
            steps.append(record["epoch"])
            rows.append(record)
    if not rows:
        return
    fig, axes = plt.subplots(1, 2 if evals else 1, figsize=(11 if evals else 6, 4), squeeze=False)
    ax = axes[0, 0]
    # Ground-truth parts solid, a teacher's parts (kd_*, present in distillation runs) dashed.
    keys = ["loss", "loc", "cls", "landm"] + sorted(k for k in rows[-1] if k.startswith("kd_"))
    for key in keys:
        ax.plot(steps, [r.get(key, float("nan")) for r in rows], label=key, linewidth=1,
                linestyle="--" if key.startswith("kd_") else "-")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_title("training loss")
    ax.legend(fontsize=8, ncol=2)
    if evals:
        ax = axes[0, 1]
        for key in ("easy", "medium", "hard"):
            ax.plot([e["epoch"] for e in evals], [e["eval"].get(key, float("nan")) for e in evals], "o-", label=key)
        ax.set_xlabel("epoch")
        ax.set_title("dev AP (WIDER val)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
