"""train.py's work, in the order a run goes: options (recipe, resume) -> runtime -> data -> network and loss
terms -> optimizers -> the run folder (start or continue) -> the epoch loop, saving after every epoch.

Several processes (torchrun, reid.training.distributed): --batchsize is the global batch, each rank takes its
share; rank 0 alone logs and writes; resume.pth keeps every rank's RNG state.
"""
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch.utils.data import DataLoader

from reid.data.dg_market import dg_market
from reid.data.images import ReIDImageFolder, require_readable_images
from reid.data.samplers import PKSampler, pk_epoch_length
from reid.data.tracklets import TrackletDataset
from reid.data.transforms import eval_transform, train_transform
from reid.models.heads import build_model, parameter_groups
from reid.runs import RunFolder, rng_states, seed_everything
from reid.runtime import choose_runtime, log_small_maps
from reid.spec import NetworkSpec
from reid.training import distributed
from reid.training.curves import draw_curves
from reid.training.losses import build_losses, loss_optimizer, shared_loss_parameters
from reid.training.loop import cosine_floors, evaluate_epoch, lr_factor, train_one_epoch, warm_loss_factor
from reid.training.recipe import milestones, resolved_opts, resumed_options
from reid.training.state import TrainingState
from reid.training.terms import ConsistencyTerm, loss_terms

logger = logging.getLogger(__name__)
CODE_DIR = Path(__file__).resolve().parents[2]   # the commands and the reid package: copied into every run
# An epoch's data order is seeded by seed * EPOCH_SEED_STRIDE + epoch: a prime larger than any epoch count keeps
# the (seed, epoch) pairs of different runs apart; DG-Market's batches draw from epochs shifted by DG_SEED_OFFSET.
EPOCH_SEED_STRIDE = 1_000_003
DG_SEED_OFFSET = 500_000
SGD_MOMENTUM = 0.9   # the original's (with Nesterov)
DG_MIN_BATCH = 8     # DG-Market pairs per step: half the batch, at least this many (the original's)


class TrainingStopped(ValueError):
    """The run stopped early (a non-finite loss or weights); the message says what is kept and how to go on."""


def epoch_generator(seed, epoch):
    """Return the generator that orders epoch `epoch` (and seeds its workers): a function of (seed, epoch)
    only, so a resumed run sees the same data order as an uninterrupted one."""
    return torch.Generator().manual_seed(seed * EPOCH_SEED_STRIDE + epoch)


def datasets(opts):
    """Return (train_set, val_set or None): train or train_all, and val labelled with train's class indices; for
    a tracklet network (a video layout, --temporal) their tracklets, train's frames drawn by --sample and val's
    evenly, --seq_len of each."""
    data_dir = Path(opts.data_dir)
    split = data_dir / ('train_all' if opts.train_all else 'train')
    augment = train_transform(opts.h, opts.w, opts.pad, opts.erasing_p, opts.color_jitter)
    if getattr(opts, 'temporal', None):
        train_set = TrackletDataset(split, augment, opts.seq_len, opts.sample)
    else:
        train_set = ReIDImageFolder(split, augment)
    val_set = None
    if (data_dir / 'val').is_dir() and getattr(opts, 'temporal', None):
        val_set = TrackletDataset(data_dir / 'val', eval_transform(opts.h, opts.w), opts.seq_len, 'evenly',
                                  train_set.class_to_idx)
    elif (data_dir / 'val').is_dir():
        val_set = ReIDImageFolder(data_dir / 'val', eval_transform(opts.h, opts.w), train_set.class_to_idx)
    # Every image once, now: a damaged file stops the run here with its name, not hours later in a loader.
    require_readable_images([p for s in (train_set, val_set) if s is not None for p, _ in s.samples])
    return train_set, val_set


