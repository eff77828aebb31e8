"""Data-parallel training under torchrun: one process per device, each on its share of every batch.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (and where to meet); without them a run is one process
and nothing here talks to anyone. The batch stays the *global* batch: every process draws the same
shuffled order from the seed, and rank r takes positions r, r+W, r+2W, ... of each batch -- what
torch's DistributedSampler does to a whole epoch, applied per batch so that the union of the shards is
exactly the batch one process would take. DistributedDataParallel averages the gradients; each shard's
loss is scaled so that this average is the mean over the global batch even when the shards differ in
size (the last batch of an epoch).

BatchNorm normalises each shard by its own statistics, as the paper's CIFAR runs did (batch 128 on two
GPUs), so a run matches one process within a tolerance rather than bit for bit; a network without
BatchNorm or dropout matches to rounding (tests/test_distributed.py).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..diagnostics import ResdslError, printable


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> World:
        names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
        if "WORLD_SIZE" not in os.environ:
            return cls()
        try:
            rank, size, local = (int(os.environ.get(name, "0")) for name in names)
        except ValueError:
            raise ResdslError("RANK, WORLD_SIZE and LOCAL_RANK must be integers",
                              hint="start distributed runs with torchrun, which sets them") from None
        if size < 1 or not 0 <= rank < size:
            raise ResdslError(f"rank {rank} of a world of {size} processes does not exist",
                              hint="start distributed runs with torchrun, which sets RANK and WORLD_SIZE")
        if local < 0:  # torch would take -1 as a GPU index and fail deep inside
            raise ResdslError(f"LOCAL_RANK {local} is negative",
                              hint="start distributed runs with torchrun, which sets LOCAL_RANK")
        return cls(rank, size, local)

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def leader(self) -> bool:
        """The process that writes the run directory and prints."""
        return self.rank == 0

    def device(self, name: str):
        """The torch.device this process trains on (a CUDA process takes the GPU of its local rank)."""
        import torch
        try:
            device = torch.device(name)
        except (RuntimeError, ValueError):
            raise ResdslError(f"unknown device `{printable(name)}`", hint="use cpu, or cuda where a GPU exists") from None
        if device.type == "cpu":
            return device
        if device.type != "cuda":
            raise ResdslError(f"training on `{printable(name)}` is not supported", hint="use cpu or cuda")
        if not torch.cuda.is_available():
            raise ResdslError("no CUDA GPU is available to this torch (a CPU build, or no GPU)",
                              hint="train on cpu, or install a CUDA build of torch")
        index = self.local_rank if self.distributed else (device.index or 0)
        if index >= torch.cuda.device_count():
            raise ResdslError(f"GPU {index} does not exist; this machine has {torch.cuda.device_count()}",
                              hint="start at most one process per GPU")
        return torch.device("cuda", index)

    def join(self, device) -> None:
        """Join the process group: gloo on CPU, NCCL on CUDA."""
        if not self.distributed:
            return
        import torch
        import torch.distributed as dist
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def leave(self, finished: bool) -> None:
        """Leave the process group. A finished run waits for every process first: one tearing its
        group down while another still talks to it aborts in gloo ("terminate called without an
        active exception"). A failed one does not wait, since the others may never arrive."""
        if self.distributed:
            import torch.distributed as dist
            if dist.is_initialized():
                if finished:
                    dist.barrier()
                dist.destroy_process_group()

    def wrap(self, model, device):
        """The model to train: DDP around it where there are several processes."""
        if not self.distributed:
            return model
        import warnings
        from torch.nn.parallel import DistributedDataParallel
        # A 1-channel input's conv weight (C x 1 x k x k) has a stride for its size-1 dimension that
        # differs between the parameter and its gradient; the layouts are the same memory order.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def shard(self, items):
        return items[self.rank::self.size]

    def sum(self, values: list[float], device) -> list[float]:
        """Each value summed over the processes (the values themselves in one process)."""
        if not self.distributed:
            return values
        import torch
        import torch.distributed as dist
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def share_buffers(self, module) -> None:
        """Give every process the leader's BatchNorm statistics, so all evaluate the model it saves."""
        if not self.distributed:
            return
        import torch.distributed as dist
        for buffer in module.buffers():
            dist.broadcast(buffer, 0)
