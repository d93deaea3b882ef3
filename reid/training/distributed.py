"""Multi-process training with torchrun: the process group, each rank's share of a global batch, rank-0 duties.

    torchrun --nproc_per_node 2 train.py ...                     # one machine, 2 processes (GPUs, or CPU + gloo)
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 train.py ...

Without torchrun's environment (WORLD_SIZE unset or 1) everything here is a no-op for a single process.
"""
import os

import torch
import torch.distributed as dist

from reid.runtime import cuda_available


def world_from_env():
    """Return (rank, world_size, local_rank) from torchrun's environment variables ((0, 1, 0) without them)."""
    return (int(os.environ.get('RANK', 0)), int(os.environ.get('WORLD_SIZE', 1)),
            int(os.environ.get('LOCAL_RANK', 0)))


def init_process_group():
    """Join torchrun's process group (even of one process: a one-GPU machine still runs NCCL and DDP, as
    bench/gpu_check.sh does): NCCL with CUDA, else gloo; return (rank, world, local). Without torchrun's
    environment, nothing. With CUDA each process takes the GPU of its local rank.
    """
    rank, world, local = world_from_env()
    launched = world > 1 or 'TORCHELASTIC_RUN_ID' in os.environ
    if launched and not dist.is_initialized():
        if cuda_available():
            torch.cuda.set_device(local)
        dist.init_process_group('nccl' if cuda_available() else 'gloo')
    return rank, world, local


def active():
    return dist.is_available() and dist.is_initialized()


def backend():
    """Return the process group's backend ('nccl', 'gloo') when one is joined, else None."""
    return dist.get_backend() if active() else None


def rank():
    return dist.get_rank() if active() else 0


def shutdown():
    if active():
        dist.destroy_process_group()


class ShardedBatches:
    """Each rank's contiguous share of every global batch of `batch_sampler` (any index order: shuffled, P x K...).

    Every rank iterates the same global batches (same seed), so together the ranks see each global batch once
    and DDP's averaged gradient is that of the global batch. --batchsize stays the global batch size.
    """

    def __init__(self, batch_sampler, rank, world):
        self.batch_sampler, self.rank, self.world = batch_sampler, rank, world

    def __len__(self):
        return len(self.batch_sampler)

    def __iter__(self):
        for batch in self.batch_sampler:
            batch = list(batch)
            if len(batch) % self.world:
                raise ValueError(f'a batch of {len(batch)} images does not split over {self.world} processes: '
                                 f'use a --batchsize divisible by the number of processes')
            share = len(batch) // self.world
            yield batch[self.rank * share:(self.rank + 1) * share]


def mean_over_ranks(*values):
    """Return the values averaged over all ranks (floats; unchanged in a single process)."""
    if not active():
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return tuple((t / dist.get_world_size()).tolist())


def gathered(obj):
    """Return [obj of rank 0, obj of rank 1, ...] (a one-element list in a single process)."""
    if not active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def wrap(model, device, sync_bn=False):
    """Return `model` wrapped in DistributedDataParallel when several processes run (SyncBatchNorm on request)."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel
    if sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == 'cuda' else None)


def broadcast_parameters(module):
    """Give every rank rank 0's parameters and buffers of `module` (the losses: DDP does this only for the
    network it wraps)."""
    if active():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)


def average_gradients(parameters):
    """Replace the gradients of `parameters` by their mean over the ranks, as DDP does for the network: the
    losses' class weights and centres live outside it, and would otherwise follow each rank's own share."""
    if not active():
        return
    world = dist.get_world_size()
    for p in parameters:
        if p.grad is None:  # every rank must take part in every all_reduce
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad.div_(world)


def world_size():
    return dist.get_world_size() if active() else 1


def barrier():
    if active():
        dist.barrier()
