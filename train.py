"""Train a re-ID network with softmax (ID) loss, plus any metric losses, on a prepared split; writes model/<name>/.

    python train.py --name ft_ResNet50 --data_dir ../Market/pytorch --train_all        # the original recipe
    python train.py --name bot --data_dir ../Market/pytorch --preset bot               # Bag of Tricks
    python train.py --name tri --data_dir ../Market/pytorch --triplet --circle --bnneck   # any combination
    python train.py --name demo --data_dir data/demo/pytorch --train_all --backbone resnet18 --scratch \
        --h 64 --w 32 --total_epoch 30 --warm_epoch 1                                   # ~3 min on 2 CPU cores
    python train.py --name ft_ResNet50 --resume                                           # continue a run
    torchrun --nproc_per_node 4 train.py --name ft_ResNet50 --data_dir ../Market/pytorch --train_all --sync_bn
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \
        train.py ...                                      # two machines: the same line on each, --node_rank 1 there

Outputs in model/<name>/: opts.yaml (every flag), net_init.pth (the network before training),
net_XXX.pth (every 10 epochs, XXX = 0-based epoch), net_last.pth, net_average.pth (--wa), resume.pth (optimizer,
scheduler, scaler, RNG states, curves, the losses' parameters and their optimizer, --wa's average; written before
the first epoch too), train.jpg (loss / top-1 error curves) and a copy of the code.
Structure: parse flags (presets as defaults) -> data -> model + losses -> optimizers -> epoch loop -> save.
--resume takes every option from the run's opts.yaml except --gpu_ids, --num_workers, --data_dir, --model_dir,
--cache_dir; Ctrl-C prints the command that continues it. With torchrun (distributed.py) --batchsize is the global
batch, split over the processes; rank 0 alone logs and writes; resume.pth keeps every rank's RNG state.
"""
import argparse
import math
import sys
import time
from argparse import Namespace
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from reid.data.images import ReIDImageFolder, eval_transform, input_size, require_readable_images, train_transform
from reid.training import distributed
from reid.data.dg_market import dg_market
from reid.training.loop import evaluate_epoch, lr_factor, train_one_epoch
from reid.training.losses import active_loss_names, build_losses, loss_optimizer, shared_loss_parameters
from reid.models.backbones import (BACKBONE_FLAGS, PretrainedWeightsUnavailable, backbone_input_size, build_model,
                   parameter_groups)
from reid.data.samplers import PKSampler, pk_epoch_length
from reid.runtime import memory_format, resolve_cpu_bf16, set_cpu_threads, use_channels_last
from reid.runs import (FORMAT_VERSION, copy_code, draw_curves, ensure_writable_folder, load_checkpoint, load_opts,
                   load_weights, loader_workers, os_error_line, restore_rng_states, rng_states, save_atomic,
                   save_opts, seed_everything, select_device)

# On --resume these come from the command line (they describe the machine); the rest from opts.yaml.
MACHINE_OPTIONS = ('gpu_ids', 'num_workers', 'data_dir', 'model_dir', 'cache_dir')
SNAPSHOT_EVERY = 10
# Options that change the network: --resume refuses them when they differ from the run's opts.yaml.
ARCHITECTURE_OPTIONS = ('backbone', 'PCB', 'stride', 'linear_num', 'h', 'w', 'bnneck', 'usam') + tuple(BACKBONE_FLAGS)

# Recipes as flag values, applied as parser defaults (explicit flags win; opts.yaml records what was resolved).
PRESETS = {
    # the original's softmax baseline (Market-1501: Rank@1 88.24%, mAP 70.68% with ResNet-50)
    'seed': dict(optimizer='sgd', lr=0.05, backbone_lr_mult=0.1, weight_decay=5e-4, total_epoch=60, steps=None,
                 warm_epoch=0, batchsize=32, h=256, w=128, stride=2, erasing_p=0.0, label_smoothing=0.0,
                 bnneck=False, triplet=False, center=False, droprate=0.5, linear_num=512),
    # Bag of Tricks strong baseline (Luo et al., CVPRW 2019; Market-1501: Rank@1 94.5%, mAP 85.9%)
    'bot': dict(optimizer='adam', lr=3.5e-4, backbone_lr_mult=1.0, weight_decay=5e-4, total_epoch=120,
                steps='40,70', warm_epoch=10, batchsize=64, num_instances=4, sampler='pk', h=256, w=128, stride=1,
                erasing_p=0.5, label_smoothing=0.1, bnneck=True, triplet=True, triplet_mining='batch_hard',
                center=True),
    # the quick start's recipe for a CPU: ResNet-18 from scratch at 64x32 for 6 epochs. Chosen by bench/tricks.py
    # on the demo set: as good as the SGD softmax recipe trained 5x longer (README, "Tricks on the demo set")
    'quick': dict(backbone='resnet18', scratch=True, h=64, w=32, optimizer='adam', lr=1e-3, backbone_lr_mult=1.0,
                  weight_decay=5e-4, total_epoch=6, cosine=True, steps=None, warm_epoch=0, batchsize=32, stride=1,
                  erasing_p=0.0, label_smoothing=0.1, bnneck=True, triplet=False, center=False, cache=True),
}


