"""Metric-learning losses added to the softmax (ID) loss, and their table: one entry per train.py flag, with its
help, its constants (the original's margins and scales, BoT's for center) and its builder.
"""
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

ACOS_EPS = 1e-7                 # ArcFace: how far inside [-1, 1] the cosine is kept before acos
CENTER_CLAMP = (1e-12, 1e12)    # center loss: each squared distance clamped as BoT clamps it


def _masks(labels):
    """Return (positive mask without the diagonal, negative mask) of a batch's labels, [B, B] bool."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def _euclidean(x):
    """Pairwise Euclidean distances [B, B]; the clamp keeps sqrt's gradient finite at 0."""
    sq = (x * x).sum(1)
    return (sq[:, None] + sq[None, :] - 2 * x @ x.t()).clamp(min=1e-12).sqrt()


class TripletLoss(nn.Module):
    """Triplet loss with a margin.

    mining='pairs' (the original: pytorch-metric-learning's MultiSimilarityMiner(epsilon) picks hard
    positive and negative pairs on cosine similarity of L2-normalised features; every (anchor, hard positive,
    hard negative) triplet of an anchor counts; the mean over triplets with a positive loss).
    mining='batch_hard' (BoT, Hermans et al.): per anchor the farthest positive and nearest negative, Euclidean
    distance on the raw feature, mean over anchors.
    """

    def __init__(self, margin, mining, epsilon):
        super().__init__()
        if mining not in ('pairs', 'batch_hard'):
            raise ValueError(f'--triplet_mining {mining}: expected pairs or batch_hard')
        self.margin, self.mining, self.epsilon = margin, mining, epsilon

    def forward(self, feature, labels):
        pos, neg = _masks(labels)
        if self.mining == 'batch_hard':
            d = _euclidean(feature)
            hardest_pos = d.masked_fill(~pos, float('-inf')).amax(1)
            hardest_neg = d.masked_fill(~neg, float('inf')).amin(1)
            valid = pos.any(1) & neg.any(1)
            if not valid.any():
                return feature.sum() * 0
            return F.relu(hardest_pos - hardest_neg + self.margin)[valid].mean()
        x = F.normalize(feature, dim=1)
        with torch.no_grad():  # mining chooses pairs; it is not differentiated
            sim = x @ x.t()
            min_pos = sim.masked_fill(~pos, float('inf')).amin(1, keepdim=True)
            max_neg = sim.masked_fill(~neg, float('-inf')).amax(1, keepdim=True)
            hard_pos = pos & (sim - self.epsilon < max_neg)
            hard_neg = neg & (sim + self.epsilon > min_pos)
        d = _euclidean(x)
        # loss[a, p, n] for every hard positive p and hard negative n of anchor a
        loss = F.relu(d[:, :, None] - d[:, None, :] + self.margin)
        chosen = hard_pos[:, :, None] & hard_neg[:, None, :]
        active = chosen & (loss > 0)
        if not active.any():
            return feature.sum() * 0
        return loss[active].mean()


class CircleLoss(nn.Module):
    """Circle loss (Sun et al., CVPR 2020), relaxation m and scale gamma, over all positive and negative pairs
    (i < j) of L2-normalised features; divided by the batch size, as the original adds it."""

    def __init__(self, m, gamma):
        super().__init__()
        self.m, self.gamma = m, gamma

    def forward(self, feature, labels):
        x = F.normalize(feature, dim=1)
        sim = x @ x.t()
        same = labels[:, None] == labels[None, :]
        upper = torch.ones_like(same).triu(1)
        sp, sn = sim[same & upper], sim[~same & upper]
        ap = (1 + self.m - sp.detach()).clamp(min=0)
        an = (sn.detach() + self.m).clamp(min=0)
        logit_p = -ap * (sp - (1 - self.m)) * self.gamma
        logit_n = an * (sn - self.m) * self.gamma
        return F.softplus(torch.logsumexp(logit_n, 0) + torch.logsumexp(logit_p, 0)) / len(labels)