def epoch_steps(train_set, opts):
    """Return the optimizer steps per epoch (fixed for the run)."""
    if opts.sampler == 'pk':
        return pk_epoch_length(train_set.targets, opts.batchsize, opts.num_instances, opts.seed)
    # Drop a last partial batch (BatchNorm fails on one image) unless the whole split fits in one batch.
    return len(train_set) // opts.batchsize if len(train_set) > opts.batchsize else 1


def optimizer_and_scheduler(model, metric_losses, opts, steps_per_epoch):
    """Return (optimizer, the losses' own optimizer or None, per-step LR schedule of the first).

    The one place parameters meet optimizers: the backbone at lr x backbone_lr_mult, the head and the losses'
    class weights (arcface/cosface/sphere) at lr; the centres of --center in their own SGD (reid.training.losses).
    """
    groups = parameter_groups(model, opts.lr, opts.backbone_lr_mult, shared_loss_parameters(metric_losses))
    # torch's fused update on every device (--FSGD, the original's flag for apex's, asks for the same): on a
    # 2-core CPU it steps ResNet-18 7x (Adam) and 3x (SGD) faster than the multi-tensor update (docs/benchmarks.md)
    if opts.optimizer == 'adam':
        optimizer = torch.optim.Adam(groups, lr=opts.lr, weight_decay=opts.weight_decay, fused=True)
    else:
        optimizer = torch.optim.SGD(groups, lr=opts.lr, weight_decay=opts.weight_decay, momentum=SGD_MOMENTUM,
                                    nesterov=True, fused=True)
    drops = milestones(opts.steps) if opts.steps else None
    lr_warm_epoch = opts.warm_epoch if opts.lr_warmup else 0
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [
        lambda step, floor=floor: lr_factor(step, steps_per_epoch, opts.total_epoch, lr_warm_epoch, opts.cosine,
                                            drops, floor)
        for floor in cosine_floors(optimizer.param_groups, opts.lr)])
    return optimizer, loss_optimizer(metric_losses), scheduler


def warm_loss_scale(opts, steps_per_epoch):
    """Return the loss's factor per optimizer step under --warm_epoch (the original's warm-up); None with
    --lr_warmup or no warm-up."""
    if opts.lr_warmup or opts.warm_epoch <= 0:
        return None
    return lambda step: warm_loss_factor(step, steps_per_epoch, opts.warm_epoch)


def train_loader(train_set, opts, epoch, steps_per_epoch, runtime):
    """Return epoch `epoch`'s DataLoader: shuffled, or P x K batches with --sampler pk; its order is a function
    of (seed, epoch) only."""
    generator = epoch_generator(opts.seed, epoch)
    common = dict(num_workers=runtime.workers, pin_memory=runtime.device.type == 'cuda', generator=generator)
    if opts.sampler == 'pk':
        sampler = PKSampler(train_set.targets, opts.batchsize, opts.num_instances, generator, steps_per_epoch)
        return DataLoader(train_set, batch_sampler=sampler, **common)
    drop_last = len(train_set) > opts.batchsize
    return DataLoader(train_set, batch_size=opts.batchsize, shuffle=True, drop_last=drop_last, **common)


def training_batches(train_set, opts, runtime, epoch, steps_per_epoch, pixels=None):
    """Return epoch `epoch`'s (images, labels) batches: train_loader's DataLoader, or with torchrun this rank's
    share of each of its batches, or with --cache whole batches augmented on the device from `pixels`; always
    in train_loader's sample order."""
    loader = train_loader(train_set, opts, epoch, steps_per_epoch, runtime)
    rank, world = distributed.rank(), distributed.world_size()
    if pixels is None and world == 1:
        return loader
    sampler = loader.batch_sampler
    # the draw a DataLoader makes first (its workers' base seed); then the sampler gives the DataLoader's order
    seed = int(torch.empty((), dtype=torch.int64).random_(generator=loader.generator))
    if world > 1:  # every rank draws the same global batches and keeps its share
        sampler = distributed.ShardedBatches(sampler, rank, world)
    if pixels is None:
        return DataLoader(train_set, batch_sampler=sampler, num_workers=runtime.workers,
                          pin_memory=runtime.device.type == 'cuda',
                          generator=torch.Generator().manual_seed(seed + rank))
    from reid.data.augment import CachedBatches
    return CachedBatches(pixels, train_set.targets, sampler, runtime.device, seed + rank,
                         dict(pad=opts.pad, erasing_p=opts.erasing_p, jitter=opts.color_jitter))


