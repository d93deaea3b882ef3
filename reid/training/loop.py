"""The training loops: the learning-rate schedule, one training epoch on a list of loss terms, a val pass.

Everything takes the model, a DataLoader and a device; nothing here parses flags or writes files.
"""
import math
import time

import torch
from tqdm import tqdm

from reid.models.heads import cross_entropy_loss, predicted_classes
from reid.runtime import autocast
from reid.training.terms import Batch, total_loss

# The original's schedule constants: each step decay multiplies by STEP_DECAY; the cosine ends at COSINE_FLOOR of
# the base rate; both warm-ups (the learning rate's, the loss's) start at WARM_START and rise linearly to 1.
STEP_DECAY = 0.1
COSINE_FLOOR = 0.01
WARM_START = 0.1


def lr_factor(step, steps_per_epoch, total_epoch, warm_epoch=0, cosine=False, milestones=None,
              cosine_floor=COSINE_FLOOR):
    """Return the multiplier of a group's base learning rate at optimizer step `step` (0-based).

    Step decay (default): x0.1 from epoch 2/3 * total_epoch on (none when that is epoch 0, i.e. 1-epoch runs);
    with `milestones` (0-based epochs, e.g. (40, 70)) x0.1 from each of them on.
    `cosine`: cosine annealing per epoch from 1 towards `cosine_floor` (reached at epoch total_epoch, after the
    last one). `warm_epoch` > 0: linear learning-rate warm-up from 0.1 to 1 over the first warm_epoch epochs.
    """
    epoch = step // steps_per_epoch
    if cosine:
        factor = cosine_floor + (1 - cosine_floor) * (1 + math.cos(math.pi * epoch / total_epoch)) / 2
    elif milestones:
        factor = STEP_DECAY ** sum(epoch >= m for m in milestones)
    else:
        milestone = (2 * total_epoch) // 3   # the original's one decay, two thirds into the run
        factor = STEP_DECAY if 0 < milestone <= epoch else 1.0
    warm_steps = warm_epoch * steps_per_epoch
    if step < warm_steps:
        factor *= WARM_START + (1 - WARM_START) * step / warm_steps
    return factor


def cosine_floors(groups, lr):
    """Return each parameter group's cosine floor as a share of its own lr: the original's
    CosineAnnealingLR(eta_min=0.01 * lr) gives every group the one floor 0.01 x lr (the backbone, at 0.1 x lr,
    ends at a tenth of its own rate, not at a hundredth)."""
    return [min(1.0, COSINE_FLOOR * lr / group['lr']) for group in groups]


def warm_loss_factor(step, steps_per_epoch, warm_epoch):
    """Return the factor on the loss at optimizer step `step` (0-based) under the original's warm-up: from
    0.1 + 0.9 / W on the first step up by 0.9 / W each step to 1 at the last of the W = warm_epoch epochs' steps."""
    warm_steps = warm_epoch * steps_per_epoch
    return min(1.0, WARM_START + (1 - WARM_START) * (step + 1) / warm_steps) if step < warm_steps else 1.0


def train_one_epoch(model, loader, state, terms, runtime, desc='train', on_step=None):
    """Run one epoch of training on the loss sum(weight x value) of `terms` (reid.training.terms), stepping the
    optimizers of `state` (a reid.training.state.TrainingState) and its schedule after every step.

    `runtime` gives the device and the autocast dtype. The state's `loss_optimizer` steps the losses that own
    their learning rate (center); its `scaler` (fp16) scales the loss; its `loss_scale(step)` multiplies the loss
    at the schedule's step (the original's warm-up; weight decay stays unscaled). `on_step(step, batch loss,
    batch top-1 error, batch size)` is called after every optimizer step (train.py --tensorboard). Returns
    (mean loss, top-1 error) over the samples seen.
    """
    model.train()
    needs_feature = any(term.needs_feature for term in terms)
    loss_sum, correct, seen, start = 0.0, 0, 0, time.perf_counter()
    bar = tqdm(loader, desc=desc, leave=False, dynamic_ncols=True)
    for step, (images, labels) in enumerate(bar):
        images = images.to(runtime.device, non_blocking=True)
        labels = labels.to(runtime.device, non_blocking=True)
        with autocast(runtime.device, runtime.amp_dtype):
            if needs_feature:
                logits, feature = model(images, return_metric_feature=True)
            else:
                logits, feature = model(images), None
            loss = total_loss(terms, Batch(model, images, labels, step, logits, feature))
            if state.loss_scale is not None:   # LambdaLR counts optimizer steps in last_epoch
                loss = loss * state.loss_scale(state.scheduler.last_epoch)
        optimizer_step(state, loss, terms)
        n, batch_loss = labels.shape[0], loss.item()
        batch_correct = (predicted_classes(logits.detach()) == labels).sum().item()
        if on_step is not None:  # before the schedule moves on: the learning rate this step used
            on_step(step, batch_loss, 1.0 - batch_correct / n, n)
        state.scheduler.step()
        loss_sum += batch_loss * n
        correct += batch_correct
        seen += n
        rate = 'tracklet_s' if images.dim() == 5 else 'img_s'   # clips [B, T, 3, h, w] count tracklets
        bar.set_postfix({'loss': f'{loss_sum / seen:.4f}', 'acc': f'{correct / seen:.3f}',
                         rate: f'{seen / (time.perf_counter() - start):.1f}'})
    if seen == 0:
        raise ValueError('the training loader gave no batch (is the training split empty?)')
    return loss_sum / seen, 1.0 - correct / seen


def optimizer_step(state, loss, terms):
    """Back-propagate `loss` and step every optimizer of `state` once (through the fp16 scaler when there is one);
    each term sees the gradients between the two (the centres rescale theirs, torchrun averages the losses')."""
    for opt in state.optimizers:
        opt.zero_grad(set_to_none=True)
    if state.scaler is not None:
        state.scaler.scale(loss).backward()
        if state.loss_optimizer is not None:
            state.scaler.unscale_(state.loss_optimizer)
    else:
        loss.backward()
    for term in terms:
        term.after_backward()
    for opt in state.optimizers:
        if state.scaler is not None:
            state.scaler.step(opt)
        else:
            opt.step()
    if state.scaler is not None:
        state.scaler.update()


@torch.no_grad()
def evaluate_epoch(model, loader, device, amp_dtype=None, desc='val'):
    """Return (mean loss, top-1 error) of `model` in eval mode over `loader`."""
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    for images, labels in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True):
        images, labels = images.to(device), labels.to(device)
        with autocast(device, amp_dtype):
            logits = model(images).float()
        loss_sum += cross_entropy_loss(logits, labels).item() * labels.shape[0]
        correct += (predicted_classes(logits) == labels).sum().item()
        seen += labels.shape[0]
    return loss_sum / max(seen, 1), 1.0 - correct / max(seen, 1)
