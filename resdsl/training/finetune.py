"""`--init WEIGHTS`: start training from another run's state_dict (fine-tuning).

The file is someone else's, so it is read as `compile --weights` reads one (backends/weights.py:
bounded, torch's weights-only unpickler, every key checked). One difference is allowed: a
classifier head trained for another number of classes keeps this network's fresh, seeded head,
as timm's `pretrained` loading does when num_classes differs; the run says so.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from ..backends.weights import check_state, read_state
from ..files import open_bytes


def init_record(path: str) -> dict:
    """What config.json keeps of --init, so a resume with another file is refused."""
    data = open_bytes(path, "max_weights_bytes", what="weights file",
                      missing_hint="check the path; `resdsl train` writes RUN/final.pt").getbuffer()
    return {"path": path, "sha256": hashlib.sha256(data).hexdigest()}


def load_init(graph, module, path: str, note: Callable[[str], None]) -> None:
    """Load the file's weights into `module`, keeping its own head where the class counts differ."""
    import torch
    state = read_state(path)
    fresh = module.state_dict()
    if isinstance(state, dict):
        state = dict(state)
        head = _other_head(graph, state, fresh)
        if head:
            theirs = len(state[f"{head}.weight"])
            note(f"--init {path}: `{head}` classifies {theirs} classes there, {graph.classes} here; "
                 f"it is re-initialised (seed) and every other layer loaded")
            for key in (f"{head}.weight", f"{head}.bias"):
                state[key] = fresh[key]
    weights = check_state(graph, state, Path(path))
    module.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)


def _other_head(graph, state: dict, fresh: dict) -> str | None:
    """The network's last fc, where the file holds it for another class count and otherwise fits."""
    import torch
    head = graph.output
    if graph.node(head).op != "fc":
        return None
    weight, bias = state.get(f"{head}.weight"), state.get(f"{head}.bias")
    if not (isinstance(weight, torch.Tensor) and isinstance(bias, torch.Tensor)
            and weight.dim() == 2 and bias.dim() == 1 and len(weight) == len(bias)):
        return None  # check_state names what is wrong
    same_inputs = weight.shape[1] == fresh[f"{head}.weight"].shape[1]
    return head if same_inputs and len(weight) != graph.classes else None
