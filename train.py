"""Train a re-ID network with softmax (ID) loss on a prepared ImageFolder split; writes model/<name>/.

    python train.py --name ft_ResNet50 --data_dir ../Market/pytorch --train_all        # the original recipe
    python train.py --name demo --data_dir data/demo/pytorch --train_all --backbone resnet18 --scratch \
        --h 64 --w 32 --total_epoch 30 --warm_epoch 1                                   # ~3 min on 2 CPU cores
    python train.py --name ft_ResNet50 --resume                                           # continue a run
    torchrun --nproc_per_node 4 train.py --name ft_ResNet50 --data_dir ../Market/pytorch --train_all --sync_bn
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \
        train.py ...                                      # two machines: the same line on each, --node_rank 1 there

Outputs in model/<name>/: opts.yaml (every flag), net_init.pth (the network before training),
net_XXX.pth (every 10 epochs, XXX = 0-based epoch), net_last.pth, resume.pth (optimizer, scheduler,
scaler, RNG states, curves), train.jpg (loss / top-1 error curves) and a copy of the code.
--resume takes every option from the run's opts.yaml except --gpu_ids, --num_workers, --data_dir, --model_dir,
--cache_dir. With torchrun (distributed.py) --batchsize is the global batch, split over the processes; rank 0
alone logs and writes; resume.pth keeps every rank's RNG state.
"""
import argparse
import sys
import time
from argparse import Namespace
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from data import ReIDImageFolder, eval_transform, train_transform
import distributed
from engine import evaluate_epoch, lr_factor, train_one_epoch
from speed import memory_format, resolve_cpu_bf16, set_cpu_threads, use_channels_last
from model import PretrainedWeightsUnavailable, build_model, parameter_groups
from utils import (copy_code, draw_curves, load_checkpoint, load_opts, loader_workers, restore_rng_states,
                   rng_states, save_atomic, save_opts, seed_everything, select_device)

# On --resume these come from the command line (they describe the machine); the rest from opts.yaml.
MACHINE_OPTIONS = ('gpu_ids', 'num_workers', 'data_dir', 'model_dir', 'cache_dir')
SNAPSHOT_EVERY = 10


def build_parser():
    p = argparse.ArgumentParser(description='Train a re-ID baseline (softmax loss).')
    p.add_argument('--gpu_ids', default='0', type=str, help='GPU id, e.g. 0 (ignored on a CPU-only machine)')
    p.add_argument('--name', default='ft_ResNet50', type=str, help='run name: outputs go to <model_dir>/<name>')
    p.add_argument('--data_dir', default='../Market/pytorch', type=str, help='prepare.py output folder')
    p.add_argument('--model_dir', default='model', type=str, help='folder that holds the runs')
    p.add_argument('--train_all', action='store_true', help='train on train_all (train + val)')
    p.add_argument('--color_jitter', action='store_true', help='add colour jitter')
    p.add_argument('--batchsize', default=32, type=int)
    p.add_argument('--linear_num', default=512, type=int, help='bottleneck width (<= 0: no Linear)')
    p.add_argument('--stride', default=2, type=int, choices=(1, 2), help='stride of the last backbone stage')
    p.add_argument('--erasing_p', default=0.0, type=float, help='random erasing probability, in [0, 1]')
    p.add_argument('--use_dense', action='store_true', help='DenseNet-121 backbone')
    p.add_argument('--backbone', default='resnet50', type=str,
                   help='any torchvision classification model name (resnet18, ...) or timm:<name>')
    p.add_argument('--scratch', action='store_true', help='random initialisation instead of ImageNet weights')
    p.add_argument('--PCB', action='store_true', help='Part-based Convolutional Baseline (6 parts, 384x192)')
    p.add_argument('--warm_epoch', default=0, type=int, help='epochs of linear learning-rate warm-up')
    p.add_argument('--total_epoch', default=60, type=int)
    p.add_argument('--lr', default=0.05, type=float, help='learning rate of the new layers')
    p.add_argument('--backbone_lr_mult', default=None, type=float,
                   help='backbone lr = lr x this (default 0.1 with ImageNet weights, 1 with --scratch)')
    p.add_argument('--weight_decay', default=5e-4, type=float)
    p.add_argument('--cosine', action='store_true', help='cosine learning-rate decay instead of the step')
    p.add_argument('--droprate', default=0.5, type=float)
    p.add_argument('--h', default=None, type=int, help='input height (default 256, 384 with --PCB)')
    p.add_argument('--w', default=None, type=int, help='input width (default 128, 192 with --PCB)')
    p.add_argument('--pad', default=None, type=int,
                   help='padding before the random crop (default 10 at width 128, scaled with --w; 0 with --PCB; 0: no crop)')
    p.add_argument('--fp16', action='store_true', help='float16 mixed precision (CUDA)')
    p.add_argument('--bf16', action='store_true', help='bfloat16 mixed precision (CUDA or CPU)')
    p.add_argument('--cpu_bf16', default='auto', choices=('auto', 'on', 'off'),
                   help='on the CPU: bf16 autocast (auto: where the CPU has native bf16, e.g. avx512_bf16 or AMX)')
    p.add_argument('--channels_last', default='auto', choices=('auto', 'on', 'off'),
                   help='run convolutions in the channels_last memory format (auto: on)')
    p.add_argument('--seed', default=0, type=int)
    p.add_argument('--num_workers', default=None, type=int,
                   help='data loading processes (default 2 with CUDA, 0 = in the main process on the CPU)')
    p.add_argument('--sync_bn', action='store_true', help='with torchrun on CUDA: BatchNorm statistics over all GPUs')
    p.add_argument('--compile', action='store_true', help='torch.compile the network for training (PyTorch 2)')
    p.add_argument('--cache', action='store_true',
                   help='decode every training image once into a uint8 cache and augment whole batches on the device')
    p.add_argument('--cache_dir', default=None, type=str, help='where --cache writes (default <data_dir>/cache)')
    p.add_argument('--resume', action='store_true', help='continue <model_dir>/<name> from resume.pth')
    p.add_argument('--overwrite', action='store_true',
                   help='replace an existing run of the same --name (its net_*.pth are deleted)')
    return p


