"""`resdsl plot`: training (dashed) and test (solid) error against iterations, as the paper's Fig. 6.

The run directories may come from anyone, so nothing in them reaches matplotlib unchecked: every
field drawn is checked first (loop.read_config, loop.read_metrics), and names are drawn as plain
text, cut to a line: no mathtext (`$\\frac{$` fails, 5000 braces take minutes), no TeX, no
control characters. matplotlib's warnings are shown escaped, never raw.
"""
from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

from ..diagnostics import ResdslError, printable
from ..files import brief
from ..output import write_atomic
from .rundir import CONFIG, METRICS, read_config, read_metrics

HINT = "rerun its training, or leave it out of the plot"
NAME_CHARS = 60  # a legend entry, not a paragraph


def plot_runs(runs: list[Path], output: Path) -> None:
    suffix = output.suffix.lower().lstrip(".")
    if suffix not in ("png", "svg", "pdf"):
        raise ResdslError(f"cannot tell the picture format from `{printable(output.name)}`",
                          hint="end the output name in .png, .svg or .pdf")
    curves = [_read_run(run) for run in runs]
    import matplotlib
    matplotlib.use("Agg")  # files only: no display needed
    with warnings.catch_warnings(record=True) as caught, matplotlib.rc_context({"text.usetex": False}):
        warnings.simplefilter("always")
        picture = _draw(curves, suffix)
    for message in dict.fromkeys(str(w.message) for w in caught):
        print(f"warning: {brief(message, 300)}", file=sys.stderr)
    write_atomic(output, picture)


def _read_run(run: Path) -> tuple[str, str, list[dict]]:
    """(network, directory, rows) of one run, every field to be drawn checked."""
    if not ((run / CONFIG).exists() and (run / METRICS).exists()):
        raise ResdslError(
            f"{printable(str(run))} is not a training run (no {CONFIG} or {METRICS})",
            hint="give directories written by `resdsl train --out`",
        )
    config = read_config(run / CONFIG, HINT)
    rows = [row for _, row in read_metrics(run / METRICS, ("iteration", "train_error", "test_error"), HINT)]
    if not rows:
        raise ResdslError(f"{printable(str(run))} has no finished epoch yet",
                          hint="plot it after its first epoch")
    return _plain(config["network"]), _plain(run.name), rows


def _plain(name: str) -> str:
    """A name as matplotlib draws it literally: every `$` escaped, so no mathtext is parsed."""
    return brief(name, NAME_CHARS).replace("$", r"\$")


def _draw(curves: list[tuple[str, str, list[dict]]], suffix: str) -> bytes:
    import matplotlib.pyplot as plt
    names = [c[0] for c in curves]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    try:
        handles, labels = [], []
        for color, (network, directory, rows) in zip(
            plt.rcParams["axes.prop_cycle"].by_key()["color"] * 10, curves
        ):
            its = [r["iteration"] for r in rows]
            ax.plot(its, [100 * r["train_error"] for r in rows], "--", color=color, linewidth=1)
            (line,) = ax.plot(its, [100 * r["test_error"] for r in rows], "-", color=color, linewidth=2)
            handles.append(line)
            labels.append(network if names.count(network) == 1 else f"{network} ({directory})")
        ax.set_xlabel("iterations")
        ax.set_ylabel("error (%)")
        ax.set_title("dashed: training error, solid: test error")
        ax.grid(alpha=0.3)
        ax.legend(handles, labels)  # given, not collected: a label starting with `_` would be dropped
        buffer = io.BytesIO()
        fig.savefig(buffer, format=suffix, dpi=120, bbox_inches="tight", metadata={"Software": None}
                    if suffix == "png" else None)
        return buffer.getvalue()
    finally:
        plt.close(fig)
