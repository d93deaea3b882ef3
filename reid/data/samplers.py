"""P x K identity sampling for metric losses: every batch holds P identities with K images each.

The order is a function of a torch.Generator (train.py seeds one per (seed, epoch)), so runs repeat and resume.
"""
from collections import defaultdict

import torch


def pk_batches(targets, batch_size, num_instances, generator):
    """Return a list of batches (lists of dataset indices), each of batch_size // num_instances identities with
    num_instances images of each.

    As BoT's RandomIdentitySampler: each identity's images are shuffled and cut into groups of K (an identity
    with fewer than K images is drawn K times with replacement; a last incomplete group is dropped); then,
    while at least P identities have groups left, P of them are drawn at random and give their next group.
    """
    if num_instances < 1 or batch_size % num_instances:
        raise ValueError(f'--batchsize {batch_size} must be a multiple of --num_instances {num_instances}')
    ids_per_batch = batch_size // num_instances
    by_id = defaultdict(list)
    for index, target in enumerate(targets):
        by_id[int(target)].append(index)
    if len(by_id) < ids_per_batch:
        raise ValueError(f'--batchsize {batch_size} / --num_instances {num_instances} = {ids_per_batch} '
                         f'identities per batch, but the training split has {len(by_id)}')
    groups = {}
    for pid in sorted(by_id):
        items = by_id[pid]
        if len(items) < num_instances:
            picks = torch.randint(len(items), (num_instances,), generator=generator).tolist()
        else:
            picks = torch.randperm(len(items), generator=generator).tolist()
        order = [items[i] for i in picks]
        groups[pid] = [order[i:i + num_instances] for i in range(0, len(order) - num_instances + 1, num_instances)]
    batches = []
    available = [pid for pid in sorted(groups) if groups[pid]]
    while len(available) >= ids_per_batch:
        chosen = [available[i] for i in torch.randperm(len(available), generator=generator)[:ids_per_batch]]
        batches.append([index for pid in chosen for index in groups[pid].pop(0)])
        available = [pid for pid in available if groups[pid]]
    return batches


def pk_epoch_length(targets, batch_size, num_instances, seed=0):
    """Return the number of P x K batches of an epoch: that of one draw, fixed for the whole run so the
    per-step learning-rate schedule sees equal epochs."""
    return len(pk_batches(targets, batch_size, num_instances, torch.Generator().manual_seed(seed)))


class PKSampler(torch.utils.data.Sampler):
    """Batch sampler of exactly `length` P x K batches (see pk_batches; further draws fill a short epoch) for
    DataLoader(batch_sampler=...).

    With rank/world_size (distributed training) each process takes every world_size-th batch of the same
    global order; all processes must pass generators with the same seed and the global `length`.
    """

    def __init__(self, targets, batch_size, num_instances, generator, length, rank=0, world_size=1):
        batches = []
        while len(batches) < length:
            batches += pk_batches(targets, batch_size, num_instances, generator)
        batches = batches[:length]
        usable = len(batches) - len(batches) % world_size
        self.batches = batches[rank:usable:world_size]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)
