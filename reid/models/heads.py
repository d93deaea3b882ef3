"""Heads on a backbone: the baseline's ClassBlock, BoT's BNNeck, PCB's six stripes; build_model(spec) puts a network
together; the logits contract (PCB's [B, parts, classes]) for the loss and the prediction; the optimiser groups.
"""
import torch
import torch.nn.functional as F
from torch import nn

from reid.models.backbones import backbone_body

PCB_PARTS = 6
PCB_LINEAR_NUM = 256  # the original PCB bottleneck, independent of --linear_num
PCB_DROPRATE = 0.5    # the original's PCB heads drop 0.5 whatever --droprate says
CLASSIFIER_INIT_STD = 0.0001  # the original's weights_init_classifier (BoT's BNNeck keeps its own 0.001)


def init_bottleneck(module):
    # The original's init: Kaiming (fan_out) for the bottleneck Linear, N(1, 0.02) for its BatchNorm scale.
    if isinstance(module, nn.Linear):
        nn.init.kaiming_normal_(module.weight, a=0, mode='fan_out')
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm1d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class ClassBlock(nn.Module):
    """Bottleneck (Linear in_dim->linear_num, BatchNorm1d, Dropout) then a Linear classifier.

    `linear_num` <= 0 skips the Linear (the bottleneck is then BatchNorm1d + Dropout on the input).
    forward(x) returns logits; forward(x, return_feature=True) returns the bottleneck feature.
    """

    def __init__(self, in_dim, num_classes, droprate=0.5, linear_num=512):
        super().__init__()
        layers, dim = [], in_dim
        if linear_num > 0:
            layers.append(nn.Linear(in_dim, linear_num))
            dim = linear_num
        layers.append(nn.BatchNorm1d(dim))
        if droprate > 0:
            layers.append(nn.Dropout(droprate))
        self.add_block = nn.Sequential(*layers)
        self.add_block.apply(init_bottleneck)
        self.classifier = nn.Linear(dim, num_classes)
        nn.init.normal_(self.classifier.weight, std=CLASSIFIER_INIT_STD)
        nn.init.zeros_(self.classifier.bias)
        self.feature_dim = dim

    def forward(self, x, return_feature=False):
        f = self.add_block(x)
        return f if return_feature else self.classifier(f)

    def logits_and_feature(self, x):
        """(logits, the bottleneck feature): the original's metric losses use the bottleneck feature."""
        f = self.add_block(x)
        return self.classifier(f), f


class BNNeck(nn.Module):
    """BoT's head (Luo et al., 2019): pooled feature -> BatchNorm1d (bias frozen at 0) -> bias-free classifier.

    forward(x) returns logits; forward(x, return_feature=True) the feature after BN (retrieval);
    logits_and_feature(x) gives (logits, the feature before BN) for the metric losses.
    """

    def __init__(self, in_dim, num_classes):
        super().__init__()
        self.bn = nn.BatchNorm1d(in_dim)
        self.bn.bias.requires_grad_(False)  # BoT: a shift before a bias-free classifier is redundant
        self.classifier = nn.Linear(in_dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)
        self.feature_dim = in_dim

    def forward(self, x, return_feature=False):
        f = self.bn(x)
        return f if return_feature else self.classifier(f)

    def logits_and_feature(self, x):
        return self.classifier(self.bn(x)), x


class ReIDNet(nn.Module):
    """Backbone `body` -> global average pool -> ClassBlock (or BNNeck with bnneck=True).

    forward(x) -> logits [B, num_classes] (training).
    forward(x, return_feature=True) -> the retrieval feature test.py extracts: the ClassBlock's bottleneck
    feature after BatchNorm (Dropout is inactive in eval mode), or BNNeck's feature after BN.
    forward(x, return_metric_feature=True) -> (logits, the feature the metric losses read).
    """

    def __init__(self, body, body_dim, num_classes, linear_num=512, droprate=0.5, bnneck=False):
        super().__init__()
        self.body = body
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = (BNNeck(body_dim, num_classes) if bnneck
                           else ClassBlock(body_dim, num_classes, droprate, linear_num))
        self.feature_dim = self.classifier.feature_dim

    def forward(self, x, return_feature=False, return_metric_feature=False):
        f = self.body(x)
        if f.dim() == 4:
            f = self.pool(f).flatten(1)
        if return_metric_feature:
            return self.classifier.logits_and_feature(f)
        return self.classifier(f, return_feature)


# Video re-ID (tracklets of a video layout): frame features pooled over time before the head.
class TemporalAverage(nn.Module):
    """[B, T, D] -> [B, D]: the mean over the frames."""

    def forward(self, frames):
        return frames.mean(dim=1)


class TemporalMax(nn.Module):
    """[B, T, D] -> [B, D]: the maximum over the frames, per channel."""

    def forward(self, frames):
        return frames.amax(dim=1)


class TemporalAttention(nn.Module):
    """[B, T, D] -> [B, D]: sum_t a_t f_t with a = softmax over t of a learnt score w . f_t + b (the temporal
    attention of video re-ID, e.g. Gao & Nevatia 2018, on pooled frame features). The score starts at zero, so a
    new network starts as the average and learns which frames (sharp, unoccluded) to trust."""

    def __init__(self, dim):
        super().__init__()
        self.score = nn.Linear(dim, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, frames):
        weights = self.score(frames).float().softmax(dim=1).to(frames.dtype)   # [B, T, 1]
        return (weights * frames).sum(dim=1)


def temporal_pool(kind, dim):
    """Return the module that pools [B, T, dim] frame features into [B, dim] for --temporal `kind`."""
    if kind == 'avg':
        return TemporalAverage()
    if kind == 'max':
        return TemporalMax()
    if kind == 'attention':
        return TemporalAttention(dim)
    raise ValueError(f'--temporal {kind}: expected avg, max or attention')