def resolved_opts(opts):
    """Return a copy of parsed options with sizes filled in and combinations checked (ValueError otherwise)."""
    o = Namespace(**vars(opts))
    o.h = o.h or (384 if o.PCB else 256)
    o.w = o.w or (192 if o.PCB else 128)
    if o.pad is None:  # the original PCB recipe has no pad + crop
        o.pad = 0 if o.PCB else round(10 * o.w / 128)
    if o.backbone_lr_mult is None:
        o.backbone_lr_mult = 1.0 if o.scratch else 0.1
    if o.total_epoch < 1:
        raise ValueError(f'--total_epoch {o.total_epoch}: must be at least 1')
    if o.batchsize < 2:
        raise ValueError(f'--batchsize {o.batchsize}: BatchNorm needs at least 2 images per batch')
    if o.fp16 and o.bf16:
        raise ValueError('--fp16 and --bf16: pick one')
    if not 0.0 <= o.erasing_p <= 1.0:
        raise ValueError(f'--erasing_p {o.erasing_p}: must be between 0 and 1')
    return o


def amp_settings(opts, device):
    """Return (autocast dtype or None, GradScaler or None) for --fp16/--bf16 on `device`."""
    if opts.fp16:
        if device.type != 'cuda':
            raise ValueError('--fp16 needs CUDA; use --bf16 for mixed precision on the CPU')
        return torch.float16, torch.amp.GradScaler('cuda')
    return (torch.bfloat16 if opts.bf16 else None), None


def apply_speed_settings(opts, device, log=print):
    """Resolve --cpu_bf16 and --channels_last for `device` into opts (recorded in opts.yaml); set CPU threads."""
    if device.type == 'cpu':
        set_cpu_threads(opts.num_workers)
        if not opts.bf16:
            on, reason = resolve_cpu_bf16(opts.cpu_bf16, device)
            opts.bf16, opts.cpu_bf16_reason = on, reason
            if on:
                log(f'bf16 autocast on the CPU ({reason})')
    opts.channels_last = 'on' if use_channels_last(opts.channels_last, device) else 'off'


def training_state(epoch, model, optimizer, scheduler, scaler, history):
    """Return what resume.pth holds: everything needed to continue after `epoch` completed epochs."""
    return {'epoch': epoch, 'model': model.state_dict(), 'optimizer': optimizer.state_dict(),
            'scheduler': scheduler.state_dict(), 'scaler': scaler.state_dict() if scaler else None,
            'rng': rng_states(), 'history': history}


def epoch_generator(seed, epoch):
    """Return the generator that orders epoch `epoch` (and seeds its workers): a function of (seed, epoch)
    only, so a resumed run sees the same data order as an uninterrupted one."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def datasets(opts):
    """Return (train_set, val_set or None): train or train_all, and val labelled with train's class indices."""
    data_dir = Path(opts.data_dir)
    train_set = ReIDImageFolder(data_dir / ('train_all' if opts.train_all else 'train'),
                                train_transform(opts.h, opts.w, opts.pad, opts.erasing_p, opts.color_jitter))
    val_set = None
    if (data_dir / 'val').is_dir():
        val_set = ReIDImageFolder(data_dir / 'val', eval_transform(opts.h, opts.w), train_set.class_to_idx)
    return train_set, val_set