def build_parser():
    p = argparse.ArgumentParser(description='Train a re-ID network (softmax loss + optional metric losses).')
    p.add_argument('--preset', default=None, choices=sorted(PRESETS),
                   help='a recipe: seed (the original softmax baseline), bot (Bag of Tricks) or quick '
                        '(the quick start on a CPU); flags override it')
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
    for flag, (name, size) in BACKBONE_FLAGS.items():
        if flag != 'use_dense':
            p.add_argument(f'--{flag}', action='store_true',
                           help=f'{name} backbone' + (f' ({size[0]}x{size[1]})' if size else ''))
    p.add_argument('--backbone', default='resnet50', type=str,
                   help='any torchvision classification model name (resnet18, ...) or timm:<name>')
    p.add_argument('--scratch', action='store_true', help='random initialisation instead of ImageNet weights')
    p.add_argument('--PCB', action='store_true', help='Part-based Convolutional Baseline (6 parts, 384x192)')
    p.add_argument('--warm_epoch', default=0, type=int, help='epochs of linear learning-rate warm-up')
    p.add_argument('--total_epoch', default=60, type=int)
    p.add_argument('--lr', default=0.05, type=float, help='learning rate of the new layers')
    p.add_argument('--backbone_lr_mult', default=0.1, type=float,
                   help='backbone lr = lr x this (0.1: the original, also with --scratch; bench/tricks.py)')
    p.add_argument('--weight_decay', default=5e-4, type=float)
    p.add_argument('--optimizer', default='sgd', choices=('sgd', 'adam'),
                   help='sgd (momentum 0.9, nesterov; the original) or adam (BoT)')
    p.add_argument('--steps', default=None, type=str,
                   help='epochs where the lr drops x0.1, e.g. 40,70 (default: one drop at 2/3 of training)')
    p.add_argument('--cosine', action='store_true', help='cosine learning-rate decay instead of the step')
    p.add_argument('--droprate', default=0.5, type=float)
    p.add_argument('--h', default=None, type=int, help='input height (default: the layout\'s, 256 for people; 384 with --PCB)')
    p.add_argument('--w', default=None, type=int, help='input width (default: the layout\'s, 128 for people; 192 with --PCB)')
    p.add_argument('--pad', default=None, type=int,
                   help='padding before the random crop (default 10 at width 128, scaled with --w; 0 with --PCB; 0: no crop)')
    p.add_argument('--fp16', action='store_true', help='float16 mixed precision (CUDA)')
    p.add_argument('--bf16', action='store_true', help='bfloat16 mixed precision (CUDA or CPU)')
    p.add_argument('--seed', default=0, type=int)
    p.add_argument('--num_workers', default=None, type=int,
                   help='data loading processes (default 2 with CUDA, 0 = in the main process on the CPU)')
    p.add_argument('--usam', action='store_true', help='USAM attention after the stem and layer1 (ResNet)')
    p.add_argument('--FSGD', action='store_true', help="fused SGD/Adam kernels (torch's fused=True; no apex)")
    p.add_argument('--bnneck', action='store_true',
                   help="BoT's head: pooled feature -> BN -> bias-free classifier (metric losses before BN)")
    g = p.add_argument_group('losses', 'extra terms added to the softmax loss (losses.py)')
    g.add_argument('--triplet', action='store_true', help='triplet loss, margin 0.3')
    g.add_argument('--triplet_mining', default='pairs', choices=('pairs', 'batch_hard'),
                   help="pairs: the original's hard-pair miner on normalised features; batch_hard: BoT's")
    g.add_argument('--circle', action='store_true', help='circle loss (m 0.25, gamma 32)')
    g.add_argument('--arcface', action='store_true', help='ArcFace loss (margin 28.6 degrees, scale 64)')
    g.add_argument('--cosface', action='store_true', help='CosFace loss (margin 0.35, scale 64)')
    g.add_argument('--sphere', action='store_true', help='SphereFace loss (margin 4)')
    g.add_argument('--contrast', action='store_true', help='contrastive loss (margins 0 and 1)')
    g.add_argument('--lifted', action='store_true', help='generalised lifted structure loss (margins 0 and 1)')
    g.add_argument('--instance', action='store_true', help='instance loss, each image its own class (--ins_gamma)')
    g.add_argument('--instance_id', action='store_true', help='instance loss with the ids (--ins_gamma)')
    g.add_argument('--ins_gamma', default=32, type=float, help='scale of the instance loss')
    g.add_argument('--center', action='store_true', help='center loss (weight 0.0005, centres SGD at lr 0.5)')
    g.add_argument('--label_smoothing', default=0.0, type=float, help='label smoothing of the softmax loss')
    g = p.add_argument_group('more of the original', 'weight averaging, DG-Market, adversarial training')
    g.add_argument('--wa', action='store_true',
                   help='weight averaging (EMA 0.996) from --wa_start of training on -> net_average.pth')
    g.add_argument('--wa_start', default=0.8, type=float, help='fraction of training where --wa starts')
    g.add_argument('--DG', action='store_true',
                   help='DG-Market images for a consistency term after --wa_start (turns --wa on)')
    g.add_argument('--dg_dir', default='../DG-Market', type=str, help='the unzipped DG-Market folder')
    g.add_argument('--adv', default=0.0, type=float,
                   help='weight of the softmax loss on opposite-direction (ODFA) images; 0: off')
    g.add_argument('--aiter', default=10, type=int, help='craft --adv images every this many steps')
    p.add_argument('--sampler', default=None, choices=('random', 'pk'),
                   help='random (shuffle) or pk (P ids x K images per batch; the default with a metric loss)')
    p.add_argument('--num_instances', default=4, type=int, help='K: images per id in a P x K batch')
    g = p.add_argument_group('speed', 'memory format, CPU bf16, compile, image cache, several processes')
    g.add_argument('--cpu_bf16', default='auto', choices=('auto', 'on', 'off'),
                   help='on the CPU: bf16 autocast (auto: where the CPU has native bf16, e.g. avx512_bf16 or AMX)')
    g.add_argument('--channels_last', default='auto', choices=('auto', 'on', 'off'),
                   help='run convolutions in the channels_last memory format (auto: on)')
    g.add_argument('--compile', action='store_true', help='torch.compile the network for training (PyTorch 2)')
    g.add_argument('--cache', action='store_true',
                   help='decode every training image once into a uint8 cache and augment whole batches on the device')
    g.add_argument('--cache_dir', default=None, type=str, help='where --cache writes (default <data_dir>/cache)')
    g.add_argument('--sync_bn', action='store_true', help='with torchrun on CUDA: BatchNorm statistics over all GPUs')
    p.add_argument('--resume', action='store_true', help='continue <model_dir>/<name> from resume.pth')
    p.add_argument('--overwrite', action='store_true',
                   help='replace an existing run of the same --name (its net_*.pth are deleted)')
    return p


