"""`resdsl plot`: training (dashed) and test (solid) error against iterations, as the paper's Fig. 6."""
from __future__ import annotations

import json
from pathlib import Path

from ..diagnostics import ResdslError, printable
from .loop import CONFIG, METRICS


def plot_runs(runs: list[Path], output: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    curves = []
    for run in runs:
        try:
            config = json.loads((run / CONFIG).read_text())
            rows = [json.loads(line) for line in (run / METRICS).read_text().splitlines() if line.strip()]
        except FileNotFoundError:
            raise ResdslError(
                f"{printable(str(run))} is not a training run (no {CONFIG} or {METRICS})",
                hint="give directories written by `resdsl train --out`",
            ) from None
        except (OSError, ValueError):
            raise ResdslError(
                f"{printable(str(run))} has damaged metrics", hint="rerun its training"
            ) from None
        if not rows:
            raise ResdslError(f"{printable(str(run))} has no finished epoch yet",
                              hint="plot it after its first epoch")
        curves.append((config["network"], run.name, rows))
    names = [c[0] for c in curves]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for color, (network, directory, rows) in zip(
        plt.rcParams["axes.prop_cycle"].by_key()["color"] * 10, curves
    ):
        label = network if names.count(network) == 1 else f"{network} ({directory})"
        its = [r["iteration"] for r in rows]
        ax.plot(its, [100 * r["train_error"] for r in rows], "--", color=color, linewidth=1)
        ax.plot(its, [100 * r["test_error"] for r in rows], "-", color=color, linewidth=2, label=label)
    ax.set_xlabel("iterations")
    ax.set_ylabel("error (%)")
    ax.set_title("dashed: training error, solid: test error")
    ax.grid(alpha=0.3)
    ax.legend()
    suffix = output.suffix.lower().lstrip(".")
    if suffix not in ("png", "svg", "pdf"):
        raise ResdslError(f"cannot tell the picture format from `{printable(output.name)}`",
                          hint="end the output name in .png, .svg or .pdf")
    import io
    from ..output import write_atomic
    buffer = io.BytesIO()
    fig.savefig(buffer, format=suffix, dpi=120, bbox_inches="tight", metadata={"Software": None}
                if suffix == "png" else None)
    plt.close(fig)
    write_atomic(output, buffer.getvalue())
