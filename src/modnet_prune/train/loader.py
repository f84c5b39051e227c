"""Batches for training: sharded across ranks, reshuffled per epoch, resumable mid-epoch,
produced by background workers so data generation overlaps the model's compute; and
`image_batches`, the few seeded batches that BN re-estimation and data-driven importance
criteria read."""
from __future__ import annotations

import signal
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, default_collate

from ..errors import UserError
from ..memory import release_inherited_memory
from .distributed import Context


class ResumableSampler(Sampler[int]):
    """A DistributedSampler (drop_last) that can start an epoch at a given batch."""

    def __init__(self, dataset: Dataset, ctx: Context, seed: int, shuffle: bool = True):
        self.inner = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank,
                                        shuffle=shuffle, seed=seed, drop_last=True)
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.inner)[self.skip:])

    def __len__(self) -> int:
        return len(self.inner) - self.skip


def _init_worker(_worker_id: int) -> None:
    # Ctrl-C is for the main process, which saves a checkpoint and shuts workers down;
    # a worker dying on it first would turn a clean stop into a DataLoader error.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    release_inherited_memory()


class Batches:
    """Endless stream of training batches, positioned by optimizer step."""

    def __init__(self, dataset: Dataset, batch_size: int, ctx: Context, seed: int,
                 workers: int = 2, prefetch: int = 4):
        per_rank = len(dataset) // ctx.world_size
        if per_rank < batch_size:
            raise UserError(f"the training set has {len(dataset)} samples: fewer than "
                            f"--batch-size {batch_size} x {ctx.world_size} process(es)")
        self.batches_per_epoch = per_rank // batch_size
        self.sampler = ResumableSampler(dataset, ctx, seed)
        self.loader = DataLoader(
            dataset, batch_size=batch_size, sampler=self.sampler, drop_last=True,
            num_workers=workers, persistent_workers=workers > 0,
            prefetch_factor=prefetch if workers > 0 else None,
            pin_memory=ctx.device.type == "cuda", worker_init_fn=_init_worker,
            generator=torch.Generator().manual_seed(seed * 7919 + ctx.rank))

    def from_step(self, step: int) -> Iterator[dict]:
        """Batches for optimizer steps step, step+1, ... (epoch and offset from `step`)."""
        epoch, offset = divmod(step, self.batches_per_epoch)
        while True:
            self.sampler.set_epoch(epoch, skip=offset * self.loader.batch_size)
            yield from self.loader
            epoch, offset = epoch + 1, 0


def image_batches(dataset: Dataset, count: int, batch_size: int, seed: int,
                  ctx: Context = Context()) -> Iterator[torch.Tensor]:
    """The images of `count` batches of `dataset` (under DDP, this rank's share), a pure
    function of the arguments: the order is epoch 0 of the training stream's shuffle by
    `seed`, and the dataset's random augmentation (torch's RNG) is seeded per batch, with
    the caller's RNG state left as it was. Fewer batches come when the data runs out."""
    order = list(DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank,
                                    shuffle=True, seed=seed, drop_last=True))
    seeds = torch.Generator().manual_seed(seed * 7919 + ctx.rank)
    for start in range(0, min(count * batch_size, len(order)), batch_size):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (), generator=seeds)))
            items = [dataset[i] for i in order[start:start + batch_size]]
        yield default_collate(items)["image"]