def parse_options(argv=None):
    """Return the parsed flags with --preset's values as defaults, so every explicit flag still wins."""
    parser = build_parser()
    preset = parser.parse_known_args(argv)[0].preset
    if preset:
        parser.set_defaults(**PRESETS[preset])
    return parser.parse_args(argv)


def milestones(steps):
    """Return the 0-based epochs of --steps ('40,70') as a tuple of ints; ValueError naming the flag."""
    try:
        values = tuple(int(s) for s in str(steps).split(',') if s.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise ValueError(f"--steps {steps}: expected positive epoch numbers separated by commas, e.g. '40,70'")
    return values


def resolved_opts(opts):
    """Return a copy of parsed options with sizes filled in and combinations checked (ValueError otherwise)."""
    o = Namespace(**vars(opts))
    size = backbone_input_size(vars(o)) or (None, None)   # Swin/ViT need their own size
    # explicit flags win, then the backbone's size, then PCB's, then the prepared layout's
    o.h, o.w = input_size(o.data_dir, o.h or size[0], o.w or size[1], o.PCB)
    if o.pad is None:  # the original PCB recipe has no pad + crop
        o.pad = 0 if o.PCB else round(10 * o.w / 128)
    if o.total_epoch < 1:
        raise ValueError(f'--total_epoch {o.total_epoch}: must be at least 1')
    if o.batchsize < 2:
        raise ValueError(f'--batchsize {o.batchsize}: BatchNorm needs at least 2 images per batch')
    if o.fp16 and o.bf16:
        raise ValueError('--fp16 and --bf16: pick one')
    if not 0.0 <= o.erasing_p <= 1.0:
        raise ValueError(f'--erasing_p {o.erasing_p}: must be between 0 and 1')
    if not 0.0 <= o.label_smoothing < 1.0:
        raise ValueError(f'--label_smoothing {o.label_smoothing}: must be in [0, 1)')
    metric = active_loss_names(vars(o))
    if o.steps is not None:
        milestones(o.steps)
    if o.DG:
        o.wa = True  # the original: the averaged model is DG's teacher
    if o.aiter < 1:
        raise ValueError(f'--aiter {o.aiter}: must be at least 1')
    if o.sampler is None:
        o.sampler = 'pk' if metric else 'random'
    if o.PCB and (metric or o.bnneck):
        raise ValueError(f'--PCB does not combine with --{(metric or ["bnneck"])[0]}')
    return o


def amp_settings(opts, device):
    """Return (autocast dtype or None, GradScaler or None) for --fp16/--bf16 on `device`."""
    if opts.fp16:
        if device.type != 'cuda':
            raise ValueError('--fp16 needs CUDA; use --bf16 for mixed precision on the CPU')
        return torch.float16, torch.amp.GradScaler('cuda')
    return (torch.bfloat16 if opts.bf16 else None), None


def training_state(epoch, model, optimizer, scheduler, scaler, history, metric_losses, loss_opt, averaged,
                   classes=None):
    """Return what resume.pth holds: everything needed to continue after `epoch` completed epochs (the
    losses' own parameters, e.g. centres and ArcFace weights, the centres' optimizer and --wa's average).

    `classes` (the training id folders) lets --resume refuse a data folder with other ids.
    """
    return {'format': FORMAT_VERSION, 'epoch': epoch, 'model': model.state_dict(),
            'optimizer': optimizer.state_dict(), 'scheduler': scheduler.state_dict(),
            'scaler': scaler.state_dict() if scaler else None, 'rng': rng_states(), 'history': history,
            'losses': metric_losses.state_dict(),
            'loss_optimizer': loss_opt.state_dict() if loss_opt is not None else None,
            'averaged': averaged.state_dict() if averaged is not None else None,
            'classes': list(classes) if classes is not None else None}


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
    # Every image once, now: a damaged file stops the run here with its name, not hours later in a loader.
    require_readable_images([p for s in (train_set, val_set) if s is not None for p, _ in s.samples])
    return train_set, val_set


def optimizer_and_scheduler(model, metric_losses, opts, steps_per_epoch):
    """Return (optimizer, the losses' own optimizer or None, per-step LR schedule of the first).

    The one place parameters meet optimizers: the backbone at lr x backbone_lr_mult, the head and the losses'
    class weights (arcface/cosface/sphere) at lr; the centres of --center in their own SGD (losses.py).
    """
    groups = parameter_groups(model, opts.lr, opts.backbone_lr_mult, shared_loss_parameters(metric_losses))
    # torch's fused update on every device (--FSGD, the original's flag for apex's, asks for the same): on a
    # 2-core CPU it steps ResNet-18 7x (Adam) and 3x (SGD) faster than the multi-tensor update (README, Figures)
    if opts.optimizer == 'adam':
        optimizer = torch.optim.Adam(groups, lr=opts.lr, weight_decay=opts.weight_decay, fused=True)
    else:
        optimizer = torch.optim.SGD(groups, lr=opts.lr, weight_decay=opts.weight_decay, momentum=0.9,
                                    nesterov=True, fused=True)
    drops = milestones(opts.steps) if opts.steps else None
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(
        step, steps_per_epoch, opts.total_epoch, opts.warm_epoch, opts.cosine, drops))
    return optimizer, loss_optimizer(metric_losses), scheduler