class TemporalReIDNet(ReIDNet):
    """ReIDNet on tracklets: clips [B, T, 3, h, w] -> each frame through body + global pool -> [B, T, D] ->
    pooled over T (`temporal`: avg, max, attention) -> the same head (ClassBlock or BNNeck).

    forward takes ReIDNet's arguments and gives its outputs (logits, the retrieval feature, or (logits, metric
    feature)), one per clip; images [B, 3, h, w] are clips of one frame, so the same network gives single-frame
    features (every pooling is the identity on one frame). `avg` and `max` add no parameter: their state_dict
    is an image ReIDNet's.
    """

    def __init__(self, body, body_dim, num_classes, linear_num=512, droprate=0.5, bnneck=False, temporal='avg'):
        super().__init__(body, body_dim, num_classes, linear_num, droprate, bnneck)
        self.temporal = temporal_pool(temporal, body_dim)

    def clip_features(self, clips):
        """Return the pooled features [B, D] of clips [B, T, 3, h, w] (or images [B, 3, h, w]: T = 1)."""
        if clips.dim() == 4:
            clips = clips.unsqueeze(1)
        batch, length = clips.shape[:2]
        f = self.body(clips.flatten(0, 1))
        if f.dim() == 4:
            f = self.pool(f).flatten(1)
        return self.temporal(f.reshape(batch, length, -1))

    def forward(self, x, return_feature=False, return_metric_feature=False):
        f = self.clip_features(x)
        if return_metric_feature:
            return self.classifier.logits_and_feature(f)
        return self.classifier(f, return_feature)


class PCB(nn.Module):
    """Part-based Convolutional Baseline (Sun et al., ECCV 2018): the feature map is pooled into `parts`
    horizontal stripes, each with its own ClassBlock (bottleneck 256).

    forward(x) -> logits [B, parts, num_classes] (the loss sums the parts).
    forward(x, return_feature=True) -> [B, parts, body_dim]: the pooled stripe features, as the original tests
    PCB; l2_normalize_features normalises each part, then concatenates.
    """

    def __init__(self, body, body_dim, num_classes, parts=PCB_PARTS):
        super().__init__()
        self.body = body
        self.pool = nn.AdaptiveAvgPool2d((parts, 1))
        self.dropout = nn.Dropout(p=0.5)
        self.classifiers = nn.ModuleList(
            ClassBlock(body_dim, num_classes, PCB_DROPRATE, PCB_LINEAR_NUM) for _ in range(parts))

    def forward(self, x, return_feature=False):
        stripes = self.pool(self.body(x)).squeeze(3)  # [B, C, parts]
        if return_feature:
            return stripes.transpose(1, 2)
        stripes = self.dropout(stripes)
        return torch.stack([clf(stripes[:, :, i]) for i, clf in enumerate(self.classifiers)], dim=1)


def cross_entropy_loss(logits, labels, label_smoothing=0.0):
    """Softmax cross-entropy (label-smoothed by `label_smoothing`); for PCB logits [B, parts, K] the sum of the
    per-part losses (as the original)."""
    if logits.dim() == 3:
        return sum(F.cross_entropy(logits[:, i], labels, label_smoothing=label_smoothing)
                   for i in range(logits.shape[1]))
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def predicted_classes(logits):
    """Arg-max class per sample; for PCB the arg-max of the summed part probabilities (as the original)."""
    if logits.dim() == 3:
        return logits.softmax(dim=2).sum(dim=1).argmax(dim=1)
    return logits.argmax(dim=1)


def build_model(spec, num_classes, pretrained=True):
    """Return the network a NetworkSpec (reid.spec) describes, with `num_classes` outputs.

    `pretrained`: start the backbone from its ImageNet weights (train.py passes `not --scratch`; a run being
    loaded passes False, its checkpoint replaces them anyway).
    """
    if num_classes < 1:
        raise ValueError(f'num_classes {num_classes}: need at least one class')
    if spec.PCB:
        if spec.temporal:
            raise ValueError(f'--PCB does not combine with --temporal {spec.temporal} (tracklets of a video layout)')
        body, dim, is_map = backbone_body(spec.backbone, pretrained, stride=1)  # PCB always uses stride 1 (the paper)
        if not is_map:
            raise ValueError(f'--PCB needs a ResNet or DenseNet backbone, not {spec.backbone}')
        return PCB(body, dim, num_classes)
    size = spec.input_size()  # the grid ViT and Swin are built for
    body, dim, _ = backbone_body(spec.backbone, pretrained, stride=spec.stride, input_size=size, usam=spec.usam)
    if spec.temporal:   # a network of tracklets (video layouts): frames pooled over time before the head
        return TemporalReIDNet(body, dim, num_classes, spec.linear_num, spec.droprate, spec.bnneck, spec.temporal)
    return ReIDNet(body, dim, num_classes, spec.linear_num, spec.droprate, spec.bnneck)


def parameter_groups(model, lr, backbone_lr_mult=0.1, extra=()):
    """Return parameter groups: the backbone at lr * backbone_lr_mult, the new layers (and `extra`, e.g. the
    losses' class weights) at lr. Frozen parameters (BNNeck's BN bias) are left out."""
    body = [p for p in model.body.parameters() if p.requires_grad]
    body_ids = {id(p) for p in model.body.parameters()}
    head = [p for p in model.parameters() if id(p) not in body_ids and p.requires_grad] + list(extra)
    return [{'params': body, 'lr': lr * backbone_lr_mult}, {'params': head, 'lr': lr}]
