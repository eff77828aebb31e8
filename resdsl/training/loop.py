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

A run directory may come from elsewhere (copied, downloaded, tampered with), so resuming trusts none
of it: each file is read bounded (files.py), the checkpoint with torch's weights-only unpickler, and
every field is checked before use. A damaged one is refused by file and line, never retrained over.
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
from ..files import DamagedFile, brief, json_lines, load_torch, read_json
from ..output import write_atomic
from .data import Dataset, augment, crop_flip, described, fit, normalizer
from .distributed import World

CONFIG, METRICS, CHECKPOINT, FINAL = "config.json", "metrics.jsonl", "checkpoint.pt", "final.pt"
RESUME_HINT = f"delete {CHECKPOINT} and {METRICS} to train from the start, or use a new --out"

# What config.json holds, as `train` writes it.
CONFIG_FIELDS: dict[str, type] = {"network": str, "spec_file": str, "spec": str, "spec_sha256": str,
                                  "data": str, "recipe": dict}


def _fraction(value) -> bool:
    return type(value) in (int, float) and 0 <= value <= 1  # NaN fails the comparison


# The fields of a metrics row that resdsl reads back, and what each must be.
ROW_FIELDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "epoch": (lambda v: type(v) is int and v >= 1, "an epoch number (1, 2, ...)"),
    "iteration": (lambda v: type(v) is int and 0 <= v <= 1 << 53, "a count of iterations"),
    "train_error": (_fraction, "an error rate from 0 to 1"),
    "test_error": (_fraction, "an error rate from 0 to 1"),
}


def read_config(path: Path, hint: str) -> dict:
    """A run's config.json, each field of the kind `train` writes."""
    config = read_json(path, what="run configuration", hint=hint)
    if not isinstance(config, dict):
        raise DamagedFile(path, f"holds {described(config)}, not the object resdsl writes", hint=hint)
    for key, kind in CONFIG_FIELDS.items():
        if key not in config:
            raise DamagedFile(path, f"has no `{key}`", hint=hint)
        if not isinstance(config[key], kind):
            raise DamagedFile(path, f"`{key}` is {described(config[key])}, not a {kind.__name__}", hint=hint)
    return config