def train_loader(train_set, opts, epoch, steps_per_epoch, pin):
    """Return epoch `epoch`'s DataLoader: shuffled, or P x K batches with --sampler pk; its order is a function
    of (seed, epoch) only."""
    generator = epoch_generator(opts.seed, epoch)
    common = dict(num_workers=opts.num_workers, pin_memory=pin, generator=generator)
    if opts.sampler == 'pk':
        sampler = PKSampler(train_set.targets, opts.batchsize, opts.num_instances, generator, steps_per_epoch)
        return DataLoader(train_set, batch_sampler=sampler, **common)
    drop_last = len(train_set) > opts.batchsize
    return DataLoader(train_set, batch_size=opts.batchsize, shuffle=True, drop_last=drop_last, **common)


def training_batches(train_set, opts, device, epoch, steps_per_epoch, pin, pixels=None):
    """Return epoch `epoch`'s (images, labels) batches: train_loader's DataLoader, or with torchrun this rank's
    share of each of its batches, or with --cache whole batches augmented on `device` from `pixels`; always in
    train_loader's sample order."""
    loader = train_loader(train_set, opts, epoch, steps_per_epoch, pin)
    rank, world = distributed.rank(), distributed.world_size()
    if pixels is None and world == 1:
        return loader
    sampler = loader.batch_sampler
    # the draw a DataLoader makes first (its workers' base seed); then the sampler gives the DataLoader's order
    seed = int(torch.empty((), dtype=torch.int64).random_(generator=loader.generator))
    if world > 1:  # every rank draws the same global batches and keeps its share
        sampler = distributed.ShardedBatches(sampler, rank, world)
    if pixels is None:
        return DataLoader(train_set, batch_sampler=sampler, num_workers=opts.num_workers, pin_memory=pin,
                          generator=torch.Generator().manual_seed(seed + rank))
    from reid.data.augment import CachedBatches
    return CachedBatches(pixels, train_set.targets, sampler, device, seed + rank, pad=opts.pad,
                         erasing_p=opts.erasing_p, jitter=opts.color_jitter)


