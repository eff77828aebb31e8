"""Training a spec's module: a recipe (recipe.py; the paper's by default), a run directory that
resumes (rundir.py), metrics per epoch (epoch.py).

Rerun with the same `--out` and it resumes from the checkpoint (state.py); every random draw (init,
shuffling, augmentation, dropout) is seeded per epoch, so a resumed run ends with the same metrics
as one never interrupted. A rerun with a larger --epochs extends the run: the schedule is
recomputed for the new total from the iteration the checkpoint stands at (recipe.retarget). Under
torchrun the same loop runs data-parallel (distributed.py); only the leader writes.

A run directory may come from elsewhere (copied, downloaded, tampered with), so resuming trusts none
of it: each file is read bounded (files.py), the checkpoint with torch's weights-only unpickler, and
every field is checked before use. A damaged one is refused by file and line, never retrained over.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from ..diagnostics import ResdslError
from .checkpoint import CHECKPOINT
from .data import Dataset, fit
from .distributed import World
from .epoch import Epochs
from .finetune import init_record, load_init
from .logs import TensorBoard
from .recipe import Precision, Recipe, make_optimizer, make_schedule, retarget
from .rundir import FINAL, Run
from .state import best_epoch, resume, save, save_epoch

__all__ = ["train"]


def train(net, spec_text: str, spec_file: str, data: Dataset, data_name: str, out: Path, recipe: Recipe,
          on_batch: Callable[[int, int, float], None] | None = None,
          on_epoch: Callable[[dict], None] | None = None, world: World = World(),
          on_note: Callable[[str], None] | None = None, workers: int = 0) -> list[dict]:
    """Train `net` on `data` into the run directory `out` (resuming it where it holds a run).
    `workers` processes decode streamed images (an image folder); no result depends on them."""
    graph = net.graph
    if not graph.outputs_classes():
        raise ResdslError(f"`{net.name}` does not end in a class vector, so it cannot be trained to classify",
                          hint="end the head with `fc classes`")
    if graph.classes != data.classes:
        raise ResdslError(f"`{net.name}` has {graph.classes} classes, {data.name} has {data.classes}",
                          graph.classes_span,
                          hint=f"give `--set classes={data.classes}`, or write `classes {data.classes}` in the spec")
    if min(recipe.batch, len(data.train_y)) < world.size:
        raise ResdslError(f"a batch of {min(recipe.batch, len(data.train_y))} images cannot be split over "
                          f"{world.size} processes",
                          hint=f"use a batch of at least {world.size} (the batch is the global batch)")
    if recipe.warmup_epochs >= recipe.epochs:
        raise ResdslError(f"--warmup-epochs {recipe.warmup_epochs} leaves none of the {recipe.epochs} "
                          f"epochs to the schedule", hint="warm up for fewer epochs than --epochs")
    device = world.device(recipe.device)
    precision = Precision(recipe.amp, device)
    data = fit(data, graph.shape("<input>"))
    run = Run(out)
    config = {"network": net.name, "spec_file": spec_file, "spec": spec_text,
              "spec_sha256": hashlib.sha256(spec_text.encode()).hexdigest(), "overrides": net.overrides,
              "data": data_name,
              "recipe": {**asdict(recipe), "init": recipe.init and init_record(recipe.init)}}
    run.start(config, write=world.leader)

    world.join(device)
    finished = False
    try:
        note = on_note if on_note and world.leader else (lambda message: None)
        rows = _train(net, data, out, run, recipe, on_batch, on_epoch, world, device, precision, note, workers)
        finished = True
        return rows
    finally:
        world.leave(finished)


def _train(net, data: Dataset, out: Path, run: Run, recipe: Recipe, on_batch, on_epoch, world: World,
           device, precision: Precision, note: Callable[[str], None], workers: int) -> list[dict]:
    import torch

    torch.manual_seed(recipe.seed)
    module = net.to_torch(seed=recipe.seed)
    checkpoint = out / CHECKPOINT
    if recipe.init and not checkpoint.exists():
        load_init(net.graph, module, recipe.init, note)
    module = module.to(device)
    epochs = Epochs(data, recipe, world, device, precision, workers)
    per_epoch, total = epochs.per_epoch, epochs.total
    optimizer = make_optimizer(module, recipe)
    schedule = make_schedule(optimizer, recipe, total, per_epoch)

    start, rows, best = 0, [], None
    if checkpoint.exists():
        start, best = resume(checkpoint, device, recipe.epochs, module, optimizer, schedule, precision)
        retarget(schedule, optimizer, recipe, start * per_epoch, total, per_epoch)
        rows = run.resumed_rows(start)
        best = best or best_epoch(rows)
    board = TensorBoard(out, rows) if world.leader and start < recipe.epochs else None

    model = world.wrap(module, device)
    try:
        for epoch in range(start + 1, recipe.epochs + 1):
            trained = epochs.train(model, optimizer, schedule, epoch, start, on_batch)
            row = epochs.row(epoch, trained, epochs.test(module))
            rows.append(row)
            improved = best is None or row["test_error"] < best["test_error"]
            best = {"epoch": epoch, "test_error": row["test_error"]} if improved else best
            if world.leader:
                save_epoch(out, run, rows, board, module, optimizer, schedule, precision, best, improved)
            if on_epoch:
                on_epoch(row)
    finally:
        if board:
            board.close()
    if world.leader:
        save(out / FINAL, module.state_dict())
    return rows