def read_metrics(path: Path, fields: tuple[str, ...], hint: str) -> list[tuple[int, dict]]:
    """(line, row) for each epoch in metrics.jsonl, each of `fields` checked. A torn last line (a
    kill mid-write, which atomic writes make unlikely) is dropped; damage anywhere else is refused
    by line, never skipped: a run read wrong would be retrained or drawn wrong."""
    lines = list(json_lines(path, what="metrics file"))
    rows = []
    for index, (number, _, row) in enumerate(lines):
        if isinstance(row, ValueError):
            if index == len(lines) - 1:
                break
            raise DamagedFile(path, f"not valid JSON ({row})", number, hint=hint)
        if not isinstance(row, dict):
            raise DamagedFile(path, f"holds {described(row)}, not a row of metrics", number, hint=hint)
        for field in fields:
            valid, meaning = ROW_FIELDS[field]
            if field not in row:
                raise DamagedFile(path, f"the row has no `{field}`", number, hint=hint)
            if not valid(row[field]):
                raise DamagedFile(path, f"`{field}` is {described(row[field])}, not {meaning}", number, hint=hint)
        rows.append((number, row))
    return rows


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
            old = read_config(path, hint="use a new --out")
            if old["spec_sha256"] != config["spec_sha256"]:
                raise ResdslError(
                    f"{printable(str(self.out))} holds a run of `{brief(old['network'])}` "
                    f"({brief(old['spec_file'])}), not of `{config['network']}` ({config['spec_file']})",
                    hint="use another --out for another spec",
                )
            for key in ("data", "recipe"):
                if old[key] != json.loads(json.dumps(config[key])):  # as stored: tuples are lists
                    raise ResdslError(
                        f"{printable(str(self.out))} was trained with other {key} settings: "
                        f"{brief(json.dumps(old[key]), 200)}",
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

    def resumed_rows(self, start: int) -> list[dict]:
        """The metrics of epochs 1 to `start`, where the checkpoint stands. A row past it is
        dropped (metrics are written before the checkpoint); a missing row is refused."""
        path = self.out / METRICS
        if start and not path.exists():
            raise ResdslError(f"{printable(str(path))} is missing, though {CHECKPOINT} is at epoch {start}",
                              hint=RESUME_HINT)
        rows = [(line, row) for line, row in (read_metrics(path, ("epoch", "test_error"), RESUME_HINT)
                                               if path.exists() else []) if row["epoch"] <= start]
        for expected, (line, row) in enumerate(rows, 1):
            if row["epoch"] != expected:
                raise DamagedFile(path, f"epoch {row['epoch']} stands where epoch {expected} should", line,
                                  hint=RESUME_HINT)
        if len(rows) < start:
            raise DamagedFile(path, f"has no row for epoch {len(rows) + 1}, though {CHECKPOINT} is at "
                                    f"epoch {start}", hint=RESUME_HINT)
        return [row for _, row in rows]

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
        start = _resume(checkpoint, device, recipe.epochs, module, optimizer, schedule)
        rows = run.resumed_rows(start)

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


def _resume(path: Path, device, epochs: int, module, optimizer, schedule) -> int:
    """Load a checkpoint into the fresh module, optimizer and schedule; the epoch it stands at."""
    state = _read_checkpoint(path, device, epochs)
    fresh_groups = optimizer.state_dict()["param_groups"]
    # torch takes any keys and values into a schedule (its __dict__) or an optimizer's groups and
    # fails only mid-training, so they are checked against fresh ones.
    _conforms(path, "schedule", state["schedule"], schedule.state_dict(), schedule)
    try:
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a mismatched state
        raise ResdslError(f"cannot resume from {printable(str(path))} ({type(exc).__name__})",
                          hint="delete it to start over, or use a new --out") from None
    for group, fresh in zip(optimizer.param_groups, fresh_groups):
        _conforms(path, "optimizer", {k: v for k, v in group.items() if k != "params"},
                  {k: v for k, v in fresh.items() if k != "params"})
        for param in group["params"]:
            _check_momentum(path, optimizer.state.get(param, {}), param)
    return state["epoch"]


def _read_checkpoint(path: Path, device, epochs: int) -> dict:
    """checkpoint.pt through torch's weights-only unpickler: tensors, numbers and containers, no code."""
    state = load_torch(path, what="checkpoint", hint=RESUME_HINT, map_location=device)
    if not isinstance(state, dict):
        raise DamagedFile(path, f"holds {described(state)}, not the dict resdsl writes", hint=RESUME_HINT)
    for key in ("model", "optimizer", "schedule"):
        if not isinstance(state.get(key), dict):
            raise DamagedFile(path, f"`{key}` is {described(state.get(key))}, not a state dict",
                              hint=RESUME_HINT)
    epoch = state.get("epoch")
    if type(epoch) is not int or not 0 <= epoch <= epochs:
        raise DamagedFile(path, f"`epoch` is {described(epoch)}, not an epoch from 0 to {epochs}",
                          hint=RESUME_HINT)
    return state


def _kind(value) -> str:
    """What a setting is, as far as training cares: ints and floats alike are numbers."""
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (list, tuple)):
        return "numbers" if all(_kind(v) == "number" for v in value) else "list"
    if isinstance(value, dict):
        return "table" if all(_kind(k) == _kind(v) == "number" for k, v in value.items()) else "dict"
    return type(value).__name__


def _conforms(path: Path, what: str, loaded: dict, fresh: dict, owner=None) -> None:
    """Each of `loaded`'s settings that a fresh one has is of the same kind; one it lacks may not
    replace an attribute of `owner` (a schedule loads its state into its __dict__). Others are
    let be: another torch version may write a setting this one does not know."""
    for key, value in loaded.items():
        if key not in fresh:
            if isinstance(key, str) and hasattr(owner, key):
                raise DamagedFile(path, f"the {what} would replace its `{brief(key)}`", hint=RESUME_HINT)
            continue
        if _kind(value) != _kind(fresh[key]):
            raise DamagedFile(path, f"the {what}'s `{key}` is {described(value)}, not what resdsl writes",
                              hint=RESUME_HINT)


def _check_momentum(path: Path, state, param) -> None:
    import torch
    buffer = state.get("momentum_buffer") if isinstance(state, dict) else state
    if buffer is not None and not (isinstance(buffer, torch.Tensor) and buffer.shape == param.shape):
        raise DamagedFile(path, f"the optimizer holds {described(buffer)} where a momentum of shape "
                                f"{tuple(param.shape)} should be", hint=RESUME_HINT)


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
