"""The original repository's model.py classes and utils.py helpers under its names and signatures, so code written
against it imports them from model.py / utils.py and its checkpoints load with strict load_state_dict.
"""
import os

import torch
import torch.nn.functional as F
from torch import nn

from reid.models import backbones
from reid.models.heads import CLASSIFIER_INIT_STD, PCB_DROPRATE, PCB_LINEAR_NUM, PCB_PARTS, init_bottleneck
from reid.runs import save_atomic


def _resnet50(pretrained, ibn=False):
    return backbones.resnet50_ibn_a(pretrained) if ibn else backbones.torchvision_classifier('resnet50', pretrained)


def _last_stride_1(resnet):
    resnet.layer4[0].downsample[0].stride = (1, 1)
    resnet.layer4[0].conv2.stride = (1, 1)


def _resnet_map(resnet, x, after_stem=None, after_layer1=None):
    """ResNet's layer4 map; `after_stem` / `after_layer1` (USAM) act after the stem's ReLU / after layer1."""
    x = resnet.relu(resnet.bn1(resnet.conv1(x)))
    if after_stem is not None:
        x = after_stem(x)
    x = resnet.layer1(resnet.maxpool(x))
    if after_layer1 is not None:
        x = after_layer1(x)
    return resnet.layer4(resnet.layer3(resnet.layer2(x)))


class ClassBlock(nn.Module):
    """The original's head: `add_block` (Linear to `linear` if linear > 0, BatchNorm1d if bnorm, LeakyReLU(0.1)
    if relu, Dropout if droprate > 0) then `classifier` (a Sequential of one Linear).

    forward(x) returns the logits, or [logits, bottleneck feature] when return_f (the original's --circle etc.).
    """

    def __init__(self, input_dim, class_num, droprate, relu=False, bnorm=True, linear=512, return_f=False):
        super().__init__()
        self.return_f = return_f
        layers = [nn.Linear(input_dim, linear)] if linear > 0 else []
        dim = linear if linear > 0 else input_dim
        if bnorm:
            layers.append(nn.BatchNorm1d(dim))
        if relu:
            layers.append(nn.LeakyReLU(0.1))
        if droprate > 0:
            layers.append(nn.Dropout(p=droprate))
        self.linear_num = dim
        self.add_block = nn.Sequential(*layers)
        self.add_block.apply(init_bottleneck)
        self.classifier = nn.Sequential(nn.Linear(dim, class_num))
        # a tiny start keeps the first softmax near uniform whatever the bottleneck's scale
        nn.init.normal_(self.classifier[0].weight, std=CLASSIFIER_INIT_STD)
        nn.init.zeros_(self.classifier[0].bias)

    def forward(self, x):
        f = self.add_block(x)
        logits = self.classifier(f)
        return [logits, f] if self.return_f else logits


