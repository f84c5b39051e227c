"""torch.distributed plumbing for torchrun: one process per device, rank 0 does the I/O."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import UserError


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    control: object = None  # a gloo group for CPU-side control messages (stop requests)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def setup(device: str = "auto") -> Context:
    """Join the process group torchrun describes in the environment (if any).

    gloo on CPU, nccl on CUDA with one GPU per local rank. Idempotent.
    """
    dev = pick_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context(device=dev)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    # On CUDA, a per-step flag exchange over nccl would sync the host with the GPU; a
    # CPU (gloo) group keeps it off the device.
    control = dist.new_group(backend="gloo") if dev.type == "cuda" else None
    return Context(rank=dist.get_rank(), world_size=dist.get_world_size(), device=dev,
                   control=control)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(tensor: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Mean over ranks (in place); a no-op in a single process."""
    if ctx.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= ctx.world_size
    return tensor


def any_rank(flag: bool, ctx: Context) -> bool:
    """True on every rank if `flag` is true on any (a CPU all-reduce, no device sync)."""
    if not ctx.distributed:
        return flag
    votes = torch.tensor([float(flag)])
    dist.all_reduce(votes, op=dist.ReduceOp.MAX, group=ctx.control)
    return bool(votes.item())


def all_gather_objects(obj, ctx: Context) -> list:
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, ctx: Context):
    """Rank 0's `obj` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()
