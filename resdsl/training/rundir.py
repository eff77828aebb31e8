"""A training run's directory (`--out`): what was trained, how far it got, and its metrics. It
holds
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

A run directory may come from elsewhere (copied, downloaded, tampered with), so nothing here
trusts it: each file is read bounded (files.py) and every field is checked before use.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..diagnostics import ResdslError, printable
from ..files import DamagedFile, brief, json_lines, read_json
from ..output import write_atomic
from .checkpoint import CHECKPOINT, RESUME_HINT, fraction
from .data import described
from .logs import write_csv
from .recipe import UNRECORDED

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