class _MarginSoftmax(nn.Module):
    """Shared part of ArcFace / CosFace / SphereFace: cosine to learnable class weights [D, K] (normalised),
    the target class's cosine modified by `margin`, scaled, cross-entropy; divided by the batch size as the
    original."""

    def __init__(self, num_classes, feature_dim, margin, scale):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(feature_dim, num_classes))
        self.margin, self.scale = margin, scale

    def target_logit(self, cos):
        raise NotImplementedError

    def forward(self, feature, labels):
        x = F.normalize(feature, dim=1)
        cos = x @ F.normalize(self.weight, dim=0)
        target = torch.zeros_like(cos, dtype=torch.bool).scatter_(1, labels[:, None], True)
        logits = torch.where(target, self.target_logit(cos), cos) * self.scale
        return F.cross_entropy(logits, labels) / len(labels)


class ArcFaceLoss(_MarginSoftmax):
    """ArcFace: target cos(theta + margin), scaled."""

    def target_logit(self, cos):
        # acos has an infinite slope at +-1: keep the cosine a hair inside
        return torch.cos(torch.acos(cos.clamp(-1 + ACOS_EPS, 1 - ACOS_EPS)) + self.margin)


class CosFaceLoss(_MarginSoftmax):
    """CosFace: target cos(theta) - margin, scaled."""

    def target_logit(self, cos):
        return cos - self.margin


def chebyshev(m, c):
    """cos(m * theta) as the Chebyshev polynomial T_m(cos theta): smooth where acos's gradient is not."""
    previous, current = torch.ones_like(c), c
    if m == 0:
        return previous
    for _ in range(m - 1):
        previous, current = current, 2 * c * current - previous
    return current


class SphereFaceLoss(_MarginSoftmax):
    """SphereFace (A-Softmax): target (-1)^k cos(m theta) - 2k with k = floor(m theta / pi), scale 1."""

    def __init__(self, num_classes, feature_dim, margin, scale=1.0):
        super().__init__(num_classes, feature_dim, int(margin), scale)

    def target_logit(self, cos):
        c = cos.clamp(-1, 1)
        k = torch.floor(self.margin * torch.acos(c.detach()) / math.pi)
        sign = 1 - 2 * (k % 2)
        return sign * chebyshev(self.margin, c) - 2 * k


class _PairMarginLoss(nn.Module):
    """Shared part of the contrastive and lifted losses: margins for positive and negative pairs, and the
    pair masks with the distances between L2-normalised features."""

    def __init__(self, pos_margin, neg_margin):
        super().__init__()
        self.pos_margin, self.neg_margin = pos_margin, neg_margin

    @staticmethod
    def pairs(feature, labels):
        """(positive mask, negative mask, Euclidean distances of the normalised features), all [B, B]."""
        pos, neg = _masks(labels)
        return pos, neg, _euclidean(F.normalize(feature, dim=1))


class ContrastiveLoss(_PairMarginLoss):
    """Contrastive loss on L2-normalised features: positives pulled within pos_margin, negatives pushed past
    neg_margin; each part averaged over its pairs with a non-zero loss, then summed (pytorch-metric-learning's)."""

    def forward(self, feature, labels):
        pos, neg, d = self.pairs(feature, labels)
        total = feature.sum() * 0
        for loss, mask in ((F.relu(d - self.pos_margin), pos), (F.relu(self.neg_margin - d), neg)):
            active = mask & (loss > 0)
            if active.any():
                total = total + loss[active].mean()
        return total


def _masked_logsumexp(values, mask):
    """Row-wise logsumexp over `mask`ed entries; 0 for a row without any."""
    out = torch.logsumexp(values.masked_fill(~mask, float('-inf')), dim=1)
    return torch.where(mask.any(1), out, torch.zeros_like(out))


