"""A run's training state on disk: the checkpoint loaded into a fresh module, optimizer and
schedule (every field checked against fresh ones), each epoch's files written in an order a kill
cannot tear, and torch files written atomically.
"""
from __future__ import annotations

import io
from pathlib import Path

from ..diagnostics import ResdslError, printable
from ..output import write_atomic
from .checkpoint import CHECKPOINT, check_moments, conforms, read_checkpoint
from .recipe import Precision
from .rundir import BEST, Run


def save_epoch(out: Path, run: Run, rows: list[dict], board, module, optimizer, schedule, precision: Precision,
               best: dict, improved: bool) -> None:
    """The leader's writes at the end of an epoch (the last of `rows`)."""
    state = {"model": module.state_dict(), "optimizer": optimizer.state_dict(),
             "schedule": schedule.state_dict(), "epoch": rows[-1]["epoch"], "best": best}
    if precision.scaler:
        state["scaler"] = precision.scaler.state_dict()
    run.save_metrics(rows)  # metrics first: a kill between the writes repeats this epoch
    board.add(rows[-1])
    if improved:
        save(out / BEST, module.state_dict())
    save(out / CHECKPOINT, state)


def save(path: Path, state) -> None:
    import torch
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(path, buffer.getvalue())


def best_epoch(rows: list[dict]) -> dict | None:
    """The epoch of lowest test error (the first of equals), for a checkpoint that predates `best`."""
    if not rows:
        return None
    row = min(rows, key=lambda r: (r["test_error"], r["epoch"]))
    return {"epoch": row["epoch"], "test_error": row["test_error"]}


def resume(path: Path, device, epochs: int, module, optimizer, schedule,
            precision: Precision) -> tuple[int, dict | None]:
    """Load a checkpoint into the fresh module, optimizer, schedule (and fp16's scaler): the epoch
    it stands at and its best epoch."""
    state = read_checkpoint(path, device, epochs)
    fresh_groups = optimizer.state_dict()["param_groups"]
    # torch takes any keys and values into a schedule (its __dict__) or an optimizer's groups and
    # fails only mid-training, so they are checked against fresh ones.
    conforms(path, "schedule", state["schedule"], schedule.state_dict(), schedule)
    try:
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        if precision.scaler and isinstance(state.get("scaler"), dict):
            precision.scaler.load_state_dict(state["scaler"])
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a mismatched state
        raise ResdslError(f"cannot resume from {printable(str(path))} ({type(exc).__name__})",
                          hint="delete it to start over, or use a new --out") from None
    for group, fresh in zip(optimizer.param_groups, fresh_groups):
        conforms(path, "optimizer", {k: v for k, v in group.items() if k != "params"},
                  {k: v for k, v in fresh.items() if k != "params"})
        for param in group["params"]:
            check_moments(path, optimizer.state.get(param, {}), param)
    return state["epoch"], state.get("best")
