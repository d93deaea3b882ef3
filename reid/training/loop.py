"""The loops train.py and test.py run: learning-rate schedule, one training epoch, a val pass, feature extraction.

Everything takes the model, a DataLoader and a device; nothing here parses flags or writes files.
"""
import contextlib
import math
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from reid.training.adversarial import opposite_direction_images
from reid.training.losses import metric_loss, unweight_own_gradients
from reid.models.backbones import cross_entropy_loss, flip_sum_features, l2_normalize_features, predicted_classes


def lr_factor(step, steps_per_epoch, total_epoch, warm_epoch=0, cosine=False, milestones=None):
    """Return the multiplier of the base learning rates at optimizer step `step` (0-based).

    Step decay (default): x0.1 from epoch 2/3 * total_epoch on (none when that is epoch 0, i.e. 1-epoch runs);
    with `milestones` (0-based epochs, e.g. (40, 70)) x0.1 from each of them on.
    `cosine`: cosine annealing per epoch from 1 towards 0.01 (reached at epoch total_epoch, after the last one).
    `warm_epoch` > 0: linear warm-up from 0.1 to 1 over the first warm_epoch epochs, step by step.
    """
    epoch = step // steps_per_epoch
    if cosine:
        factor = 0.01 + 0.99 * (1 + math.cos(math.pi * epoch / total_epoch)) / 2
    elif milestones:
        factor = 0.1 ** sum(epoch >= m for m in milestones)
    else:
        milestone = (2 * total_epoch) // 3
        factor = 0.1 if 0 < milestone <= epoch else 1.0
    warm_steps = warm_epoch * steps_per_epoch
    if step < warm_steps:
        factor *= 0.1 + 0.9 * step / warm_steps
    return factor


def autocast(device, amp_dtype):
    """Return the torch.autocast context for `amp_dtype` (torch.float16/bfloat16) or a no-op for None."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def training_loss(model, images, labels, metric_losses=None, label_smoothing=0.0):
    """Return (loss, logits) of one batch: softmax (ID) loss plus the weighted metric losses (losses.py)."""
    if metric_losses:
        logits, feature = model(images, return_metric_feature=True)
        loss = cross_entropy_loss(logits.float(), labels, label_smoothing) + metric_loss(metric_losses, feature,
                                                                                         labels)
    else:
        logits = model(images)
        loss = cross_entropy_loss(logits.float(), labels, label_smoothing)
    return loss, logits


def consistency_loss(model, teacher, view1, view2):
    """The original's --DG term: symmetric KL divergence between the class probabilities of the model on one
    view and of the (weight-averaged) teacher on the other, batch mean (no gradient to the teacher)."""
    student = model(view1).float()
    teacher.eval()
    with torch.no_grad():
        target = teacher(view2).float()
    p, q = student.softmax(1), target.softmax(1)
    return (F.kl_div(target.log_softmax(1), p, reduction='batchmean')
            + F.kl_div(student.log_softmax(1), q, reduction='batchmean')) / 2


def train_one_epoch(model, loader, optimizer, scheduler, device, amp_dtype=None, scaler=None, desc='train',
                    metric_losses=None, loss_optimizer=None, label_smoothing=0.0, adversarial=None,
                    dg_batches=None, teacher=None):
    """Run one epoch of training; step `scheduler` after every optimizer step.

    `metric_losses` (an nn.ModuleDict of losses.py losses) are added to the softmax loss; `loss_optimizer`
    steps the losses that own their learning rate (center). `adversarial` = (weight, every): every `every`-th
    step adds weight x the softmax loss on opposite-direction images (--adv, --aiter). `dg_batches` (an
    iterator of (view1, view2, _) batches) with `teacher` adds 0.1 x consistency_loss (--DG).
    Returns (mean loss, top-1 error) over the samples seen. `scaler` is a torch.amp.GradScaler for fp16.
    """
    model.train()
    if metric_losses:
        metric_losses.train()
    optimizers = [optimizer] + ([loss_optimizer] if loss_optimizer is not None else [])
    loss_sum, correct, seen, start = 0.0, 0, 0, time.perf_counter()
    bar = tqdm(loader, desc=desc, leave=False, dynamic_ncols=True)
    for step, (images, labels) in enumerate(bar):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            loss, logits = training_loss(model, images, labels, metric_losses, label_smoothing)
            if adversarial and step % adversarial[1] == 0:
                crafted = opposite_direction_images(model, images)
                loss = loss + adversarial[0] * cross_entropy_loss(model(crafted).float(), labels, label_smoothing)
            if dg_batches is not None:
                view1, view2, _ = next(dg_batches)
                loss = loss + 0.1 * consistency_loss(model, teacher, view1.to(device), view2.to(device))
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if loss_optimizer is not None:
                scaler.unscale_(loss_optimizer)
        else:
            loss.backward()
        if loss_optimizer is not None:
            unweight_own_gradients(metric_losses)
        for opt in optimizers:
            if scaler is not None:
                scaler.step(opt)
            else:
                opt.step()
        if scaler is not None:
            scaler.update()
        scheduler.step()
        n = labels.shape[0]
        loss_sum += loss.item() * n
        correct += (predicted_classes(logits.detach()) == labels).sum().item()
        seen += n
        bar.set_postfix(loss=f'{loss_sum / seen:.4f}', acc=f'{correct / seen:.3f}',
                        img_s=f'{seen / (time.perf_counter() - start):.1f}')
    if seen == 0:
        raise ValueError('the training loader gave no batch (is the training split empty?)')
    return loss_sum / seen, 1.0 - correct / seen


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


@torch.inference_mode()
def extract_features(model, loader, device, scales=(1.0,), amp_dtype=None, desc='features'):
    """Return the retrieval features of every image in `loader`, in order: float32 [N, D] on the CPU.

    The feature contract: sum over the image and its horizontal flip (and each scale of the original image),
    then L2-normalised (PCB: per part, then concatenated).
    """
    model.eval()
    chunks = []
    for images, _ in tqdm(loader, desc=desc, dynamic_ncols=True):
        with autocast(device, amp_dtype):
            summed = flip_sum_features(model, images.to(device), scales)
        chunks.append(l2_normalize_features(summed.float()).cpu())
    return torch.cat(chunks)