class LiftedStructureLoss(_PairMarginLoss):
    """Generalised lifted structure loss on L2-normalised features: per anchor
    relu(logsumexp(d_pos - pos_margin) + logsumexp(neg_margin - d_neg)), mean over anchors."""

    def forward(self, feature, labels):
        pos, neg, d = self.pairs(feature, labels)
        per_anchor = _masked_logsumexp(d - self.pos_margin, pos) + _masked_logsumexp(self.neg_margin - d, neg)
        return F.relu(per_anchor).mean()


class InstanceLoss(nn.Module):
    """Instance loss (Zheng et al., TOMM 2020) as the original's instance_loss.py: cross-entropy of the scaled
    cosine similarities (gamma = --ins_gamma) where each instance is its own class; divided by the batch size as
    the original adds it.

    use_labels=False (--instance): every image is an instance (target of image i: column i).
    use_labels=True (--instance_id): the images of one id are merged first — the instances are the batch's ids,
    each the mean of its L2-normalised image features — so no image is pushed away from its own id; a batch of
    a single id gives 0, as the original.
    """

    def __init__(self, gamma, use_labels=False):
        super().__init__()
        self.gamma, self.use_labels = gamma, use_labels

    def forward(self, feature, labels):
        x = F.normalize(feature, dim=1)
        if self.use_labels:
            ids, member = torch.unique(labels, return_inverse=True)
            if len(ids) == 1:
                return feature.sum() * 0
            counts = torch.bincount(member, minlength=len(ids)).to(x.dtype)
            x = F.normalize(x.new_zeros(len(ids), x.shape[1]).index_add(0, member, x) / counts[:, None], dim=1)
        target = torch.arange(len(x), device=x.device)
        return F.cross_entropy(self.gamma * x @ x.t(), target) / len(labels)


class CenterLoss(nn.Module):
    """Center loss (Wen et al., ECCV 2016) as BoT: sum_i ||x_i - c_{y_i}||^2 / B on the raw feature, weighted
    by `loss_weight`; the centres have their own SGD at `own_lr` on the unweighted gradient."""

    def __init__(self, num_classes, feature_dim, weight, lr):
        super().__init__()
        self.loss_weight, self.own_lr = weight, lr
        self.centers = nn.Parameter(torch.randn(num_classes, feature_dim))

    def forward(self, feature, labels):
        diff = feature - self.centers[labels]
        return (diff * diff).sum(1).clamp(*CENTER_CLAMP).mean()   # BoT's clamp of each distance


INSTANCE_GAMMA = 32.0   # --ins_gamma's default, shared by --instance and --instance_id


@dataclass(frozen=True)
class LossEntry:
    """One metric loss as train.py offers it: --help (formatted with `constants`), the constants (the one place
    they are written), build(constants, opts, num_classes, feature_dim) -> the loss, and flags of its own."""
    help: str
    build: Callable
    constants: dict = field(default_factory=dict)
    options: tuple = ()   # (flag, argparse keywords)


