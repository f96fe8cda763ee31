"""PNG plots for ``cyntra strategy diff`` (md/html): agreement per field, confusion matrices, latency.

matplotlib with the Agg backend (no display needed); each figure is closed after writing so a
long-lived process does not accumulate them. Plots are written only for what the report has.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from cyntra.strategy.diff import DiffReport


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def write_plots(report: DiffReport, out_dir: Path) -> list[Path]:
    """Write the report's PNGs into ``out_dir``; returns their paths (none for an empty report)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    written: list[Path] = []
    meta = {"Software": None}  # no version string: the same report gives the same bytes

    if report.agreement.n:
        fields = ["all", *report.agreement.per_field]
        values = [report.agreement.overall or 0.0, *report.agreement.per_field.values()]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.bar(fields, [100 * v for v in values], color="#4c72b0")
        ax.set_ylim(0, 110)
        ax.tick_params(axis="x", labelrotation=20)
        ax.set_ylabel("agreement (%)")
        ax.set_title(f"Heuristic vs candidate agreement (n={report.agreement.n})")
        for i, v in enumerate(values):
            ax.text(i, 100 * v + 1, f"{100 * v:.0f}%", ha="center", fontsize=8)
        fig.tight_layout()
        path = out_dir / "agreement.png"
        fig.savefig(path, dpi=100, metadata=meta)
        plt.close(fig)
        written.append(path)

    if report.confusion:
        n = len(report.confusion)
        fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.4), squeeze=False)
        for ax, cm in zip(axes[0], report.confusion, strict=True):
            m = np.asarray(cm.matrix, dtype=float)
            ax.imshow(m, cmap="Blues")
            ax.set_xticks(range(len(cm.labels)), cm.labels, rotation=45, ha="right", fontsize=7)
            ax.set_yticks(range(len(cm.labels)), cm.labels, fontsize=7)
            ax.set_xlabel("candidate")
            ax.set_ylabel("heuristic")
            ax.set_title(cm.field, fontsize=9)
            top = m.max() if m.size else 0.0
            for (r, c), v in np.ndenumerate(m):
                ax.text(c, r, str(int(v)), ha="center", va="center", fontsize=7,
                        color="white" if top and v > top / 2 else "black")
        fig.tight_layout()
        path = out_dir / "confusion.png"
        fig.savefig(path, dpi=100, metadata=meta)
        plt.close(fig)
        written.append(path)

    samples = {k: v for k, v in report._latencies.items() if v}
    if samples:
        fig, axes = plt.subplots(1, len(samples), figsize=(4.5 * len(samples), 3.2), squeeze=False)
        for ax, (side, vals) in zip(axes[0], sorted(samples.items()), strict=True):
            ax.hist(vals, bins=30, color="#dd8452" if side == "candidate" else "#55a868")
            summary = report.latency_ms.get(side)
            if summary is not None and summary.p99 is not None:
                ax.axvline(summary.p99, color="black", linestyle="--", linewidth=1, label=f"p99 {summary.p99:.2f}")
                ax.legend(fontsize=7)
            ax.set_title(f"{side} latency (ms, n={len(vals)})", fontsize=9)
            ax.set_xlabel("ms")
        fig.tight_layout()
        path = out_dir / "latency.png"
        fig.savefig(path, dpi=100, metadata=meta)
        plt.close(fig)
        written.append(path)
    return written
