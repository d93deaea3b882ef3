"""The training loss as a list of terms, each weight x value on one batch: the softmax (ID) loss, each metric loss,
the adversarial (ODFA) term and the DG-Market consistency term. The loop sums whatever list it is given.

A term reads the batch (images, labels, the network's logits and metric feature, the step number) and may
return None to sit a step out (--aiter). A new trick is a new term here, not a new argument of the loop.
"""
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F

from reid.models.heads import cross_entropy_loss
from reid.training import distributed
from reid.training.adversarial import opposite_direction_images


@dataclass
class Batch:
    """One training step as the terms see it."""
    model: Any
    images: torch.Tensor
    labels: torch.Tensor
    step: int
    logits: torch.Tensor
    feature: Optional[torch.Tensor] = None   # what the metric losses read (None when no term needs it)


DG_WEIGHT = 0.1   # the original's weight of DG-Market's consistency term


class SoftmaxTerm:
    """The ID loss: softmax cross-entropy of the logits (label-smoothed by --label_smoothing; PCB: summed over
    the parts)."""
    name, weight, needs_feature = 'softmax', 1.0, False

    def __init__(self, label_smoothing=0.0):
        self.label_smoothing = label_smoothing

    def value(self, batch):
        return cross_entropy_loss(batch.logits.float(), batch.labels, self.label_smoothing)

    def after_backward(self):
        pass


class MetricTerm:
    """One metric loss of reid.training.losses on the metric feature, weighted by the loss's own weight (center:
    0.0005); a loss with its own learning rate (center) is stepped on its unweighted gradient, as BoT. Under
    torchrun the loss's parameters get the gradient averaged over the ranks, like the network's."""
    needs_feature = True

    def __init__(self, name, loss):
        self.name, self.loss = name, loss
        self.weight = getattr(loss, 'loss_weight', 1.0)

    def value(self, batch):
        return self.loss(batch.feature.float(), batch.labels)

    def after_backward(self):
        distributed.average_gradients(self.loss.parameters())
        if getattr(self.loss, 'own_lr', None):
            for p in self.loss.parameters():
                if p.grad is not None:
                    p.grad.mul_(1.0 / self.weight)


class AdversarialTerm:
    """--adv: every --aiter-th step, the softmax loss on opposite-direction-feature images (the original's
    U-turn training), weight --adv."""
    name, needs_feature = 'adversarial', False

    def __init__(self, weight, every, label_smoothing=0.0):
        self.weight, self.every, self.label_smoothing = weight, every, label_smoothing

    def value(self, batch):
        if batch.step % self.every:
            return None
        crafted = opposite_direction_images(batch.model, batch.images)
        return cross_entropy_loss(batch.model(crafted).float(), batch.labels, self.label_smoothing)

    def after_backward(self):
        pass


def class_scores(outputs):
    """Return what the --DG term compares, [B, K]: the logits, or for PCB's [B, parts, K] the per-part class
    probabilities averaged over the parts (the original's PCB branch)."""
    return outputs.softmax(2).mean(1) if outputs.dim() == 3 else outputs


def consistency_loss(model, teacher, view1, view2):
    """The original's --DG term: symmetric KL divergence between the softmax of the model's class scores on one
    view and of the (weight-averaged) teacher's on the other, batch mean (no gradient to the teacher)."""
    student = class_scores(model(view1).float())
    teacher.eval()
    with torch.no_grad():
        target = class_scores(teacher(view2).float())
    p, q = student.softmax(1), target.softmax(1)
    return (F.kl_div(target.log_softmax(1), p, reduction='batchmean')
            + F.kl_div(student.log_softmax(1), q, reduction='batchmean')) / 2


class ConsistencyTerm:
    """--DG: consistency_loss on the next DG-Market batch (two views of each image) against `teacher` (the --wa
    average), weighted DG_WEIGHT as the original."""
    name, needs_feature = 'dg_consistency', False

    def __init__(self, dg_batches, teacher, weight=DG_WEIGHT):
        self.dg_batches, self.teacher, self.weight = dg_batches, teacher, weight

    def value(self, batch):
        view1, view2, _ = next(self.dg_batches)
        device = batch.images.device
        return consistency_loss(batch.model, self.teacher, view1.to(device), view2.to(device))

    def after_backward(self):
        pass


def loss_terms(opts, metric_losses):
    """Return the terms of a run's recipe `opts`: softmax, then each metric loss of `metric_losses` (a
    ModuleDict in the order of LOSSES), then --adv's term. --DG's term joins per epoch (ConsistencyTerm)."""
    terms = [SoftmaxTerm(opts.label_smoothing)]
    terms += [MetricTerm(name, loss) for name, loss in metric_losses.items()]
    if opts.adv > 0:
        terms.append(AdversarialTerm(opts.adv, opts.aiter, opts.label_smoothing))
    return terms


def total_loss(terms, batch):
    """Return sum(weight x value) over the terms active at this step."""
    total = None
    for term in terms:
        value = term.value(batch)
        if value is not None:
            total = term.weight * value if total is None else total + term.weight * value
    return total
