"""One epoch of training and its test pass: the data drawn batch by batch on the device, every
draw seeded by (seed, epoch), and the row of metrics the epoch ends with."""
from __future__ import annotations

import math
import time
from collections.abc import Callable

from ..diagnostics import ResdslError
from .data import Dataset, augment, crop_flip, normalizer
from .distributed import World
from .recipe import Precision, Recipe


class Epochs:
    """The data as the loop draws it, normalized on `device`: the training set in `per_epoch`
    batches of `recipe.batch` images (each process trains on its shard), the test set in shards
    of 500 split over the processes."""

    def __init__(self, data: Dataset, recipe: Recipe, world: World, device, precision: Precision,
                 workers: int) -> None:
        import torch
        self.data, self.recipe, self.world, self.device = data, recipe, world, device
        self.precision, self.workers = precision, workers
        self.mean, self.std = (torch.from_numpy(v)[None, :, None, None].to(device)
                               for v in normalizer(data, workers))
        self.train_y, self.test_y = torch.from_numpy(data.train_y), torch.from_numpy(data.test_y)
        test_shard = world.shard(torch.arange(len(self.test_y)))
        self.test_batches = [test_shard[i:i + 500] for i in range(0, len(test_shard), 500)]
        n = len(self.train_y)
        # A last batch too small to give every process an image is dropped (only ever in a distributed run).
        self.per_epoch = n // recipe.batch + (n % recipe.batch >= world.size)
        self.seen = min(n, self.per_epoch * recipe.batch)
        self.total = self.per_epoch * recipe.epochs

    def train(self, model, optimizer, schedule, epoch: int, start: int,
              on_batch: Callable[[int, int, float], None] | None) -> tuple[float, float, list[float], float]:
        """Train `model` for `epoch` (the run resumed at `start`): summed loss and number wrong
        over every process, the rate of each step, and the seconds it took."""
        import torch
        recipe, world = self.recipe, self.world
        # Every draw of this epoch comes from generators seeded by (seed, epoch): a resumed run
        # shuffles, augments and drops out exactly as an uninterrupted one. Shuffling and
        # augmentation are drawn for whole batches, the same in every process; dropout differs
        # per process.
        g = torch.Generator().manual_seed(recipe.seed * 1_000_003 + epoch)
        torch.manual_seed((recipe.seed * 1_000_003 + epoch) * 65_537 + world.rank)
        order = torch.randperm(len(self.train_y), generator=g)
        model.train()
        began = time.perf_counter()
        loss_sum = wrong = 0.0
        rates = []
        batches = [order[i * recipe.batch:(i + 1) * recipe.batch] for i in range(self.per_epoch)]
        # Images come batch by batch (an image folder is decoded by `workers` processes
        # meanwhile); the draws below still follow the batches in order.
        images = self.data.images("train", (world.shard(batch) for batch in batches), self.workers)
        for i, (batch, x) in enumerate(zip(batches, images)):
            idx = world.shard(batch)
            if recipe.augment:
                x = augment(x, [world.shard(d) for d in crop_flip(len(batch), g)])
            batch_loss, batch_wrong = self._step(model, optimizer, schedule, x, idx, len(batch), rates,
                                                 (epoch, i, start))
            loss_sum += batch_loss
            wrong += batch_wrong
            if on_batch:
                on_batch(epoch, i + 1, batch_loss / len(batch))
        return loss_sum, wrong, rates, time.perf_counter() - began

    def _step(self, model, optimizer, schedule, x, idx, size: int, rates: list[float],
              where: tuple[int, int, int]) -> list[float]:
        """One optimizer step on this process's shard `idx` of a batch of `size` images: the
        batch's summed loss and number wrong over every process."""
        import torch.nn.functional as F
        world, device, precision = self.world, self.device, self.precision
        x, y = ((x.to(device) - self.mean) / self.std), self.train_y[idx].to(device)
        with precision.autocast():
            logits = model(x)
        # The shard's share of the batch mean; DDP averages over the processes.
        loss = F.cross_entropy(logits.float(), y, reduction="sum",
                               label_smoothing=self.recipe.label_smoothing) * (world.size / size)
        batch_loss, batch_wrong = world.sum(
            [loss.item() * size / world.size, (logits.argmax(1) != y).sum().item()], device)
        if not math.isfinite(batch_loss):  # every process sees the sum, so all stop together
            epoch, i, start = where
            raise ResdslError(
                f"the loss became {batch_loss / size} at epoch {epoch}, iteration {i + 1}; the "
                f"last good checkpoint (epoch {start if epoch == start + 1 else epoch - 1}) is kept",
                hint="lower --lr, or check the data",
            )
        optimizer.zero_grad(set_to_none=True)
        rates.append(optimizer.param_groups[0]["lr"])
        precision.step(loss, optimizer)
        schedule.step()
        return [batch_loss, batch_wrong]

    def test(self, module) -> list[float]:
        """The test pass: summed loss, number wrong and number of images, over every process."""
        device = self.device
        self.world.share_buffers(module)
        test_images = ((x.to(device) - self.mean) / self.std
                       for x in self.data.images("test", self.test_batches, self.workers))
        return self.world.sum(
            evaluate(module, test_images, [self.test_y[b].to(device) for b in self.test_batches], self.precision),
            device)

    def row(self, epoch: int, trained: tuple[float, float, list[float], float], tested: list[float]) -> dict:
        """The epoch's line of metrics.jsonl, from what `train` and `test` returned."""
        loss_sum, wrong, rates, seconds = trained
        test_loss, test_wrong, tested_images = tested
        seen = self.seen
        return {
            "epoch": epoch,
            "iteration": epoch * self.per_epoch,
            "train_loss": loss_sum / seen,
            "train_error": wrong / seen,
            "test_loss": test_loss / max(tested_images, 1),
            "test_error": test_wrong / max(tested_images, 1),
            "lr": rates[-1],
            "lr_first": rates[0],
            "images_per_s": seen / seconds,
            "wall_s": seconds,
            "processes": self.world.size,
        }


def evaluate(model, images, labels: list, precision: Precision) -> list[float]:
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
