"""`train` and `plot`: training runs and their error curves."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from .app import app
from .display import training_display
from .options import load, spec_argument


@app.command()
@spec_argument
@click.option(
    "--data",
    required=True,
    help="cifar10 or cifar100 (downloaded once into $RESDSL_DATA_DIR, default ~/.cache/resdsl/data), "
         "cifar10:DIR or cifar100:DIR (python-version batches), folder:DIR (DIR/train|test/CLASS/*, "
         "streamed from disk) or digits",
)
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="the run directory: config.json, metrics.jsonl/.csv, TensorBoard events, checkpoint.pt, "
                   "best.pt, final.pt; rerun to resume")
@click.option("--epochs", type=click.IntRange(1, 100000),
              help="default: 164 for CIFAR (the paper's 64k iterations at batch 128), 30 for digits; "
                   "a larger one extends a run")
@click.option("--batch", type=click.IntRange(1, 65536), default=128, show_default=True,
              help="the global batch: under torchrun it is split over the processes")
@click.option("--lr", type=click.FloatRange(0, 10, min_open=True),
              help="the peak learning rate (default: 0.1 for sgd, 1e-3 for adamw)")
@click.option("--schedule", type=click.Choice(["step", "cosine"]), default="step", show_default=True,
              help="step: divided by 10 at 50% and 75% of the iterations (the paper's); cosine: per "
                   "iteration from --lr to 0 (timm's)")
@click.option("--warmup-epochs", type=click.IntRange(0, 100000), default=0, show_default=True,
              help="rise linearly from ~0 to --lr over this many epochs, per iteration, before the schedule")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="sgd", show_default=True)
@click.option("--momentum", type=click.FloatRange(0, 1), help="SGD's only (default 0.9)")
@click.option("--weight-decay", type=click.FloatRange(0, 1),
              help="default: 1e-4 for sgd (the paper's), 0.05 for adamw (timm's)")
@click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="of the training loss (timm's recipes use 0.1); test loss is plain cross-entropy")
@click.option("--amp", type=click.Choice(["bf16", "fp16"]),
              help="mixed precision (default: off, float32): bf16 on CPU or CUDA, fp16 with a gradient "
                   "scaler on CUDA only")
@click.option("--init", "init", type=click.Path(path_type=Path), metavar="WEIGHTS",
              help="start from this state_dict (another run's final.pt or best.pt) instead of the seeded "
                   "init; a classifier head for another class count is re-initialised")
@click.option("--augment/--no-augment", default=None,
              help="4-pixel padding, random crop, horizontal flip (default: on for CIFAR, off for digits)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, or cuda where a GPU exists")
@click.option("--workers", type=click.IntRange(0, 256), default=2, show_default=True,
              help="processes decoding folder: images (0: in the training process); "
                   "results do not depend on it")
def train(spec: Path, data: str, out: Path, epochs: int | None, batch: int, lr: float | None, schedule: str,
          warmup_epochs: int, optimizer: str, momentum: float | None, weight_decay: float | None,
          label_smoothing: float, amp: str | None, init: Path | None, augment: bool | None, seed: int,
          device: str, workers: int) -> None:
    """Train a spec on a dataset, by default with the paper's recipe; resumable, with metrics per epoch.

    Rerun with the same --out to resume, or with a larger --epochs to extend a run (its schedule is
    recomputed for the new total). Under `torchrun --nproc-per-node N -m resdsl train ...` it trains
    data-parallel (gloo on CPU, NCCL with --device cuda)."""
    net = load(spec)
    from ..extras import require
    require("train", "tensorboardX", purpose="resdsl train's TensorBoard log")
    from ..files import read_source
    from ..training.sources import load_dataset
    from ..training.distributed import World
    from ..training.loop import train as train_loop
    from ..training.recipe import Recipe
    world = World.from_env()
    recipe = Recipe(epochs=epochs or 0, batch=batch, lr=lr, momentum=momentum, weight_decay=weight_decay,
                    optimizer=optimizer, schedule=schedule, warmup_epochs=warmup_epochs,
                    label_smoothing=label_smoothing, amp=amp, init=init and str(init), seed=seed,
                    device=device)  # checked before the data is read
    dataset = load_dataset(data, stream=True)
    cifar = dataset.name.startswith("cifar")
    from dataclasses import replace
    recipe = replace(recipe, epochs=epochs or (164 if cifar else 30),
                     augment=cifar if augment is None else augment)

    def epoch_line(row: dict) -> None:
        print(
            f"epoch {row['epoch']}/{recipe.epochs}: train loss {row['train_loss']:.3f} error "
            f"{100 * row['train_error']:.2f}%, test error {100 * row['test_error']:.2f}%, "
            f"lr {row['lr']:.3g}, "
            f"{row['images_per_s']:.0f} images/s",
            file=sys.stderr,
            flush=True,
        )

    def note(message: str) -> None:
        print(f"note: {message}", file=sys.stderr, flush=True)
    if not world.leader:  # the leader speaks for the run
        train_loop(net, read_source(spec), str(spec), dataset, data, out, recipe, world=world,
                   workers=workers)
        return
    with training_display(net.name, recipe.epochs) as (on_batch, on_epoch):
        rows = train_loop(net, read_source(spec), str(spec), dataset, data, out, recipe, on_batch,
                          lambda row: (on_epoch(row), epoch_line(row)), world, note, workers)
    last = rows[-1] if rows else None
    print(f"wrote {out / 'final.pt'}" + (f"; test error {100 * last['test_error']:.2f}%" if last else ""),
          file=sys.stderr)


@app.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="FILE.png, .svg or .pdf")
def plot(runs: tuple[Path, ...], output: Path) -> None:
    """Training (dashed) and test (solid) error of training runs against iterations, as in the paper."""
    from ..extras import require
    require("train", "matplotlib", purpose="resdsl plot")
    from ..training.plot import plot_runs
    plot_runs(list(runs), output)
    print(f"wrote {output}", file=sys.stderr)