def cached_pixels(train_set, opts):
    """Return the uint8 (N, h, w, 3) memory map of the training images (augment.image_cache), built once."""
    from augment import CACHE_FOLDER, image_cache
    cache_dir = Path(opts.cache_dir) if opts.cache_dir else Path(opts.data_dir) / CACHE_FOLDER
    return image_cache([p for p, _ in train_set.samples], opts.h, opts.w, cache_dir, train_set.root.name)


def training_batches(train_set, opts, device, epoch, drop_last, pixels=None):
    """Return epoch `epoch`'s (images, labels) batches: a DataLoader over the per-image transform, or with
    --cache, whole batches augmented on `device` from `pixels`, in the same sample order."""
    generator = epoch_generator(opts.seed, epoch)
    rank, world = distributed.rank(), distributed.world_size()
    if pixels is None and world == 1:
        return DataLoader(train_set, batch_size=opts.batchsize, shuffle=True, drop_last=drop_last,
                          num_workers=opts.num_workers, pin_memory=device.type == 'cuda', generator=generator)
    from torch.utils.data import BatchSampler, RandomSampler

    from augment import CachedBatches
    sampler = BatchSampler(RandomSampler(train_set, generator=generator), opts.batchsize, drop_last)
    # the draw a DataLoader makes first (its workers' base seed) seeds the augmentation, so the sampler then
    # gives the same sample order as the DataLoader above
    seed = int(torch.empty((), dtype=torch.int64).random_(generator=generator))
    if world > 1:  # every rank draws the same global batches and keeps its share
        sampler = distributed.ShardedBatches(sampler, rank, world)
    if pixels is None:
        return DataLoader(train_set, batch_sampler=sampler, num_workers=opts.num_workers,
                          pin_memory=device.type == 'cuda', generator=torch.Generator().manual_seed(seed + rank))
    return CachedBatches(pixels, train_set.targets, sampler, device, seed + rank, pad=opts.pad,
                         erasing_p=opts.erasing_p, jitter=opts.color_jitter)


def optimizer_and_scheduler(model, opts, steps_per_epoch, fused=False):
    """Return the recipe's SGD (nesterov, backbone at lr x backbone_lr_mult) and its per-step LR schedule.

    `fused`: one kernel for the whole update (CUDA); otherwise the multi-tensor (foreach) update.
    """
    optimizer = torch.optim.SGD(parameter_groups(model, opts.lr, opts.backbone_lr_mult), lr=opts.lr,
                                weight_decay=opts.weight_decay, momentum=0.9, nesterov=True,
                                **({'fused': True} if fused else {'foreach': True}))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, steps_per_epoch, opts.total_epoch, opts.warm_epoch, opts.cosine))
    return optimizer, scheduler


def restored_progress(path, model, optimizer, scheduler, scaler, device, rank=0):
    """Load resume.pth into the training objects and the RNGs; return (history, completed epochs)."""
    # CPU first: RNG states must stay CPU tensors; load_state_dict moves the rest to the model's device.
    state = load_checkpoint(path, map_location='cpu')
    model.load_state_dict(state['model'])
    optimizer.load_state_dict(state['optimizer'])
    scheduler.load_state_dict(state['scheduler'])
    if scaler is not None and state['scaler'] is not None:
        scaler.load_state_dict(state['scaler'])
    per_rank = state.get('rng_per_rank') or [state['rng']]
    restore_rng_states(per_rank[rank] if rank < len(per_rank) else state['rng'])
    return state['history'], state['epoch']


