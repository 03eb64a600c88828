"""Data-parallel fine-tuning: the process group torchrun sets up, and the few collectives the jobs need.

A :class:`Runtime` says where a job runs: the device, and (under ``torchrun``) this process's rank among
``world_size`` processes. One process (``Runtime()``) is the same code with every collective a no-op, so the
single-process run and the distributed run are one path. gloo on CPUs, NCCL on GPUs.

What the fine-tuning does with it (see :mod:`.finetune`): the model is wrapped in
``DistributedDataParallel`` (gradients averaged across processes), every batch is sharded
(:class:`~explorer.core.model.data.Shard`), masks are computed once on rank 0 and broadcast, then every rank
checks they are identical (:meth:`Runtime.check_same`), metrics are all-reduced, and only rank 0 writes files.
"""
from __future__ import annotations

import datetime
import hashlib
import os
from dataclasses import dataclass, field

import torch
from torch import nn

from ..device import resolve_device
from ..errors import ExplorerError
from ..model.data import Shard

# a test hook: kill every process (SIGKILL, no clean-up) right after the checkpoint of this epoch is on disk
KILL_AFTER_EPOCH_ENV = "PRUNING_EXPLORER_KILL_AFTER_EPOCH"
TIMEOUT = datetime.timedelta(minutes=30)


@dataclass
class Runtime:
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    rank: int = 0
    world_size: int = 1
    backend: str | None = None          # "gloo" | "nccl" when distributed

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, pad: bool = True) -> Shard | None:
        return Shard(self.rank, self.world_size, pad) if self.distributed else None

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to call in training: DistributedDataParallel around ``model`` when distributed (which also
        makes every rank start from rank 0's weights)."""
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def sum(self, *values: float) -> list[float]:
        """Each value summed over all processes."""
        if not self.distributed:
            return [float(v) for v in values]
        import torch.distributed as dist

        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return [float(v) for v in t.cpu()]

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank (others pass anything, e.g. None)."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self._comm_device())
        return box[0]

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def check_same(self, value: str, what: str) -> list[str]:
        """Refuse to go on unless every rank holds the same ``value`` (a digest); returns them in rank order."""
        values = self.gather(value)
        if len(set(values)) > 1:
            raise ExplorerError(f"The processes disagree about the {what} ({len(set(values))} different values "
                                f"across {self.world_size} ranks); stopping rather than training different "
                                "models.", "Check that every node runs the same code, recipe and data.")
        return values

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist
            dist.barrier()

    def _comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def describe(self) -> str:
        where = str(self.device)
        return f"{self.world_size} processes ({self.backend}, rank {self.rank}, {where})" if self.distributed \
            else where


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def start(device_spec: str | None = "auto") -> Runtime:
    """The runtime of this process: joins torchrun's process group when launched by it (reading RANK,
    WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/PORT from the environment), else one process on ``device_spec``."""
    if not launched_by_torchrun():
        return Runtime(device=resolve_device(device_spec))
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec)
    if device.type == "cuda":
        device = torch.device("cuda", local)      # one GPU per process, picked by the local rank
        torch.cuda.set_device(device)
    elif device.type == "mps":
        raise ExplorerError("Distributed fine-tuning runs on CPUs (gloo) or CUDA GPUs (NCCL), not on mps.",
                            "Use --device cpu or cuda.")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend=backend, timeout=TIMEOUT)
        except Exception as e:
            raise ExplorerError(f"Could not join the torchrun process group ({backend}): "
                                f"{str(e).splitlines()[0][:300]}",
                                "Check MASTER_ADDR/MASTER_PORT and that every node can reach the first one.") from None
    return Runtime(device=device, rank=rank, world_size=world, backend=backend)


def stop(rt: Runtime) -> None:
    if rt.distributed:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()


def digest(tensors: dict[str, torch.Tensor]) -> str:
    """A short content hash of named tensors (names, shapes, dtypes and bytes), for cross-rank checks."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu")
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        flat = t.reshape(-1).contiguous()
        h.update((flat.to(torch.uint8) if flat.dtype == torch.bool else flat.view(torch.uint8)).numpy().tobytes())
    return h.hexdigest()[:16]


def kill_after(epoch: int) -> bool:
    """Whether the test hook asks to kill the run after ``epoch``."""
    want = os.environ.get(KILL_AFTER_EPOCH_ENV)
    return bool(want) and want.isdigit() and int(want) == epoch
