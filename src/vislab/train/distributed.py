"""Data-parallel training under ``torchrun``: process group, sharded batches, metric reduction.

``torchrun --nproc_per_node N -m vislab train ...`` starts N copies of the command
with ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set. :func:`setup` turns that into a
process group (NCCL on CUDA, gloo on CPU); the fit loop then

* wraps the model in ``DistributedDataParallel`` (gradients all-reduced every step),
* gives every rank its share of each *global* batch (:class:`ShardedBatches`): the
  epoch-seeded permutation is the same on every rank, each global batch of
  ``train.batch_size`` images is cut into N interleaved pieces, so N processes take
  the same optimisation steps as one process would (``--batch-size`` is the global
  batch, as in Keras' distribution strategies; the learning rate needs no rescaling),
* sums the loss and the task's statistics over ranks (:func:`all_reduce_sum`), so every rank logs
  the same metrics and early stopping decides the same on all of them,
* lets only rank 0 write the run folder.

Without ``torchrun`` (``WORLD_SIZE`` unset or 1) every function here is a no-op
and :data:`SINGLE` describes the one process.

Example:
    >>> ctx = setup("cpu")          # no torchrun: the single-process context
    >>> ctx.world_size, ctx.is_main
    (1, True)
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from vislab.data.loaders import batch_count, epoch_generator, epoch_order  # noqa: F401  (epoch_generator re-exported)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: not distributed

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistContext()
TIMEOUT = datetime.timedelta(minutes=30)  # rank 0 alone evaluates and writes figures at the end


def setup(device: str = "auto") -> DistContext:
    """Join the ``torchrun`` job described by the environment, or return :data:`SINGLE`.

    Args:
        device: the ``train.device`` setting; CUDA (auto with a GPU) uses NCCL and one GPU
            per local rank, anything else gloo.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)  # "cuda" now means this rank's GPU
    else:
        # N processes on one machine share its cores: N x all-cores threads would thrash
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // local_world))
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=TIMEOUT)
    return DistContext(rank, world_size, local_rank, backend)


def cleanup(ctx: DistContext) -> None:
    """Wait for every rank, then leave the process group."""
    if ctx.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def broadcast_object(ctx: DistContext, value):
    """Rank 0's ``value`` on every rank (e.g. the run folder name, which holds a timestamp)."""
    if not ctx.enabled:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def all_reduce_sum(ctx: DistContext, *values: torch.Tensor) -> list[torch.Tensor]:
    """Sums over ranks, as float64 on the CPU; one collective for all of them.

    Scalars (a loss sum, a count) and arrays (a task's confusion matrix) alike: each
    comes back with its own shape.
    """
    if not ctx.enabled:  # GPU sums and CPU counts alike: one read each, at the end of an epoch
        return [torch.tensor(float(v), dtype=torch.float64) if torch.as_tensor(v).ndim == 0
                else torch.as_tensor(v).detach().to("cpu", torch.float64) for v in values]
    # one device for the collective (NCCL: this rank's GPU); the values may sit on the GPU and the CPU
    device = torch.device("cuda") if ctx.backend == "nccl" else torch.device("cpu")
    tensors = [torch.as_tensor(v).detach().to(device, torch.float64) for v in values]
    packed = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    out, offset = [], 0
    for t in tensors:
        out.append(packed[offset:offset + t.numel()].reshape(t.shape).cpu())
        offset += t.numel()
    return out


def wrap_model(ctx: DistContext, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``DistributedDataParallel`` around ``model`` when distributed, else ``model`` itself."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index if device.index is not None else ctx.local_rank] if device.type == "cuda" else None
    # frozen backbones leave parameters without gradients: DDP must not wait for them
    frozen = any(not p.requires_grad for p in model.parameters())
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=frozen)


def global_batches(size: int, batch_size: int, shuffle: bool, drop_last: bool, seed: int, epoch: int,
                   weights=None):
    """Index tensors of the single-process batches: the epoch-seeded permutation (or balanced draw) cut
    into batches."""
    order = epoch_order(size, shuffle, seed, epoch, weights)
    count = batch_count(size, batch_size, drop_last)
    for start in range(0, count * batch_size, batch_size):
        yield order[start : start + batch_size]


class _ShardSampler(torch.utils.data.Sampler):
    """Batch sampler: this rank's interleaved share of every global batch (empty shares skipped)."""

    def __init__(self, size: int, batch_size: int, shuffle: bool, drop_last: bool, rank: int, world: int,
                 weights=None):
        self.size, self.batch_size, self.shuffle, self.drop_last = size, batch_size, shuffle, drop_last
        self.weights = weights
        self.rank, self.world, self.seed, self.epoch = rank, world, 0, 0

    def __len__(self) -> int:
        return batch_count(self.size, self.batch_size, self.drop_last)

    def __iter__(self):
        for index in global_batches(self.size, self.batch_size, self.shuffle, self.drop_last, self.seed, self.epoch,
                                    self.weights):
            piece = index[self.rank :: self.world]
            if len(piece):
                yield piece.tolist()


class ShardedBatches:
    """Drop-in for :class:`~vislab.data.loaders.TensorBatches` / ``FileBatches`` under DDP.

    Yields this rank's piece of each global batch. Training batches hold at least one
    image per rank (the batch size must be >= the number of processes), so every rank
    takes the same number of steps, which DDP needs; only the ragged last batch of an
    evaluation pass can leave a rank with nothing, and evaluation has no collectives
    until its final sum.
    """

    def __init__(self, batches, ctx: DistContext):
        self.split = batches.split
        loader = getattr(batches, "loader", None)  # FileBatches wraps a DataLoader
        batch_size = batches.batch_size if loader is None else loader.batch_size
        shuffle = batches.shuffle if loader is None else batches.sampler.shuffle
        drop_last = batches.drop_last if loader is None else loader.drop_last
        if batch_size < ctx.world_size:
            raise ValueError(f"batch size {batch_size} is smaller than the {ctx.world_size} processes; "
                             "--batch-size is the global batch, shared among them")
        self.sampler = _ShardSampler(len(self.split), batch_size, shuffle, drop_last, ctx.rank, ctx.world_size,
                                     getattr(batches, "weights", None))
        self.loader = None
        if loader is not None:  # files: the same dataset, workers and pinning, with our batch sampler
            workers = loader.num_workers
            self.loader = DataLoader(loader.dataset, batch_sampler=self.sampler, num_workers=workers,
                                     pin_memory=loader.pin_memory, persistent_workers=workers > 0,
                                     prefetch_factor=4 if workers > 0 else None)

    def set_epoch(self, seed: int, epoch: int) -> None:
        self.sampler.seed, self.sampler.epoch = seed, epoch

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        if self.loader is not None:
            yield from self.loader
            return
        for index in self.sampler:
            index = torch.as_tensor(index, dtype=torch.int64, device=self.split.images.device)
            yield self.split.images.index_select(0, index), self.split.labels.index_select(0, index)


def shard(ctx: DistContext, batches):
    """This rank's view of ``batches`` (unchanged when not distributed)."""
    return ShardedBatches(batches, ctx) if ctx.enabled else batches


class NullWriter:
    """Stands in for TensorBoard's SummaryWriter on ranks that write nothing."""

    def add_scalar(self, *args, **kwargs) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...
