"""The feature contract every command and export share: the sum over an image and its horizontal flip (and each
scale), L2-normalised (PCB: per part, then concatenated); conv+BN fusion for inference; the wrapped extractor.
"""
import copy
import math

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn_pairs(module):
    from torchvision.models.resnet import BasicBlock, Bottleneck

    names = [n for n, _ in module.named_children()]
    if isinstance(module, nn.Sequential):
        candidates = zip(names, names[1:])
    elif isinstance(module, (BasicBlock, Bottleneck)):
        candidates = [(f'conv{i}', f'bn{i}') for i in (1, 2, 3) if hasattr(module, f'conv{i}')]
    else:
        return []
    return [(c, b) for c, b in candidates
            if isinstance(getattr(module, c), nn.Conv2d) and isinstance(getattr(module, b), nn.BatchNorm2d)]


def fuse_conv_bn(model):
    """Return an eval-mode copy of `model` with each BatchNorm2d folded into the Conv2d that feeds it.

    Folds only pairs whose data flow is known: neighbours in an nn.Sequential and convK/bnK inside
    torchvision ResNet blocks. Outputs match the unfused model in eval mode up to float rounding.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(model).eval()
    for module in list(fused.modules()):
        for conv_name, bn_name in _conv_bn_pairs(module):
            setattr(module, conv_name, fuse_conv_bn_eval(getattr(module, conv_name), getattr(module, bn_name)))
            setattr(module, bn_name, nn.Identity())
    return fused


def flip_sum_features(model, images, scales=(1.0,)):
    """Return the sum of model features over `images` and their horizontal flips, at each scale.

    Each scale resizes the ORIGINAL batch (bicubic), never the previous scale's result. `model` must accept
    `return_feature=True`; the sum is float32.
    """
    total = 0
    for scale in scales:
        x = images if scale == 1 else F.interpolate(images, scale_factor=scale, mode='bicubic',
                                                    align_corners=False)
        for view in (x, torch.flip(x, dims=[3])):
            total = total + model(view, return_feature=True).float()
    return total


def l2_normalize_features(features):
    """Return unit-L2 features: [N, D] row-normalised; PCB [N, parts, D] -> each part normalised, then
    concatenated and divided by sqrt(parts), so the whole vector has unit norm."""
    if features.dim() == 3:
        return (F.normalize(features, dim=2) / math.sqrt(features.shape[1])).flatten(1)
    return F.normalize(features, dim=1)


class FeatureExtractor(nn.Module):
    """A network wrapped to the feature contract: images [N, 3, h, w] (normalised) -> flip-summed, L2-normalised
    features [N, D] (PCB: D = parts x backbone channels), exactly what test.py saves. This is what export.py writes."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return l2_normalize_features(flip_sum_features(self.model, images))