class USAM(backbones.USAM):
    """The toolkit's USAM with the original's two frozen kernels, `weight` (3x3 ones) and `weight2` (1x1, 9),
    as parameters that forward reads, so the original's checkpoints load strictly and give its outputs."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, 1, 3, 3), requires_grad=False)
        self.weight2 = nn.Parameter(torch.full((1, 1, 1, 1), 9.0), requires_grad=False)

    def forward(self, x):
        fmap = x.sum(1, keepdim=True)
        return backbones.usam_output(x, self.bn(F.conv2d(fmap, self.weight2) - F.conv2d(fmap, self.weight, padding=1)))


class ft_net(nn.Module):
    """The original's ResNet-50 baseline: `model` is a whole torchvision ResNet-50 (IBN-a with ibn) whose
    average pool feeds ClassBlock(2048, ...); stride 1 keeps layer4 at layer3's resolution; usam adds USAM after
    the stem and after layer1. `pretrained` (not the original's): start from the ImageNet weights."""

    def __init__(self, class_num=751, droprate=0.5, stride=2, circle=False, ibn=False, linear_num=512, usam=False,
                 *, pretrained=True):
        super().__init__()
        self.model = _resnet50(pretrained, ibn)
        if stride == 1:
            _last_stride_1(self.model)
        self.model.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.circle = circle
        self.classifier = ClassBlock(2048, class_num, droprate, linear=linear_num, return_f=circle)
        self.usam = usam
        if usam:
            self.usam_1 = USAM()
            self.usam_2 = USAM()

    def forward(self, x):
        usams = (self.usam_1, self.usam_2) if self.usam else (None, None)
        x = _resnet_map(self.model, x, *usams)
        return self.classifier(self.model.avgpool(x).flatten(1))


class ft_net_middle(nn.Module):
    """The original's ft_net_middle: as ft_net with its defaults (it concatenates no middle features).
    The original squeezes the pooled map, which breaks a batch of one; this flattens it."""

    def __init__(self, class_num=751, droprate=0.5, *, pretrained=True):
        super().__init__()
        self.model = _resnet50(pretrained)
        self.model.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = ClassBlock(2048, class_num, droprate)

    def forward(self, x):
        return self.classifier(self.model.avgpool(_resnet_map(self.model, x)).flatten(1))


class ft_net_dense(nn.Module):
    """The original's DenseNet-121 baseline: `model.features` ends in a global average pool (no ReLU after
    norm5, as the original) feeding ClassBlock(1024, ...); stride 1 keeps the last transition's resolution."""

    def __init__(self, class_num, droprate=0.5, stride=2, circle=False, linear_num=512, *, pretrained=True):
        super().__init__()
        self.model = backbones.torchvision_classifier('densenet121', pretrained)
        self.model.features.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.model.fc = nn.Sequential()
        if stride == 1:
            self.model.features.transition3.pool.stride = 1
        self.circle = circle
        self.classifier = ClassBlock(1024, class_num, droprate, linear=linear_num, return_f=circle)

    def forward(self, x):
        return self.classifier(self.model.features(x).flatten(1))


class PCB(nn.Module):
    """The original's PCB (Sun et al., 2018): ResNet-50 with last stride 1, its map pooled into six horizontal
    stripes, each through Dropout(0.5) and its own ClassBlock (`classifier0`..`classifier5`, bottleneck 256).

    forward(x) returns a list of six logits [B, class_num]; PCB_test(model) gives the stripes for retrieval.
    """

    def __init__(self, class_num, *, pretrained=True):
        super().__init__()
        self.part = PCB_PARTS
        self.model = _resnet50(pretrained)
        self.avgpool = nn.AdaptiveAvgPool2d((self.part, 1))
        self.dropout = nn.Dropout(p=PCB_DROPRATE)
        _last_stride_1(self.model)
        for i in range(self.part):
            setattr(self, f'classifier{i}', ClassBlock(2048, class_num, droprate=PCB_DROPRATE, linear=PCB_LINEAR_NUM,
                                                       relu=False, bnorm=True))

    def forward(self, x):
        stripes = self.dropout(self.avgpool(_resnet_map(self.model, x))).flatten(2)  # [B, 2048, 6]
        return [getattr(self, f'classifier{i}')(stripes[:, :, i]) for i in range(self.part)]


class PCB_test(nn.Module):
    """The original's PCB at test time: shares `model.model` of a PCB and returns its six pooled stripes
    [B, 2048, 6] (channel-major, as the original's test.py reads them)."""

    def __init__(self, model):
        super().__init__()
        self.part = PCB_PARTS
        self.model = model.model
        self.avgpool = nn.AdaptiveAvgPool2d((self.part, 1))
        _last_stride_1(self.model)

    def forward(self, x):
        return self.avgpool(_resnet_map(self.model, x)).flatten(2)


def _fuse_siblings(module):
    previous = None
    for name, child in list(module.named_children()):
        _fuse_siblings(child)
        if isinstance(child, nn.BatchNorm2d) and previous is not None and isinstance(previous[1], nn.Conv2d):
            setattr(module, previous[0], nn.utils.fusion.fuse_conv_bn_eval(previous[1], child))
            setattr(module, name, nn.Identity())
        previous = (name, child)


def fuse_all_conv_bn(model):
    """Fold every BatchNorm2d into the Conv2d registered just before it among the same parent's children (the
    original's rule: registration order is taken as data flow, true for torchvision's ResNet and DenseNet).

    Works in place, as the original, and returns `model`, now in eval mode (a fused network cannot train:
    its BatchNorm statistics are frozen into the convolutions). Unlike reid.models.features.fuse_conv_bn, which
    copies the model and fuses only pairs whose data flow it knows.
    """
    model.eval()
    _fuse_siblings(model)
    return model


def save_network(network, dirname, epoch_label, local_rank=-1):
    """Save `network`'s state_dict as ./model/<dirname>/net_<NNN>.pth (int label) or net_<label>.pth, atomically.

    With local_rank > -1 (distributed), only rank 0 writes. Unlike the original, the network is not moved to
    CUDA afterwards: it stays on the device the caller put it on.
    """
    name = f'net_{epoch_label:03d}.pth' if isinstance(epoch_label, int) else f'net_{epoch_label}.pth'
    if local_rank <= 0:
        save_atomic(network.state_dict(), os.path.join('model', dirname, name))
