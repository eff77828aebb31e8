"""checkpoint.pt, as `train` resumes from it: a file that may come from elsewhere, so every field is
checked against what a fresh model, optimizer and schedule hold before any of it is used."""
from __future__ import annotations

from pathlib import Path

from ..files import DamagedFile, brief, load_torch
from .data import described

CHECKPOINT = "checkpoint.pt"
RESUME_HINT = f"delete {CHECKPOINT} and metrics.jsonl to train from the start, or use a new --out"


def fraction(value) -> bool:
    return type(value) in (int, float) and 0 <= value <= 1  # NaN fails the comparison


def read_checkpoint(path: Path, device, epochs: int) -> dict:
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
    best = state.get("best")  # absent in checkpoints written before best.pt
    if best is not None and not (isinstance(best, dict) and type(best.get("epoch")) is int
                                 and 1 <= best["epoch"] <= epoch and fraction(best.get("test_error"))):
        raise DamagedFile(path, f"`best` is {described(best)}, not an epoch and its test error",
                          hint=RESUME_HINT)
    return state


def kind(value) -> str:
    """What a setting is, as far as training cares: ints and floats alike are numbers."""
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (list, tuple)):
        return "numbers" if all(kind(v) == "number" for v in value) else "list"
    if isinstance(value, dict):
        return "table" if all(kind(k) == kind(v) == "number" for k, v in value.items()) else "dict"
    return type(value).__name__


def conforms(path: Path, what: str, loaded: dict, fresh: dict, owner=None) -> None:
    """Each of `loaded`'s settings that a fresh one has is of the same kind; one it lacks may not
    replace an attribute of `owner` (a schedule loads its state into its __dict__). Others are
    let be: another torch version may write a setting this one does not know."""
    for key, value in loaded.items():
        if key not in fresh:
            if isinstance(key, str) and hasattr(owner, key):
                raise DamagedFile(path, f"the {what} would replace its `{brief(key)}`", hint=RESUME_HINT)
            continue
        if kind(value) != kind(fresh[key]):
            raise DamagedFile(path, f"the {what}'s `{key}` is {described(value)}, not what resdsl writes",
                              hint=RESUME_HINT)


# What each optimizer keeps per parameter, shaped like it (AdamW's `step` is a count).
MOMENTS = {"momentum_buffer": "a momentum", "exp_avg": "AdamW's first moment",
           "exp_avg_sq": "AdamW's second moment"}


def check_moments(path: Path, state, param) -> None:
    import torch
    if not isinstance(state, dict):
        state = {"momentum_buffer": state}
    for key, meaning in MOMENTS.items():
        buffer = state.get(key)
        if buffer is not None and not (isinstance(buffer, torch.Tensor) and buffer.shape == param.shape):
            raise DamagedFile(path, f"the optimizer holds {described(buffer)} where {meaning} of shape "
                                    f"{tuple(param.shape)} should be", hint=RESUME_HINT)