# flag -> entry. Order is the order of the summed terms.
LOSSES = {
    'triplet': LossEntry(
        'triplet loss, margin {margin}',
        lambda c, o, k, d: TripletLoss(c['margin'], o['triplet_mining'], c['epsilon']),
        dict(margin=0.3, epsilon=0.1),
        (('--triplet_mining', dict(default='pairs', choices=('pairs', 'batch_hard'),
                                   help="pairs: the original's hard-pair miner on normalised features; batch_hard: "
                                        "BoT's")),)),
    'circle': LossEntry('circle loss (m {m}, gamma {gamma:g})', lambda c, o, k, d: CircleLoss(c['m'], c['gamma']),
                        dict(m=0.25, gamma=32.0)),
    'arcface': LossEntry('ArcFace loss (margin {margin_degrees} degrees, scale {scale:g})',
                         lambda c, o, k, d: ArcFaceLoss(k, d, math.radians(c['margin_degrees']), c['scale']),
                         dict(margin_degrees=28.6, scale=64.0)),
    'cosface': LossEntry('CosFace loss (margin {margin}, scale {scale:g})',
                         lambda c, o, k, d: CosFaceLoss(k, d, c['margin'], c['scale']), dict(margin=0.35, scale=64.0)),
    'sphere': LossEntry('SphereFace loss (margin {margin})', lambda c, o, k, d: SphereFaceLoss(k, d, c['margin']),
                        dict(margin=4)),
    'contrast': LossEntry('contrastive loss (margins {pos_margin:g} and {neg_margin:g})',
                          lambda c, o, k, d: ContrastiveLoss(c['pos_margin'], c['neg_margin']),
                          dict(pos_margin=0.0, neg_margin=1.0)),
    'lifted': LossEntry('generalised lifted structure loss (margins {pos_margin:g} and {neg_margin:g})',
                        lambda c, o, k, d: LiftedStructureLoss(c['pos_margin'], c['neg_margin']),
                        dict(pos_margin=0.0, neg_margin=1.0)),
    'instance': LossEntry('instance loss, each image its own class (--ins_gamma)',
                          lambda c, o, k, d: InstanceLoss(float(o['ins_gamma'])),
                          options=(('--ins_gamma', dict(default=INSTANCE_GAMMA, type=float,
                                                        help='scale of the instance losses')),)),
    'instance_id': LossEntry('instance loss with the ids (--ins_gamma)',
                             lambda c, o, k, d: InstanceLoss(float(o['ins_gamma']), use_labels=True)),
    'center': LossEntry('center loss (weight {weight}, centres SGD at lr {lr})',
                        lambda c, o, k, d: CenterLoss(k, d, c['weight'], c['lr']), dict(weight=0.0005, lr=0.5)),
}


def add_loss_flags(group):
    """Add each loss's switch and its own flags to an argparse group, from the table."""
    for name, entry in LOSSES.items():
        group.add_argument(f'--{name}', action='store_true', help=entry.help.format(**entry.constants))
        for flag, keywords in entry.options:
            group.add_argument(flag, **keywords)


def option_defaults():
    """Return {dest: default} of the losses' own flags (--triplet_mining, --ins_gamma), from the table."""
    return {flag.lstrip('-'): keywords['default'] for entry in LOSSES.values() for flag, keywords in entry.options}


def build_loss(name, opts, num_classes, feature_dim):
    """Return the loss the table's entry `name` builds for `opts` (a dict of flag values; a loss's own flags
    not in it take their defaults)."""
    entry = LOSSES[name]
    return entry.build(entry.constants, {**option_defaults(), **opts}, num_classes, feature_dim)


def active_loss_names(opts):
    """Return the names in LOSSES switched on in `opts` (a dict of flag values), in the table's order."""
    return [name for name in LOSSES if opts.get(name)]


def build_losses(opts, num_classes, feature_dim):
    """Return an nn.ModuleDict of the metric losses `opts` (a dict) switches on."""
    return nn.ModuleDict({name: build_loss(name, opts, num_classes, feature_dim) for name in active_loss_names(opts)})


def loss_optimizer(losses):
    """Return the SGD of losses that own their learning rate (center: lr 0.5), or None; the other losses'
    parameters go to the network's optimizer (see shared_loss_parameters)."""
    own = [loss for loss in losses.values() if getattr(loss, 'own_lr', None)]
    if not own:
        return None
    return torch.optim.SGD([{'params': list(loss.parameters()), 'lr': loss.own_lr} for loss in own],
                           lr=own[0].own_lr)


def shared_loss_parameters(losses):
    """Return the parameters of losses optimised with the network's head (arcface, cosface, sphere weights)."""
    return [p for loss in losses.values() if not getattr(loss, 'own_lr', None) for p in loss.parameters()]
