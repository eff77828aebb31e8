"""Training a spec's module: the paper's recipe, a run directory that resumes, metrics per epoch.

The run directory (`--out`) holds
    config.json     the network, the spec's text and hash, the data, every setting and the seed
    metrics.jsonl   one line per epoch: train loss and error, test loss and error, learning rate,
                    iterations, images/s, wall time, processes
    checkpoint.pt   model, optimizer, schedule, RNG state after the last finished epoch (atomic)
    final.pt        the trained state_dict, which `resdsl compile --weights` takes for every target
Rerun with the same `--out` and it resumes from the checkpoint; every random draw (init, shuffling,
augmentation, dropout) is seeded per epoch, so a resumed run ends with the same metrics as one never
interrupted. Under torchrun the same loop runs data-parallel (distributed.py); only the leader writes.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ..diagnostics import ResdslError, printable
from ..output import write_atomic
from .data import Dataset, augment, crop_flip, fit, normalizer
from .distributed import World

CONFIG, METRICS, CHECKPOINT, FINAL = "config.json", "metrics.jsonl", "checkpoint.pt", "final.pt"


@dataclass(frozen=True)
class Recipe:
    """He et al. 2015, Sec. 4.2: SGD, momentum 0.9, weight decay 1e-4, batch 128, learning rate
    0.1 divided by 10 at 50% and 75% of training (32k and 48k of 64k iterations)."""
    epochs: int
    batch: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[float, ...] = (0.5, 0.75)
    augment: bool = True
    seed: int = 0
    device: str = "cpu"


class Run:
    """A run directory: what was trained, how far it got, and where to write."""

    def __init__(self, out: Path) -> None:
        self.out = out
        if out.exists() and not out.is_dir():
            raise ResdslError(f"--out {printable(str(out))} is a file, not a run directory",
                              hint="give a directory (it is created if missing)")

    def start(self, config: dict, write: bool = True) -> None:
        """Check a rerun is the same training (same spec, data and settings), or begin a new one
        (where `write`: the other processes of a distributed run only check)."""
        path = self.out / CONFIG
        if path.exists():
            try:
                old = json.loads(path.read_text())
            except (OSError, ValueError):
                raise ResdslError(f"{printable(str(path))} is damaged", hint="use a new --out") from None
            if old.get("spec_sha256") != config["spec_sha256"]:
                raise ResdslError(
                    f"{printable(str(self.out))} holds a run of `{old.get('network')}` "
                    f"({old.get('spec_file')}), not of `{config['network']}` ({config['spec_file']})",
                    hint="use another --out for another spec",
                )
            for key in ("data", "recipe"):
                if old.get(key) != json.loads(json.dumps(config[key])):  # as stored: tuples are lists
                    raise ResdslError(
                        f"{printable(str(self.out))} was trained with other {key} settings: "
                        f"{json.dumps(old.get(key))}",
                        hint="rerun with the same settings, or a new --out",
                    )
            return
        if not write:
            return
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ResdslError(f"cannot create {printable(str(self.out))}: {exc.strerror}",
                              hint="choose a --out you can write") from None
        write_atomic(path, json.dumps(config, indent=1) + "\n")

    def metrics(self) -> list[dict]:
        path = self.out / METRICS
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def save_metrics(self, rows: list[dict]) -> None:
        write_atomic(self.out / METRICS, "".join(json.dumps(r) + "\n" for r in rows))


def train(net, spec_text: str, spec_file: str, data: Dataset, data_name: str, out: Path, recipe: Recipe,
          on_batch: Callable[[int, int, float], None] | None = None,
          on_epoch: Callable[[dict], None] | None = None, world: World = World()) -> list[dict]:
    graph = net.graph
    if not graph.outputs_classes():
        raise ResdslError(f"`{net.name}` does not end in a class vector, so it cannot be trained to classify",
                          hint="end the head with `fc classes`")
    if graph.classes != data.classes:
        raise ResdslError(f"`{net.name}` has {graph.classes} classes, {data.name} has {data.classes}",
                          graph.classes_span, hint=f"write `classes {data.classes}` in the spec")
    if min(recipe.batch, len(data.train_y)) < world.size:
        raise ResdslError(f"a batch of {min(recipe.batch, len(data.train_y))} images cannot be split over "
                          f"{world.size} processes",
                          hint=f"use a batch of at least {world.size} (the batch is the global batch)")
    device = world.device(recipe.device)
    data = fit(data, graph.shape("<input>"))
    run = Run(out)
    config = {"network": net.name, "spec_file": spec_file, "spec": spec_text,
              "spec_sha256": hashlib.sha256(spec_text.encode()).hexdigest(), "data": data_name,
              "recipe": asdict(recipe)}
    run.start(config, write=world.leader)

    world.join(device)
    finished = False
    try:
        rows = _train(net, data, out, run, recipe, on_batch, on_epoch, world, device)
        finished = True
        return rows
    finally:
        world.leave(finished)


def _train(net, data: Dataset, out: Path, run: Run, recipe: Recipe, on_batch, on_epoch, world: World,
           device) -> list[dict]:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(recipe.seed)
    module = net.to_torch(seed=recipe.seed).to(device)
    mean, std = (torch.from_numpy(v)[None, :, None, None].to(device) for v in normalizer(data))
    train_x, train_y = torch.from_numpy(data.train_x), torch.from_numpy(data.train_y)
    test_x, test_y = (world.shard(torch.from_numpy(v)).to(device) for v in (data.test_x, data.test_y))
    n = len(train_y)
    # A last batch too small to give every process an image is dropped (only ever in a distributed run).
    per_epoch = n // recipe.batch + (n % recipe.batch >= world.size)
    seen = min(n, per_epoch * recipe.batch)
    total = per_epoch * recipe.epochs
    optimizer = torch.optim.SGD(module.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.MultiStepLR(  # stepped every iteration, as the paper counts
        optimizer, milestones=[int(total * m) for m in recipe.milestones], gamma=0.1)

    start, rows = 0, []
    checkpoint = out / CHECKPOINT
    if checkpoint.exists():
        try:
            state = torch.load(checkpoint, map_location=device, weights_only=False)
            module.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            start = state["epoch"]
        except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
            raise ResdslError(f"cannot resume from {printable(str(checkpoint))} ({type(exc).__name__})",
                              hint="delete it to start over, or use a new --out") from None
        rows = [r for r in run.metrics() if r["epoch"] <= start]

    model = world.wrap(module, device)
    for epoch in range(start + 1, recipe.epochs + 1):
        # Every draw of this epoch comes from generators seeded by (seed, epoch): a resumed run
        # shuffles, augments and drops out exactly as an uninterrupted one. Shuffling and augmentation
        # are drawn for whole batches, the same in every process; dropout differs per process.
        g = torch.Generator().manual_seed(recipe.seed * 1_000_003 + epoch)
        torch.manual_seed((recipe.seed * 1_000_003 + epoch) * 65_537 + world.rank)
        order = torch.randperm(n, generator=g)
        model.train()
        began = time.perf_counter()
        loss_sum = wrong = 0.0
        for i in range(per_epoch):
            batch = order[i * recipe.batch:(i + 1) * recipe.batch]
            idx = world.shard(batch)
            x = train_x[idx]
            if recipe.augment:
                x = augment(x, [world.shard(d) for d in crop_flip(len(batch), g)])
            x, y = ((x.to(device) - mean) / std), train_y[idx].to(device)
            logits = model(x)
            # The shard's share of the batch mean; DDP averages over the processes.
            loss = F.cross_entropy(logits, y, reduction="sum") * (world.size / len(batch))
            batch_loss, batch_wrong = world.sum(
                [loss.item() * len(batch) / world.size, (logits.argmax(1) != y).sum().item()], device)
            if not math.isfinite(batch_loss):  # every process sees the sum, so all stop together
                raise ResdslError(
                    f"the loss became {batch_loss / len(batch)} at epoch {epoch}, iteration {i + 1}; the "
                    f"last good checkpoint (epoch {start if epoch == start + 1 else epoch - 1}) is kept",
                    hint="lower --lr, or check the data",
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += batch_loss
            wrong += batch_wrong
            if on_batch:
                on_batch(epoch, i + 1, batch_loss / len(batch))
        seconds = time.perf_counter() - began
        world.share_buffers(module)
        test_loss, test_wrong, tested = world.sum(_evaluate(module, (test_x - mean) / std, test_y), device)
        row = {
            "epoch": epoch,
            "iteration": epoch * per_epoch,
            "train_loss": loss_sum / seen,
            "train_error": wrong / seen,
            "test_loss": test_loss / max(tested, 1),
            "test_error": test_wrong / max(tested, 1),
            "lr": optimizer.param_groups[0]["lr"],
            "images_per_s": seen / seconds,
            "wall_s": seconds,
            "processes": world.size,
        }
        rows.append(row)
        if world.leader:
            buffer = io.BytesIO()
            torch.save({"model": module.state_dict(), "optimizer": optimizer.state_dict(),
                        "schedule": schedule.state_dict(), "epoch": epoch}, buffer)
            run.save_metrics(rows)  # metrics first: a kill between the two writes repeats this epoch
            write_atomic(checkpoint, buffer.getvalue())
        if on_epoch:
            on_epoch(row)
    if world.leader:
        buffer = io.BytesIO()
        torch.save(module.state_dict(), buffer)
        write_atomic(out / FINAL, buffer.getvalue())
    return rows


def _evaluate(model, x, y, batch: int = 500) -> list[float]:
    """Summed loss, number wrong and number of images: sums, so processes can add theirs."""
    import torch
    import torch.nn.functional as F
    model.eval()
    loss = wrong = 0.0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            logits = model(x[i:i + batch])
            loss += F.cross_entropy(logits, y[i:i + batch], reduction="sum").item()
            wrong += (logits.argmax(1) != y[i:i + batch]).sum().item()
    return [loss, wrong, float(len(y))]
