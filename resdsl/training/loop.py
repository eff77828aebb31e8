"""Training a spec's module: a recipe (recipe.py; the paper's by default), a run directory that
resumes, metrics per epoch.

The run directory (`--out`) holds
    config.json     the network, the spec's text and hash, the data, every setting and the seed
                    (`recipe`; `--init` as its path and sha256), and `extended`: each growth of
                    --epochs ({"from": 30, "to": 60})
    metrics.jsonl   one line per epoch, with these columns:
                        epoch, iteration    the epoch, and the iterations done at its end
                        train_loss          mean loss of its training batches (label smoothing in)
                        train_error         of those batches as trained (train mode)
                        test_loss           mean plain cross-entropy over the test set
                        test_error          over the test set (eval mode)
                        lr, lr_first        the rate of the epoch's last and first optimizer step
                        images_per_s        training images a second, without the test pass
                        wall_s              seconds of training, without the test pass
                        processes           how many trained it (torchrun)
    metrics.csv, events.out.tfevents.*  the same rows for spreadsheets and TensorBoard (logs.py)
    checkpoint.pt   model, optimizer, schedule, best epoch, RNG state after the last finished epoch (atomic)
    best.pt         the state_dict of the epoch of lowest test error so far (the first of equals)
    final.pt        the trained state_dict, which `resdsl compile --weights` takes for every target
Rerun with the same `--out` and it resumes from the checkpoint; every random draw (init, shuffling,
augmentation, dropout) is seeded per epoch, so a resumed run ends with the same metrics as one never
interrupted. A rerun with a larger --epochs extends the run: the schedule is recomputed for the new
total from the iteration the checkpoint stands at (recipe.retarget). Under torchrun the same loop
runs data-parallel (distributed.py); only the leader writes.

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
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from ..diagnostics import ResdslError, printable
from ..files import DamagedFile, brief, json_lines, read_json
from ..output import write_atomic
from .checkpoint import CHECKPOINT, RESUME_HINT, check_moments, conforms, fraction, read_checkpoint
from .data import Dataset, augment, crop_flip, described, fit, normalizer
from .distributed import World
from .finetune import init_record, load_init
from .logs import TensorBoard, write_csv
from .recipe import UNRECORDED, Precision, Recipe, make_optimizer, make_schedule, retarget

__all__ = ["Recipe", "Run", "train"]

CONFIG, METRICS, FINAL, BEST = "config.json", "metrics.jsonl", "final.pt", "best.pt"

# What config.json holds, as `train` writes it.
CONFIG_FIELDS: dict[str, type] = {"network": str, "spec_file": str, "spec": str, "spec_sha256": str,
                                  "data": str, "recipe": dict}


# The fields of a metrics row that resdsl reads back, and what each must be.
ROW_FIELDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "epoch": (lambda v: type(v) is int and v >= 1, "an epoch number (1, 2, ...)"),
    "iteration": (lambda v: type(v) is int and 0 <= v <= 1 << 53, "a count of iterations"),
    "train_error": (fraction, "an error rate from 0 to 1"),
    "test_error": (fraction, "an error rate from 0 to 1"),
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


class Run:
    """A run directory: what was trained, how far it got, and where to write."""

    def __init__(self, out: Path) -> None:
        self.out = out
        if out.exists() and not out.is_dir():
            raise ResdslError(f"--out {printable(str(out))} is a file, not a run directory",
                              hint="give a directory (it is created if missing)")

    def start(self, config: dict, write: bool = True) -> None:
        """Check a rerun is the same training (same spec, data and settings, or only more epochs),
        or begin a new one (where `write`: the other processes of a distributed run only check)."""
        path = self.out / CONFIG
        if path.exists():
            self._rerun(read_config(path, hint="use a new --out"), config, write)
            return
        if not write:
            return
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ResdslError(f"cannot create {printable(str(self.out))}: {exc.strerror}",
                              hint="choose a --out you can write") from None
        write_atomic(path, json.dumps(config, indent=1) + "\n")

    def _rerun(self, old: dict, config: dict, write: bool) -> None:
        if old["spec_sha256"] != config["spec_sha256"]:
            raise ResdslError(
                f"{printable(str(self.out))} holds a run of `{brief(old['network'])}` "
                f"({brief(old['spec_file'])}), not of `{config['network']}` ({config['spec_file']})",
                hint="use another --out for another spec",
            )
        # A setting the run's config.json predates is the default it trained with.
        had = {**UNRECORDED, **old["recipe"]}
        wants = json.loads(json.dumps(config["recipe"]))  # as stored: tuples are lists
        # `--set` changes the network the spec's text describes; a config.json from before it was
        # recorded had none.
        for key, same in (("data", old["data"] == config["data"]),
                          ("--set", old.get("overrides", {}) == config["overrides"]),
                          ("recipe", _without_epochs(had) == _without_epochs(wants))):
            if not same:
                raise ResdslError(
                    f"{printable(str(self.out))} was trained with other {key} settings: "
                    f"{brief(json.dumps(old.get(key if key != '--set' else 'overrides', {})), 200)}",
                    hint="rerun with the same settings (only --epochs may grow), or a new --out",
                )
        planned, epochs = had.get("epochs"), wants["epochs"]
        if type(planned) is not int:
            raise DamagedFile(self.out / CONFIG, f"`recipe.epochs` is {described(planned)}, not a count",
                              hint="use a new --out")
        if epochs < planned:
            raise ResdslError(f"{printable(str(self.out))} is a run of {planned} epochs; --epochs {epochs} "
                              f"would shorten it", hint=f"give --epochs {planned} or more to resume or extend "
                                                        f"it, or a new --out")
        extended = old.get("extended", [])
        if not isinstance(extended, list):
            raise DamagedFile(self.out / CONFIG, f"`extended` is {described(extended)}, not a list",
                              hint="use a new --out")
        if epochs > planned and write:
            config = {**old, "recipe": wants, "extended": [*extended, {"from": planned, "to": epochs}]}
            write_atomic(self.out / CONFIG, json.dumps(config, indent=1) + "\n")

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
        write_csv(self.out, rows)


def _without_epochs(recipe: dict) -> dict:
    return {k: v for k, v in recipe.items() if k != "epochs"}


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
    import torch.nn.functional as F

    torch.manual_seed(recipe.seed)
    module = net.to_torch(seed=recipe.seed)
    checkpoint = out / CHECKPOINT
    if recipe.init and not checkpoint.exists():
        load_init(net.graph, module, recipe.init, note)
    module = module.to(device)
    mean, std = (torch.from_numpy(v)[None, :, None, None].to(device) for v in normalizer(data, workers))
    train_y, test_y = torch.from_numpy(data.train_y), torch.from_numpy(data.test_y)
    test_shard = world.shard(torch.arange(len(test_y)))
    test_batches = [test_shard[i:i + 500] for i in range(0, len(test_shard), 500)]
    n = len(train_y)
    # A last batch too small to give every process an image is dropped (only ever in a distributed run).
    per_epoch = n // recipe.batch + (n % recipe.batch >= world.size)
    seen = min(n, per_epoch * recipe.batch)
    total = per_epoch * recipe.epochs
    optimizer = make_optimizer(module, recipe)
    schedule = make_schedule(optimizer, recipe, total, per_epoch)

    start, rows, best = 0, [], None
    if checkpoint.exists():
        start, best = _resume(checkpoint, device, recipe.epochs, module, optimizer, schedule, precision)
        retarget(schedule, optimizer, recipe, start * per_epoch, total, per_epoch)
        rows = run.resumed_rows(start)
        best = best or _best(rows)
    board = TensorBoard(out, rows) if world.leader and start < recipe.epochs else None

    model = world.wrap(module, device)
    try:
        for epoch in range(start + 1, recipe.epochs + 1):
            # Every draw of this epoch comes from generators seeded by (seed, epoch): a resumed run
            # shuffles, augments and drops out exactly as an uninterrupted one. Shuffling and
            # augmentation are drawn for whole batches, the same in every process; dropout differs
            # per process.
            g = torch.Generator().manual_seed(recipe.seed * 1_000_003 + epoch)
            torch.manual_seed((recipe.seed * 1_000_003 + epoch) * 65_537 + world.rank)
            order = torch.randperm(n, generator=g)
            model.train()
            began = time.perf_counter()
            loss_sum = wrong = 0.0
            rates = []
            batches = [order[i * recipe.batch:(i + 1) * recipe.batch] for i in range(per_epoch)]
            # Images come batch by batch (an image folder is decoded by `workers` processes
            # meanwhile); the draws below still follow the batches in order.
            images = data.images("train", (world.shard(batch) for batch in batches), workers)
            for i, (batch, x) in enumerate(zip(batches, images)):
                idx = world.shard(batch)
                if recipe.augment:
                    x = augment(x, [world.shard(d) for d in crop_flip(len(batch), g)])
                x, y = ((x.to(device) - mean) / std), train_y[idx].to(device)
                with precision.autocast():
                    logits = model(x)
                # The shard's share of the batch mean; DDP averages over the processes.
                loss = F.cross_entropy(logits.float(), y, reduction="sum",
                                       label_smoothing=recipe.label_smoothing) * (world.size / len(batch))
                batch_loss, batch_wrong = world.sum(
                    [loss.item() * len(batch) / world.size, (logits.argmax(1) != y).sum().item()], device)
                if not math.isfinite(batch_loss):  # every process sees the sum, so all stop together
                    raise ResdslError(
                        f"the loss became {batch_loss / len(batch)} at epoch {epoch}, iteration {i + 1}; the "
                        f"last good checkpoint (epoch {start if epoch == start + 1 else epoch - 1}) is kept",
                        hint="lower --lr, or check the data",
                    )
                optimizer.zero_grad(set_to_none=True)
                rates.append(optimizer.param_groups[0]["lr"])
                precision.step(loss, optimizer)
                schedule.step()
                loss_sum += batch_loss
                wrong += batch_wrong
                if on_batch:
                    on_batch(epoch, i + 1, batch_loss / len(batch))
            seconds = time.perf_counter() - began
            world.share_buffers(module)
            test_images = ((x.to(device) - mean) / std for x in data.images("test", test_batches, workers))
            test_loss, test_wrong, tested = world.sum(
                _evaluate(module, test_images, [test_y[b].to(device) for b in test_batches], precision), device)
            row = {
                "epoch": epoch,
                "iteration": epoch * per_epoch,
                "train_loss": loss_sum / seen,
                "train_error": wrong / seen,
                "test_loss": test_loss / max(tested, 1),
                "test_error": test_wrong / max(tested, 1),
                "lr": rates[-1],
                "lr_first": rates[0],
                "images_per_s": seen / seconds,
                "wall_s": seconds,
                "processes": world.size,
            }
            rows.append(row)
            improved = best is None or row["test_error"] < best["test_error"]
            best = {"epoch": epoch, "test_error": row["test_error"]} if improved else best
            if world.leader:
                state = {"model": module.state_dict(), "optimizer": optimizer.state_dict(),
                         "schedule": schedule.state_dict(), "epoch": epoch, "best": best}
                if precision.scaler:
                    state["scaler"] = precision.scaler.state_dict()
                run.save_metrics(rows)  # metrics first: a kill between the writes repeats this epoch
                board.add(row)
                if improved:
                    _save(out / BEST, module.state_dict())
                _save(checkpoint, state)
            if on_epoch:
                on_epoch(row)
    finally:
        if board:
            board.close()
    if world.leader:
        _save(out / FINAL, module.state_dict())
    return rows


def _save(path: Path, state) -> None:
    import torch
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(path, buffer.getvalue())


def _best(rows: list[dict]) -> dict | None:
    """The epoch of lowest test error (the first of equals), for a checkpoint that predates `best`."""
    if not rows:
        return None
    row = min(rows, key=lambda r: (r["test_error"], r["epoch"]))
    return {"epoch": row["epoch"], "test_error": row["test_error"]}


def _resume(path: Path, device, epochs: int, module, optimizer, schedule,
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


def _evaluate(model, images, labels: list, precision: Precision) -> list[float]:
    """Summed loss, number wrong and number of images over the batches: sums, so processes can
    add theirs."""
    import torch
    import torch.nn.functional as F
    model.eval()
    loss = wrong = 0.0
    with torch.no_grad():
        for x, y in zip(images, labels):
            with precision.autocast():
                logits = model(x)
            loss += F.cross_entropy(logits.float(), y, reduction="sum").item()
            wrong += (logits.argmax(1) != y).sum().item()
    return [loss, wrong, float(sum(len(y) for y in labels))]