def cached_pixels(train_set, opts):
    """Return the uint8 (N, h, w, 3) memory map of the training images (augment.image_cache), built once."""
    from reid.data.augment import CACHE_FOLDER, image_cache
    cache_dir = Path(opts.cache_dir) if opts.cache_dir else Path(opts.data_dir) / CACHE_FOLDER
    return image_cache([p for p, _ in train_set.samples], opts.h, opts.w, cache_dir, train_set.root.name)


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


def epoch_steps(train_set, opts):
    """Return the optimizer steps per epoch (fixed for the run)."""
    if opts.sampler == 'pk':
        return pk_epoch_length(train_set.targets, opts.batchsize, opts.num_instances, opts.seed)
    # Drop a last partial batch (BatchNorm fails on one image) unless the whole split fits in one batch.
    return len(train_set) // opts.batchsize if len(train_set) > opts.batchsize else 1


def weight_average(model):
    """Return --wa's averaged copy of `model`: an exponential moving average with decay 0.996 (the original)."""
    from torch.optim.swa_utils import AveragedModel, get_ema_avg_fn

    return AveragedModel(model, avg_fn=get_ema_avg_fn(0.996))


def dg_batches(opts, epoch, pin):
    """Yield DG-Market batches (view1, view2, _) of max(8, batchsize / 2) images, forever, in an order that is
    a function of (seed, epoch)."""
    dg_set = dg_market(opts.dg_dir, train_transform(opts.h, opts.w, opts.pad, opts.erasing_p, opts.color_jitter))
    generator = torch.Generator().manual_seed(opts.seed * 1_000_003 + epoch + 500_000)
    while True:
        yield from DataLoader(dg_set, batch_size=min(len(dg_set), max(8, opts.batchsize // 2)), shuffle=True,
                              drop_last=True, num_workers=opts.num_workers, pin_memory=pin, generator=generator)


def restored_progress(path, model, optimizer, scheduler, scaler, metric_losses, loss_opt, rank=0, classes=None):
    """Load resume.pth into the training objects and the RNGs; return (history, completed epochs).

    ValueError naming the file when it was written by a newer toolkit, for other ids than `classes`, or for
    another network.
    """
    # CPU first: RNG states must stay CPU tensors; load_state_dict moves the rest to the model's device.
    state = load_checkpoint(path, map_location='cpu')
    if not isinstance(state, dict) or 'model' not in state or 'epoch' not in state:
        raise ValueError(f'{path}: not a resume.pth written by train.py')
    if int(state.get('format', 0) or 0) > FORMAT_VERSION:
        raise ValueError(f'{path}: written by a newer version of this toolkit (format {state["format"]}); '
                         'update the code')
    saved = state.get('classes')
    if saved is not None and classes is not None and list(saved) != list(classes):
        extra, lost = sorted(set(classes) - set(saved)), sorted(set(saved) - set(classes))
        raise ValueError(f'{path}: the run was trained on {len(saved)} ids, --data_dir now has {len(classes)} '
                         f'(new: {extra[:5]}, missing: {lost[:5]}); resume with the original --data_dir '
                         f'or start a new --name')
    load_weights(model, state['model'], path)
    optimizer.load_state_dict(state['optimizer'])
    scheduler.load_state_dict(state['scheduler'])
    if scaler is not None and state['scaler'] is not None:
        scaler.load_state_dict(state['scaler'])
    metric_losses.load_state_dict(state.get('losses', {}))
    if loss_opt is not None:
        loss_opt.load_state_dict(state['loss_optimizer'])
    per_rank = state.get('rng_per_rank') or [state['rng']]  # torchrun: each rank its own RNG state
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
        other_network = [k for k in ignored if k in ARCHITECTURE_OPTIONS]
        if other_network:  # silently training the saved network instead would surprise; say so and stop
            k = other_network[0]
            raise ValueError(f'--resume with --{k} {getattr(opts, k)}: the run in {run_dir} is a {k}={saved[k]} '
                             f'network; drop --{k} to continue it, or train the new network under another --name')
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
    metric_losses = build_losses(vars(opts), opts.nclasses, getattr(model, 'feature_dim', 0)).to(device)
    steps_per_epoch = epoch_steps(train_set, opts)
    optimizer, loss_opt, scheduler = optimizer_and_scheduler(model, metric_losses, opts, steps_per_epoch)

    history = {'train_loss': [], 'train_err': [], 'val_loss': [], 'val_err': []}
    first_epoch, averaged = 0, None
    if opts.DG:
        dg_market(opts.dg_dir, None)  # a missing folder fails now, not after 80% of training
    if not opts.resume and (run_dir / 'opts.yaml').exists() and not opts.overwrite:
        raise ValueError(f'{run_dir}: a run of this --name exists; continue it with --resume, pick another '
                         f'--name, or replace it with --overwrite')
    distributed.barrier()  # every rank has looked at the run folder before rank 0 writes into it
    if opts.resume:
        history, first_epoch = restored_progress(run_dir / 'resume.pth', model, optimizer, scheduler, scaler,
                                                 metric_losses, loss_opt, rank, train_set.classes)
        saved_average = load_checkpoint(run_dir / 'resume.pth').get('averaged')
        if saved_average is not None:
            averaged = weight_average(model)
            averaged.load_state_dict(saved_average)
        log(f'resuming {run_dir} after epoch {first_epoch} of {opts.total_epoch}'
            + (' (already complete)' if first_epoch >= opts.total_epoch else ''))
    elif rank == 0:
        ensure_writable_folder(run_dir, '--model_dir/--name')
        for stale in run_dir.glob('net_*.pth'):  # snapshots of the run being replaced must not mix with ours
            stale.unlink()
        opts.format_version = FORMAT_VERSION
        save_opts(opts, run_dir / 'opts.yaml')
        copy_code(Path(__file__).resolve().parent, run_dir)
        save_atomic(model.state_dict(), run_dir / 'net_init.pth')
        # resume.pth from the start: a run stopped in its first epoch can --resume too
        save_atomic(training_state(0, model, optimizer, scheduler, scaler, history, metric_losses, loss_opt,
                                   averaged, train_set.classes), run_dir / 'resume.pth')

    pin = device.type == 'cuda'
    pixels = cached_pixels(train_set, opts) if opts.cache else None
    network = distributed.wrap(model, device, opts.sync_bn)  # DDP with several processes
    # the compiled wrapper shares the parameters; checkpoints keep saving `model`'s plain state_dict
    network = torch.compile(network) if opts.compile else network
    val_loader = None
    if val_set is not None:
        val_loader = DataLoader(val_set, batch_size=opts.batchsize, shuffle=False,
                                num_workers=opts.num_workers, pin_memory=pin)
    last_epoch = opts.total_epoch if stop_after is None else min(opts.total_epoch, first_epoch + stop_after)
    for epoch in range(first_epoch, last_epoch):
        start, lr = time.perf_counter(), optimizer.param_groups[-1]['lr']
        if opts.wa and averaged is None and epoch >= opts.wa_start * opts.total_epoch:
            averaged = weight_average(model)
        # the original: DG's consistency term joins strictly after --wa starts, with the average as teacher
        dg = dg_batches(opts, epoch, pin) if opts.DG and epoch > opts.wa_start * opts.total_epoch else None
        loader = training_batches(train_set, opts, device, epoch, steps_per_epoch, pin, pixels)
        loss, err = train_one_epoch(network, loader, optimizer, scheduler, device, amp_dtype, scaler,
                                    desc=f'epoch {epoch + 1}/{opts.total_epoch}', metric_losses=metric_losses,
                                    loss_optimizer=loss_opt, label_smoothing=opts.label_smoothing,
                                    adversarial=(opts.adv, opts.aiter) if opts.adv > 0 else None,
                                    dg_batches=dg, teacher=averaged)
        if not math.isfinite(loss):  # the weights are now garbage: keep the last good checkpoint as it is
            raise TrainingStopped(
                f'epoch {epoch + 1}: the training loss is {loss} (not finite); stopped without saving it. '
                f'{run_dir / "resume.pth"} keeps the {epoch} good epoch(s); lower --lr (or add --warm_epoch) '
                'and start again, or --resume to retry')
        if averaged is not None:
            from torch.optim.swa_utils import update_bn

            averaged.update_parameters(model)
            update_bn(train_loader(train_set, opts, epoch, steps_per_epoch, pin), averaged, device)
            if rank == 0:
                save_atomic(averaged.module.state_dict(), run_dir / 'net_average.pth')
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
            state = training_state(epoch + 1, model, optimizer, scheduler, scaler, history, metric_losses, loss_opt,
                                   averaged, train_set.classes)
            state['rng_per_rank'] = rng_per_rank
            save_atomic(state, run_dir / 'resume.pth')
            draw_curves(history, run_dir / 'train.jpg')
            if train_set.skipped:
                log(f'{len(train_set.skipped)} unreadable image(s) skipped so far (others took their place): '
                    + ', '.join(list(train_set.skipped)[:5]))
        distributed.barrier()  # resume.pth is complete before any rank may stop
    return history


class TrainingStopped(ValueError):
    """The run stopped early (a non-finite loss); the message says what is kept and how to go on."""


def interrupted_message(opts):
    """Return the line train.py prints on Ctrl-C: what resume.pth holds and the command that continues."""
    run_dir = Path(opts.model_dir) / opts.name
    try:
        done = int(load_checkpoint(run_dir / 'resume.pth')['epoch'])
    except (ValueError, KeyError, TypeError):
        return 'interrupted before the run saved anything; start it again'
    return (f'interrupted; {run_dir / "resume.pth"} holds {done} completed epoch(s). Continue from epoch '
            f'{done + 1} with: python train.py --name {opts.name} --model_dir {opts.model_dir} '
            f'--data_dir {opts.data_dir} --resume')


def main(argv=None):
    opts = parse_options(argv)
    try:
        run_training(opts)
    except (ValueError, PretrainedWeightsUnavailable) as e:
        raise SystemExit(f'train.py: {e}') from None
    except KeyboardInterrupt:  # Ctrl-C: checkpoints are atomic, so resume.pth is whole
        raise SystemExit(f'train.py: {interrupted_message(opts)}') from None
    except OSError as e:
        raise SystemExit(f'train.py: {os_error_line(e)}') from None
    finally:
        distributed.shutdown()


if __name__ == '__main__':
    main(sys.argv[1:])