def run_training(opts, stop_after=None, log=print):
    """Train as `opts` (parsed, see build_parser) says; return the per-epoch history dict.

    `stop_after` ends this session after that many epochs (its checkpoints allow --resume), for tests.
    """
    run_dir = Path(opts.model_dir) / opts.name
    rank, world, local_rank = distributed.init_process_group()
    if rank != 0:  # rank 0 alone logs and writes files
        log = lambda *args: None  # noqa: E731
    if opts.resume:
        saved = load_opts(run_dir / 'opts.yaml')
        defaults = vars(build_parser().parse_args([]))
        ignored = [k for k, v in vars(opts).items()
                   if k in saved and k not in MACHINE_OPTIONS + ('resume', 'overwrite') and v != defaults[k] and v != saved[k]]
        if ignored:
            log(f'--resume keeps the options of {run_dir / "opts.yaml"}; ignoring --' + ', --'.join(ignored))
        opts = Namespace(**{**vars(build_parser().parse_args([])), **saved,
                            **{k: getattr(opts, k) for k in MACHINE_OPTIONS}, 'resume': True})
    opts = resolved_opts(opts)
    device, note = select_device(opts.gpu_ids)
    if world > 1 and device.type == 'cuda':
        device = torch.device('cuda', local_rank)
    if opts.sync_bn and world > 1 and device.type != 'cuda':
        raise ValueError('--sync_bn needs CUDA (BatchNorm statistics are synchronised over GPUs)')
    if note:
        log(note)
    opts.num_workers = loader_workers(opts.num_workers, device)
    apply_speed_settings(opts, device, log)
    amp_dtype, scaler = amp_settings(opts, device)
    seed_everything(opts.seed)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels

    train_set, val_set = datasets(opts)
    opts.nclasses = len(train_set.classes)
    log(f'{len(train_set)} training images of {opts.nclasses} ids'
        + (f', {len(val_set)} val images' if val_set is not None else ', no val split') + f'; device {device}')
    model = build_model(opts, opts.nclasses).to(device, memory_format=memory_format(opts.channels_last == 'on'))
    # Drop a last partial batch (BatchNorm fails on one image) unless the whole split fits in one batch.
    drop_last = len(train_set) > opts.batchsize
    optimizer, scheduler = optimizer_and_scheduler(
        model, opts, len(train_set) // opts.batchsize if drop_last else 1, fused=device.type == 'cuda')

    history = {'train_loss': [], 'train_err': [], 'val_loss': [], 'val_err': []}
    first_epoch = 0
    if not opts.resume and (run_dir / 'opts.yaml').exists() and not opts.overwrite:
        raise ValueError(f'{run_dir}: a run of this --name exists; continue it with --resume, pick another '
                         f'--name, or replace it with --overwrite')
    distributed.barrier()  # every rank has looked at the run folder before rank 0 writes into it
    if opts.resume:
        history, first_epoch = restored_progress(run_dir / 'resume.pth', model, optimizer, scheduler, scaler,
                                                 device, rank)
        log(f'resuming {run_dir} after epoch {first_epoch} of {opts.total_epoch}'
            + (' (already complete)' if first_epoch >= opts.total_epoch else ''))
    elif rank == 0:
        for stale in run_dir.glob('net_*.pth'):  # snapshots of the run being replaced must not mix with ours
            stale.unlink()
        save_opts(opts, run_dir / 'opts.yaml')
        copy_code(Path(__file__).resolve().parent, run_dir)
        save_atomic(model.state_dict(), run_dir / 'net_init.pth')

    pin = device.type == 'cuda'
    pixels = cached_pixels(train_set, opts) if opts.cache else None
    # the compiled wrapper shares the parameters; checkpoints keep saving `model`'s plain state_dict
    network = distributed.wrap(model, device, opts.sync_bn)  # DDP with several processes
    network = torch.compile(network) if opts.compile else network
    val_loader = None
    if val_set is not None:
        val_loader = DataLoader(val_set, batch_size=opts.batchsize, shuffle=False,
                                num_workers=opts.num_workers, pin_memory=pin)
    last_epoch = opts.total_epoch if stop_after is None else min(opts.total_epoch, first_epoch + stop_after)
    for epoch in range(first_epoch, last_epoch):
        start, lr = time.perf_counter(), optimizer.param_groups[-1]['lr']
        loader = training_batches(train_set, opts, device, epoch, drop_last, pixels)
        loss, err = train_one_epoch(network, loader, optimizer, scheduler, device, amp_dtype, scaler,
                                    desc=f'epoch {epoch + 1}/{opts.total_epoch}')
        loss, err = distributed.mean_over_ranks(loss, err)
        history['train_loss'].append(loss)
        history['train_err'].append(err)
        line = f'epoch {epoch + 1}/{opts.total_epoch} train loss {loss:.4f} err {err:.4f}'
        if val_loader is not None and rank == 0:
            val_loss, val_err = evaluate_epoch(model, val_loader, device, amp_dtype)
            history['val_loss'].append(val_loss)
            history['val_err'].append(val_err)
            line += f' | val loss {val_loss:.4f} err {val_err:.4f}'
        log(f'{line} | lr {lr:.2e} | {time.perf_counter() - start:.0f}s')

        rng_per_rank = distributed.gathered(rng_states())  # every rank takes part; rank 0 saves them all
        if rank == 0:
            weights = model.state_dict()
            if epoch % SNAPSHOT_EVERY == SNAPSHOT_EVERY - 1:
                save_atomic(weights, run_dir / f'net_{epoch:03d}.pth')
            save_atomic(weights, run_dir / 'net_last.pth')
            state = training_state(epoch + 1, model, optimizer, scheduler, scaler, history)
            state['rng_per_rank'] = rng_per_rank
            save_atomic(state, run_dir / 'resume.pth')
            draw_curves(history, run_dir / 'train.jpg')
        distributed.barrier()  # resume.pth is complete before any rank may stop
    return history


def main(argv=None):
    opts = build_parser().parse_args(argv)
    try:
        run_training(opts)
    except (ValueError, PretrainedWeightsUnavailable) as e:
        raise SystemExit(f'train.py: {e}') from None
    finally:
        distributed.shutdown()


if __name__ == '__main__':
    main(sys.argv[1:])