def cached_pixels(train_set, opts):
    """Return the uint8 (N, h, w, 3) memory map of the training images (augment.image_cache), built once."""
    from reid.data.augment import CACHE_FOLDER, image_cache
    cache_dir = Path(opts.cache_dir) if opts.cache_dir else Path(opts.data_dir) / CACHE_FOLDER
    return image_cache([p for p, _ in train_set.samples], opts.h, opts.w, cache_dir, train_set.root.name)


def dg_batches(opts, epoch, runtime):
    """Yield DG-Market batches (view1, view2, _) of max(DG_MIN_BATCH, batchsize / 2) images, forever, in an order
    that is a function of (seed, epoch)."""
    dg_set = dg_market(opts.dg_dir, train_transform(opts.h, opts.w, opts.pad, opts.erasing_p, opts.color_jitter))
    generator = epoch_generator(opts.seed, epoch + DG_SEED_OFFSET)
    while True:
        yield from DataLoader(dg_set, batch_size=min(len(dg_set), max(DG_MIN_BATCH, opts.batchsize // 2)), shuffle=True,
                              drop_last=True, num_workers=runtime.workers, pin_memory=runtime.device.type == 'cuda',
                              generator=generator)


def duration_text(seconds):
    """'45s', '3m05s' or '2h07m': a duration as the epoch line prints it."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f'{seconds}s'
    if seconds < 3600:
        return f'{seconds // 60}m{seconds % 60:02d}s'
    return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'


def run_eta(epoch_seconds, epochs_left):
    """Seconds the run still needs: the mean duration of this session's epochs times the epochs left."""
    return sum(epoch_seconds) / len(epoch_seconds) * epochs_left if epoch_seconds else 0.0


@dataclass
class EpochDone:
    """What one epoch of training gave the hooks after it: its mean loss and top-1 error, the learning rate it
    started with, when it started and how long the training took."""
    loss: float
    err: float
    lr: float
    start: float
    train_seconds: float


@dataclass
class Session:
    """One invocation of train.py: what the epochs and their hooks read (the state, and the few records they
    keep: the session's entry for opts.yaml until the first save, the epochs' durations)."""
    opts: object
    run: RunFolder
    runtime: object
    state: TrainingState
    terms: list
    train_set: object
    steps_per_epoch: int
    rank: int = 0
    network: object = None
    val_loader: object = None
    pixels: object = None
    board: object = None
    resumed: Optional[dict] = None
    epoch_seconds: list = field(default_factory=list)


def sample_unit(opts):
    """What a training sample is: 'tracklets' for a tracklet network (a video layout), else 'images'."""
    return 'tracklets' if getattr(opts, 'temporal', None) else 'images'


def run_training(opts, stop_after=None):
    """Train as `opts` (parsed, see reid.training.recipe.build_parser) says; return the per-epoch history dict.

    `stop_after` ends this session after that many epochs (its checkpoints allow --resume), for tests.
    """
    run = RunFolder(Path(opts.model_dir) / opts.name)
    rank, world, local_rank = distributed.init_process_group()
    if rank != 0:   # rank 0 alone says what happens (and writes files)
        logging.getLogger('reid').setLevel(logging.WARNING)
    opts, runtime = session_options(opts, run, local_rank if world > 1 else None)
    train_set, val_set = datasets(opts)
    items = sample_unit(opts)
    logger.info(f'{len(train_set)} training {items} of {len(train_set.classes)} ids'
        + (f', {len(val_set)} val {items}' if val_set is not None else ', no val split') + f'; device {runtime.device}')
    state, terms, steps_per_epoch = training_objects(opts, runtime, train_set)
    session = Session(opts, run, runtime, state, terms, train_set, steps_per_epoch, rank)
    session.resumed = start_or_resume(session)
    prepare_epochs(session, val_set)
    first_epoch = state.epoch
    last_epoch = opts.total_epoch if stop_after is None else min(opts.total_epoch, first_epoch + stop_after)
    for epoch in range(first_epoch, last_epoch):
        done = train_epoch(session, epoch)
        for hook in EPOCH_HOOKS:
            hook(session, epoch, done)
    if session.board is not None:  # final/ only once the whole run is done, not at a stop_after pause
        session.board.close(state.history if last_epoch == opts.total_epoch else None, last_epoch)
    return state.history


def session_options(opts, run, local_rank):
    """Return (the options, the runtime) of this session: a resume's recipe, the sizes filled in and checked,
    the machine's choices (said), and every RNG seeded."""
    if opts.resume:
        opts = resumed_options(opts, run)
    opts = resolved_opts(opts)
    runtime, note = choose_runtime(opts, 'train', local_rank)
    if opts.sync_bn and distributed.world_size() > 1 and runtime.device.type != 'cuda':
        raise ValueError('--sync_bn needs CUDA (BatchNorm statistics are synchronised over GPUs)')
    if note:
        logger.info(note)
    if runtime.amp_dtype is not None and runtime.precision_reason.startswith('auto'):
        logger.info(f'bf16 autocast on the CPU ({runtime.precision_reason})')
    seed_everything(opts.seed)
    if runtime.device.type == 'cuda':
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
    return opts, runtime


def training_objects(opts, runtime, train_set):
    """Return (TrainingState, the loss terms, optimizer steps per epoch): the network on the device, its losses,
    optimizers and schedules, built in a fixed order (each draws from the seeded RNG)."""
    scaler = torch.amp.GradScaler('cuda') if runtime.amp_dtype == torch.float16 else None
    nclasses = len(train_set.classes)   # a fact of the data, recorded in opts.yaml beside the recipe
    model = build_model(NetworkSpec.from_opts(opts), nclasses, pretrained=not opts.scratch)
    model = model.to(runtime.device, memory_format=runtime.memory_format)
    log_small_maps(runtime.protect_small_maps(model, (opts.h, opts.w)))
    metric_losses = build_losses(vars(opts), nclasses, getattr(model, 'feature_dim', 0)).to(runtime.device)
    terms = loss_terms(opts, metric_losses)
    steps_per_epoch = epoch_steps(train_set, opts)
    optimizer, loss_opt, scheduler = optimizer_and_scheduler(model, metric_losses, opts, steps_per_epoch)
    state = TrainingState(model, optimizer, scheduler, metric_losses, loss_opt, scaler, train_set.classes)
    state.loss_scale = warm_loss_scale(opts, steps_per_epoch)
    return state, terms, steps_per_epoch


def start_or_resume(s):
    """Start the run folder (opts.yaml, net_init.pth, a resume.pth at epoch 0) or load its resume.pth into the
    state; return this session's opts.yaml entry when resuming (recorded with its first save), else None."""
    opts, run, state = s.opts, s.run, s.state
    if opts.DG:
        dg_market(opts.dg_dir, None)  # a missing folder fails now, not after 80% of training
    if not opts.resume and run.exists() and not opts.overwrite:
        raise ValueError(f'{run.path}: a run of this --name exists; continue it with --resume, pick another '
                         f'--name, or replace it with --overwrite')
    distributed.barrier()  # every rank has looked at the run folder before rank 0 writes into it
    entry = dict(s.runtime.record(), processes=distributed.world_size(), process_group=distributed.backend())
    if opts.resume:
        state.load_state_dict(run.read_resume_state(state.classes), run.resume_file, s.rank)
        logger.info(f'resuming {run.path} after epoch {state.epoch} of {opts.total_epoch}'
              + (' (already complete)' if state.epoch >= opts.total_epoch else ''))
        return dict(entry, from_epoch=state.epoch)
    if s.rank == 0:
        run.start(dict(vars(opts), nclasses=len(state.classes)), dict(entry, from_epoch=0), CODE_DIR)
        run.save_weights(state.model.state_dict(), 'init')
        # resume.pth from the start: a run stopped in its first epoch can --resume too
        run.save(state.state_dict(), run.resume_file.name)
    return None


def prepare_epochs(s, val_set):
    """Ready what the epochs use: the --cache pixels, the network as it trains (DDP, compiled), the losses equal
    on every rank, the val loader, the TensorBoard writer."""
    opts, device = s.opts, s.runtime.device
    s.pixels = cached_pixels(s.train_set, opts) if opts.cache else None
    network = distributed.wrap(s.state.model, device, opts.sync_bn)  # DDP with several processes
    distributed.broadcast_parameters(s.state.losses)   # the losses start equal too (the terms keep them so)
    # the compiled wrapper shares the parameters; checkpoints keep saving the model's plain state_dict
    s.network = torch.compile(network) if opts.compile else network
    if val_set is not None:
        s.val_loader = DataLoader(val_set, batch_size=opts.batchsize, shuffle=False, num_workers=s.runtime.workers,
                                  pin_memory=device.type == 'cuda')
    if getattr(opts, 'tensorboard', False) and s.rank == 0:
        from reid.training.tensorboard import TrainingBoard
        s.board = TrainingBoard(s.run.tensorboard_dir, s.state.epoch * s.steps_per_epoch)


def train_epoch(s, epoch):
    """Train epoch `epoch` (0-based) on its terms and batches; return what the hooks after it read."""
    opts, state = s.opts, s.state
    start, lr = time.perf_counter(), state.optimizer.param_groups[-1]['lr']
    if opts.wa and state.averaged is None and epoch >= opts.wa_start * opts.total_epoch:
        state.start_average()
    epoch_terms = list(s.terms)
    # the original: DG's consistency term joins strictly after --wa starts, with the average as teacher
    if opts.DG and epoch > opts.wa_start * opts.total_epoch:
        epoch_terms.append(ConsistencyTerm(dg_batches(opts, epoch, s.runtime), state.averaged))
    loader = training_batches(s.train_set, opts, s.runtime, epoch, s.steps_per_epoch, s.pixels)
    on_step = s.board.step_logger(epoch * s.steps_per_epoch, state.optimizer) if s.board else None
    loss, err = train_one_epoch(s.network, loader, state, epoch_terms, s.runtime,
                                desc=f'epoch {epoch + 1}/{opts.total_epoch}', on_step=on_step)
    return EpochDone(loss, err, lr, start, time.perf_counter() - start)


def stop_on_a_non_finite_loss(s, epoch, done):
    if not math.isfinite(done.loss):  # the weights are now garbage: keep the last good checkpoint as it is
        raise TrainingStopped(
            f'epoch {epoch + 1}: the training loss is {done.loss} (not finite); stopped without saving it. '
            f'{s.run.resume_file} keeps the {epoch} good epoch(s); lower --lr (or add --warm_epoch) '
            'and start again, or --resume to retry')


def update_the_average(s, epoch, done):
    """--wa: fold this epoch's weights into the average and recompute its BatchNorm statistics."""
    if s.state.averaged is not None:
        from torch.optim.swa_utils import update_bn

        s.state.averaged.update_parameters(s.state.model)
        update_bn(train_loader(s.train_set, s.opts, epoch, s.steps_per_epoch, s.runtime), s.state.averaged,
                  s.runtime.device)


def stop_on_non_finite_weights(s, epoch, done):
    # a finite loss does not make finite weights (bf16 can break kernel taps that only see padding): check
    # everything resume.pth would hold, on every rank, before anything of this epoch is written
    broken = s.state.non_finite_entry()
    if broken:
        raise TrainingStopped(
            f'epoch {epoch + 1}: {broken} holds NaN or infinite values; stopped without saving them. '
            f'{s.run.resume_file} keeps the {epoch} good epoch(s); lower --lr, train in fp32 (--cpu_bf16 off) '
            'or --resume to retry')


def record_and_log(s, epoch, done):
    """Append the epoch's train (mean over the ranks) and val figures to the history; print the epoch line."""
    history, device = s.state.history, s.runtime.device
    loss, err = distributed.mean_over_ranks(done.loss, done.err)
    history['train_loss'].append(loss)
    history['train_err'].append(err)
    line = f'epoch {epoch + 1}/{s.opts.total_epoch} train loss {loss:.4f} err {err:.4f}'
    if s.val_loader is not None and s.rank == 0:
        val_loss, val_err = evaluate_epoch(s.state.model, s.val_loader, device, s.runtime.amp_dtype)
        history['val_loss'].append(val_loss)
        history['val_err'].append(val_err)
        line += f' | val loss {val_loss:.4f} err {val_err:.4f}'
    unit = {'tracklets': 'tracklets/s', 'images': 'img/s'}[sample_unit(s.opts)]
    line += f' | lr {done.lr:.2e} | {s.steps_per_epoch * s.opts.batchsize / done.train_seconds:.0f} {unit}'
    if device.type == 'cuda':
        line += f' | peak {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB'
    s.epoch_seconds.append(time.perf_counter() - done.start)
    logger.info(f'{line} | {s.epoch_seconds[-1]:.0f}s | run ETA '
          f'{duration_text(run_eta(s.epoch_seconds, s.opts.total_epoch - epoch - 1))}')


def log_to_tensorboard(s, epoch, done):
    if s.board is not None:
        s.board.epoch(epoch + 1, s.state.history, done.lr)


def save_the_epoch(s, epoch, done):
    """Write the epoch's checkpoints (rank 0; every rank's RNG states in resume.pth), the curves, and the
    session's opts.yaml entry with its first save."""
    state, run = s.state, s.run
    state.epoch = epoch + 1
    rng_per_rank = distributed.gathered(rng_states())  # every rank takes part; rank 0 saves them all
    if s.rank == 0:
        weights = state.model.state_dict()
        if state.averaged is not None:
            run.save_weights(state.averaged.module.state_dict(), 'average')
        if run.snapshot_due(epoch):
            run.save_weights(weights, epoch + 1)   # the original's net_010.pth after 10 epochs
        run.save_weights(weights, 'last')
        run.save(state.state_dict(rng_per_rank), run.resume_file.name)
        if s.resumed is not None:  # only once this session has saved something: a failed one leaves no trace
            run.add_runtime(s.resumed)
            s.resumed = None
        draw_curves(state.history, run.curves_file)
        if s.train_set.skipped:
            logger.info(f'{len(s.train_set.skipped)} unreadable image(s) skipped so far (others took their place): '
                  + ', '.join(list(s.train_set.skipped)[:5]))
    distributed.barrier()  # resume.pth is complete before any rank may stop


# After every epoch, in this order: nothing is written before both checks have passed.
EPOCH_HOOKS = (stop_on_a_non_finite_loss, update_the_average, stop_on_non_finite_weights, record_and_log,
               log_to_tensorboard, save_the_epoch)


def interrupted_message(opts):
    """Return the line train.py prints on Ctrl-C: what resume.pth holds and the command that continues."""
    run = RunFolder(Path(opts.model_dir) / opts.name)
    done = run.completed_epochs()
    if done is None:
        return 'interrupted before the run saved anything; start it again'
    return (f'interrupted; {run.resume_file} holds {done} completed epoch(s). Continue from epoch '
            f'{done + 1} with: python train.py --name {opts.name} --model_dir {opts.model_dir} '
            f'--data_dir {opts.data_dir} --resume')
