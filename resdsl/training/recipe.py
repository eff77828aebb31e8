"""What a run trains with: the settings (`Recipe`), and the optimizer, learning-rate schedule and
mixed precision they make.

The paper's recipe is the default; every other choice is timm's meaning of its train.py flag:
    schedule   step: the rate divided by 10 at 50% and 75% of the iterations (the paper's).
               cosine: per iteration, lr * (1 + cos(pi * i / total)) / 2, from lr to 0 (timm's, with
               warmup_prefix off: warmup replaces the first part of the curve, it does not shift it)
    warmup     the first warmup_epochs * iterations-per-epoch steps rise linearly, step i taking
               lr * (i + 1) / warmup, for either schedule
    optimizer  sgd (momentum 0.9, weight decay 1e-4, lr 0.1) or adamw (timm's lr 1e-3, weight decay
               0.05); a setting left as None takes its optimizer's default
    amp        bf16 (autocast on CPU or CUDA) or fp16 (CUDA only, with a GradScaler)
Every function of the iteration is closed-form, so a run extended to more epochs recomputes its
schedule for the new total and carries on from the iteration it stands at.
"""
from __future__ import annotations

import contextlib
import math
from collections import Counter
from dataclasses import dataclass, fields

from ..diagnostics import ResdslError

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "cosine")
PRECISIONS = ("bf16", "fp16")
# What each optimizer takes when the user gives no --lr / --weight-decay / --momentum.
DEFAULTS = {"sgd": {"lr": 0.1, "weight_decay": 1e-4, "momentum": 0.9},
            "adamw": {"lr": 1e-3, "weight_decay": 0.05, "momentum": None}}


@dataclass(frozen=True)
class Recipe:
    """He et al. 2015, Sec. 4.2, by default: SGD, momentum 0.9, weight decay 1e-4, batch 128,
    learning rate 0.1 divided by 10 at 50% and 75% of training (32k and 48k of 64k iterations).
    `init` is a state_dict file to start from (fine-tuning) instead of the seeded initialisation."""
    epochs: int
    batch: int = 128
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    milestones: tuple[float, ...] = (0.5, 0.75)
    augment: bool = True
    seed: int = 0
    device: str = "cpu"
    optimizer: str = "sgd"
    schedule: str = "step"
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    amp: str | None = None
    init: str | None = None

    def __post_init__(self) -> None:
        for name, value, allowed in (("optimizer", self.optimizer, OPTIMIZERS),
                                     ("schedule", self.schedule, SCHEDULES),
                                     ("amp", self.amp, (None, *PRECISIONS))):
            if value not in allowed:
                raise ResdslError(f"unknown {name} `{value}`",
                                  hint="use one of " + ", ".join(str(a) for a in allowed if a))
        if self.optimizer != "sgd" and self.momentum is not None:
            raise ResdslError(f"--momentum is SGD's; {self.optimizer} has none",
                              hint="leave out --momentum, or use --optimizer sgd")
        if not 0 <= self.label_smoothing < 1:
            raise ResdslError(f"label smoothing {self.label_smoothing} is not in [0, 1)",
                              hint="0 is none; timm's recipes use 0.1")
        for key, value in DEFAULTS[self.optimizer].items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)


# What a config.json written before a setting existed meant by leaving it out.
UNRECORDED = {f.name: f.default for f in fields(Recipe) if f.name in
              ("optimizer", "schedule", "warmup_epochs", "label_smoothing", "amp", "init")}


def make_optimizer(module, recipe: Recipe):
    import torch
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(module.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(module.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                           weight_decay=recipe.weight_decay)


def milestones(recipe: Recipe, total: int) -> list[int]:
    return [int(total * m) for m in recipe.milestones]


def lr_factor(recipe: Recipe, i: int, total: int, per_epoch: int) -> float:
    """The fraction of --lr that optimizer step `i` (0-based, of `total`) takes."""
    warmup = recipe.warmup_epochs * per_epoch
    if i < warmup:
        return (i + 1) / warmup
    if recipe.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * i / total))
    return 0.1 ** sum(i >= m for m in milestones(recipe, total))


def make_schedule(optimizer, recipe: Recipe, total: int, per_epoch: int):
    """Stepped every iteration, as the paper counts. The paper's recipe keeps torch's MultiStepLR
    (so its checkpoints and rates are what they always were); every other one is a LambdaLR of
    the closed form."""
    import torch
    if recipe.schedule == "step" and not recipe.warmup_epochs:
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones(recipe, total), gamma=0.1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_factor(recipe, i, total, per_epoch))


def retarget(schedule, optimizer, recipe: Recipe, done: int, total: int, per_epoch: int) -> None:
    """After loading a checkpoint, give step `done` the rate of this run's total: the same rate
    unless the run was extended. A LambdaLR's factor is not saved (a function), and MultiStepLR's
    saved milestones are those of the old total; both are replaced here."""
    import torch
    if isinstance(schedule, torch.optim.lr_scheduler.MultiStepLR):
        fresh = Counter(milestones(recipe, total))
        if schedule.milestones == fresh:
            return  # the chained rates as saved, bit for bit
        schedule.milestones = fresh
    rates = [base * lr_factor(recipe, done, total, per_epoch) for base in schedule.base_lrs]
    for group, rate in zip(optimizer.param_groups, rates):
        group["lr"] = rate
    schedule._last_lr = rates


class Precision:
    """Autocast for the forward pass, and fp16's GradScaler (bf16 has float32's range: no scaler)."""

    def __init__(self, amp: str | None, device) -> None:
        import torch
        if amp == "fp16" and device.type != "cuda":
            raise ResdslError("--amp fp16 needs --device cuda: CPUs autocast to bfloat16 only",
                              hint="use --amp bf16 on CPU")
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None

    def autocast(self):
        import torch
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def step(self, loss, optimizer) -> None:
        """Backward and one optimizer step."""
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()
