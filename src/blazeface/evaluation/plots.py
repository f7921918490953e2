"""Precision-recall curves of a WIDER FACE evaluation as a PNG (matplotlib's Agg canvas, no display)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BlazefaceError
from .widerface import SETTINGS, WiderFaceResult

COLORS = {"easy": "tab:green", "medium": "tab:orange", "hard": "tab:red"}


def plot_pr_curves(result: WiderFaceResult, path: str | Path, title: str | None = None) -> Path:
    """Write the easy / medium / hard PR curves, APs in the legend, to ``path`` (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(6, 5), dpi=120)
    FigureCanvasAgg(fig)  # the Agg canvas, without touching pyplot's global backend
    ax = fig.add_subplot()
    for setting in SETTINGS:
        curve = result.curves.get(setting)
        if curve is None:
            continue
        ok = np.isfinite(curve.precision) & np.isfinite(curve.recall)
        ap = result.ap(setting)
        label = f"{setting}: AP {ap:.4f}" if np.isfinite(ap) else f"{setting}: no face"
        ax.plot(curve.recall[ok], curve.precision[ok], color=COLORS[setting], label=label, linewidth=1.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left")
    ax.set_title(title or f"WIDER FACE val, {result.images} images")
    fig.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    except OSError as exc:
        raise BlazefaceError(f"{path}: cannot write the plot ({exc.strerror or exc})") from None
    return path
