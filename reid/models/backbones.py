"""Re-ID networks: a torchvision (or timm) backbone + the baseline's ClassBlock, PCB, and build_model(opts).

Also the feature contract test.py relies on: flip-summed (multi-scale) features, then L2-normalised.
"""
import copy
import math
import os
import socket
from argparse import Namespace
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

# Options that define the network; test.py rebuilds the same network from a run's opts.yaml with them.
MODEL_DEFAULTS = {'backbone': 'resnet50', 'use_dense': False, 'PCB': False, 'stride': 2, 'linear_num': 512,
                  'droprate': 0.5, 'scratch': False, 'bnneck': False, 'usam': False}
PCB_PARTS = 6
PCB_LINEAR_NUM = 256  # the original PCB bottleneck, independent of --linear_num
DOWNLOAD_TIMEOUT_S = 30


class PretrainedWeightsUnavailable(RuntimeError):
    """ImageNet weights are neither in the torch hub cache nor downloadable; the message says what to do."""


def _init_bottleneck(module):
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
        self.add_block.apply(_init_bottleneck)
        self.classifier = nn.Linear(dim, num_classes)
        nn.init.normal_(self.classifier.weight, std=0.001)
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


class PCB(nn.Module):
    """Part-based Convolutional Baseline (Sun et al., ECCV 2018): the feature map is pooled into `parts`
    horizontal stripes, each with its own ClassBlock (bottleneck 256).

    forward(x) -> logits [B, parts, num_classes] (the loss sums the parts).
    forward(x, return_feature=True) -> [B, parts, body_dim]: the pooled stripe features, as the original tests
    PCB; l2_normalize_features normalises each part, then concatenates.
    """

    def __init__(self, body, body_dim, num_classes, parts=PCB_PARTS, droprate=0.5):
        super().__init__()
        self.body = body
        self.pool = nn.AdaptiveAvgPool2d((parts, 1))
        self.dropout = nn.Dropout(p=0.5)
        self.classifiers = nn.ModuleList(
            ClassBlock(body_dim, num_classes, droprate, PCB_LINEAR_NUM) for _ in range(parts))

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


def imagenet_weight_file(name):
    """Return (url, cache path) of the ImageNet weights torchvision uses for model `name`.

    IMAGENET1K_V1 where it exists: the weights `pretrained=True` gave, which the original recipe was tuned on.
    """
    import torchvision

    try:
        weights_enum = torchvision.models.get_model_weights(name)
    except ValueError:
        raise ValueError(f'--backbone {name}: torchvision has no ImageNet weights for it; use --scratch') from None
    weights = getattr(weights_enum, 'IMAGENET1K_V1', None) or weights_enum.DEFAULT
    cache = os.path.join(torch.hub.get_dir(), 'checkpoints', os.path.basename(weights.url))
    return weights.url, cache


def imagenet_state_dict(name):
    """Return the ImageNet state_dict of torchvision model `name`: the torch hub cache first, else a download.

    Raises PretrainedWeightsUnavailable (one message: where to put the file, or --scratch) when the file is
    not cached and cannot be downloaded. Never falls back to random weights.
    """
    url, cache = imagenet_weight_file(name)
    return cached_or_downloaded(url, cache, name)


def cached_or_downloaded(url, cache, name, check_hash=True):
    """Return the state_dict at `cache`, downloading `url` there first when missing (see imagenet_state_dict);
    `check_hash`: the file name carries a sha256 prefix (torchvision's convention)."""
    if not os.path.isfile(cache):
        previous = socket.getdefaulttimeout()
        # A firewalled machine must fail within seconds, not hang on a silent socket.
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        try:
            os.makedirs(os.path.dirname(cache), exist_ok=True)
            match = torch.hub.HASH_REGEX.search(os.path.basename(cache))  # torchvision names files name-<sha256>
            torch.hub.download_url_to_file(url, cache, hash_prefix=check_hash and match and match.group(1) or None,
                                           progress=True)
        except (OSError, RuntimeError) as e:
            raise PretrainedWeightsUnavailable(
                f'ImageNet weights for {name} are not in the torch hub cache ({cache}) and the download failed '
                f'({e}). Download {url} and save it as {cache} (set TORCH_HOME to move the cache), '
                f'or pass --scratch to train from random initialisation.') from None
        finally:
            socket.setdefaulttimeout(previous)
    return torch.load(cache, map_location='cpu', weights_only=True)


def _torchvision_classifier(name, pretrained):
    import torchvision

    if name not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(f'--backbone {name}: not a torchvision classification model '
                         f'(e.g. resnet18, resnet50, densenet121, mobilenet_v3_small; or timm:<name>)')
    net = torchvision.models.get_model(name, weights=None)
    if pretrained:
        net.load_state_dict(imagenet_state_dict(name))
    return net


def _timm_body(name, pretrained, input_size=None):
    try:
        import timm
    except ImportError:
        raise ValueError(f'--backbone timm:{name}: timm is not installed (pip install timm)') from None
    # ViT and Swin build their position grid for one input size: give them ours (e.g. 256 x 128).
    extra = {'img_size': tuple(input_size)} if input_size and ('vit' in name or 'swin' in name) else {}
    try:
        net = timm.create_model(name, pretrained=pretrained, num_classes=0, **extra)  # 0: pooled features
    except (OSError, RuntimeError) as e:  # hub/network errors differ by timm version; one message for all
        if not pretrained:
            raise
        raise PretrainedWeightsUnavailable(
            f'--backbone timm:{name}: ImageNet weights unavailable ({type(e).__name__}); timm keeps them in the '
            f'Hugging Face cache ($HF_HOME/hub, default ~/.cache/huggingface/hub): run once while online to '
            f'fill it, or train from random weights with --scratch') from None
    return net, net.num_features, False


def _set_last_stage_stride_1(body, name):
    if hasattr(body, 'layer4'):  # ResNet family: the first block of layer4 downsamples
        block = body.layer4[0]
        for conv in [m for m in block.modules() if isinstance(m, nn.Conv2d)]:
            conv.stride = (1, 1)
    elif hasattr(body, 'features') and hasattr(body.features, 'transition3'):  # DenseNet: last transition pools
        body.features.transition3.pool.stride = 1
    else:
        raise ValueError(f'--stride 1 is supported for ResNet and DenseNet backbones, not {name}')


def _torchvision_body(net, name, usam=False):
    if hasattr(net, 'layer4') and hasattr(net, 'fc'):  # ResNet, ResNeXt, Wide-ResNet
        stages = [(s, getattr(net, s)) for s in ('conv1', 'bn1', 'relu', 'maxpool', 'layer1', 'layer2', 'layer3',
                                                  'layer4')]
        if usam:  # the original puts USAM after the stem's ReLU and after layer1
            stages.insert(3, ('usam_1', USAM()))
            stages.insert(6, ('usam_2', USAM()))
        return nn.Sequential(OrderedDict(stages)), net.fc.in_features, True
    if usam:
        raise ValueError(f'--usam is supported for ResNet backbones, not {name}')
    if name.startswith('densenet'):
        # torchvision's DenseNet applies ReLU after `features` in its forward; keep it.
        return (nn.Sequential(OrderedDict(features=net.features, relu=nn.ReLU(inplace=True))),
                net.classifier.in_features, True)
    linears = [(path, m) for path, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f'--backbone {name}: no Linear classifier to replace')
    path, classifier = linears[-1]
    parent, _, attr = path.rpartition('.')
    setattr(net.get_submodule(parent), attr, nn.Identity())
    return net, classifier.in_features, False


class USAM(nn.Module):
    """Unit Subtraction Attention Module (Lin et al., TIP 2022), as the original's --usam: the channel sum of
    the map minus its 3x3 neighbourhood mean (x9) -> BN -> ReLU, zero on the border, gives a map a; returns
    x + a * x."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x):
        fmap = x.sum(1, keepdim=True)
        neighbourhood = F.avg_pool2d(fmap, 3, stride=1, padding=1, count_include_pad=True) * 9
        att = F.relu(self.bn(9 * fmap - neighbourhood))
        border = torch.zeros_like(att)
        border[:, :, 1:-1, 1:-1] = 1
        return x + att * border * x


class IBN(nn.Module):
    """Instance-batch normalisation (Pan et al., ECCV 2018): InstanceNorm on the first half of the channels,
    BatchNorm on the rest. Attribute names match the IBN-Net release, so its weights load."""

    def __init__(self, planes, ratio=0.5):
        super().__init__()
        self.half = int(planes * ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x):
        a, b = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([self.IN(a.contiguous()), self.BN(b.contiguous())], dim=1)


IBN_A_URL = 'https://github.com/XingangPan/IBN-Net/releases/download/v1.0/resnet50_ibn_a-d9d0bb7b.pth'


def resnet50_ibn_a(pretrained):
    """ResNet-50-IBN-a: torchvision's ResNet-50 with IBN as the first norm of every block of layers 1-3.

    No well-kept pip library ships it (timm has no *ibn* model); the ImageNet weights are IBN-Net's release
    (IBN_A_URL), read from the torch hub cache like torchvision's.
    """
    import torchvision

    net = torchvision.models.resnet50(weights=None)
    for layer in (net.layer1, net.layer2, net.layer3):
        for block in layer:
            block.bn1 = IBN(block.bn1.num_features)
    if pretrained:
        cache = os.path.join(torch.hub.get_dir(), 'checkpoints', os.path.basename(IBN_A_URL))
        net.load_state_dict(cached_or_downloaded(IBN_A_URL, cache, 'resnet50_ibn_a', check_hash=False))
    return net


# Backbones built here rather than by torchvision or timm: name -> constructor(pretrained) of a torchvision-like net.
CUSTOM_BACKBONES = {'resnet50_ibn_a': resnet50_ibn_a}


def backbone_body(name, pretrained=True, stride=2, input_size=None, usam=False):
    """Return (body, feature_dim, gives_feature_map) for backbone `name`.

    ResNet/ResNeXt/Wide-ResNet and DenseNet give a feature map (so --stride 1 and --PCB work); any other
    torchvision classification model (or `timm:<name>`) gives the pooled vector its classifier would read.
    `input_size` (h, w) is passed to timm models with a fixed input grid (ViT, Swin).
    """
    if name.startswith('timm:'):
        if usam:
            raise ValueError(f'--usam is supported for ResNet backbones, not {name}')
        body, dim, is_map = _timm_body(name[len('timm:'):], pretrained, input_size)
    elif name in CUSTOM_BACKBONES:
        body, dim, is_map = _torchvision_body(CUSTOM_BACKBONES[name](pretrained), name, usam)
    else:
        body, dim, is_map = _torchvision_body(_torchvision_classifier(name, pretrained), name, usam)
    if stride == 1:
        if not is_map:
            raise ValueError(f'--stride 1 is supported for ResNet and DenseNet backbones, not {name}')
        _set_last_stage_stride_1(body, name)
    elif stride != 2:
        raise ValueError(f'--stride {stride}: must be 1 or 2')
    return body, dim, is_map


# The original's backbone flags, as aliases onto registry names (torchvision names, timm:<name>, or CUSTOM),
# with the input size the flag implies when --h/--w are not given.
BACKBONE_FLAGS = {
    'use_dense': ('densenet121', None),
    'ibn': ('resnet50_ibn_a', None),
    'use_swin': ('timm:swin_base_patch4_window7_224', (224, 224)),
    'use_swinv2': ('timm:swinv2_base_window8_256', (224, 224)),
    'use_convnext': ('timm:convnext_tiny', None),
    'use_efficient': ('timm:efficientnet_b4', None),
    'use_hr': ('timm:hrnet_w18', None),
    'use_NAS': ('timm:nasnetalarge', None),
    'use_dino': ('timm:vit_small_patch16_224.dino', None),
}


def backbone_name(opts):
    """Return the registry name a run's options ask for: a backbone flag (--use_dense, --use_swin, ...) or
    --backbone (default resnet50); two that disagree are an error."""
    flags = [f for f in BACKBONE_FLAGS if opts.get(f)]
    if len(flags) > 1:
        raise ValueError(f'--{flags[0]} and --{flags[1]}: pick one backbone')
    if flags:
        name = BACKBONE_FLAGS[flags[0]][0]
        if opts.get('backbone', 'resnet50') not in ('resnet50', name):
            raise ValueError(f"--{flags[0]} conflicts with --backbone {opts['backbone']}")
        return name
    return opts.get('backbone') or 'resnet50'


def backbone_input_size(opts):
    """Return the (h, w) a backbone flag implies (224 x 224 for Swin), or None."""
    flags = [f for f in BACKBONE_FLAGS if opts.get(f)]
    return BACKBONE_FLAGS[flags[0]][1] if flags else None


def build_model(opts, num_classes, pretrained=None):
    """Return the network described by `opts` (argparse Namespace or dict, e.g. a loaded opts.yaml).

    Keys used: backbone, the BACKBONE_FLAGS, PCB, stride, linear_num, droprate, scratch, bnneck, usam (missing keys take the
    original defaults). `pretrained` None means "ImageNet weights unless opts.scratch"; test.py passes False
    since the checkpoint replaces them anyway.
    """
    o = {**MODEL_DEFAULTS, **(vars(opts) if isinstance(opts, Namespace) else dict(opts))}
    if num_classes < 1:
        raise ValueError(f'num_classes {num_classes}: need at least one class')
    if pretrained is None:
        pretrained = not o['scratch']
    name = backbone_name(o)
    size = (o['h'], o['w']) if o.get('h') and o.get('w') else backbone_input_size(o)
    if o['PCB']:
        body, dim, is_map = backbone_body(name, pretrained, stride=1)  # PCB always uses stride 1 (the paper)
        if not is_map:
            raise ValueError(f'--PCB needs a ResNet or DenseNet backbone, not {name}')
        return PCB(body, dim, num_classes, droprate=o['droprate'])
    body, dim, _ = backbone_body(name, pretrained, stride=int(o['stride']), input_size=size, usam=bool(o['usam']))
    return ReIDNet(body, dim, num_classes, int(o['linear_num']), float(o['droprate']), bool(o['bnneck']))


def parameter_groups(model, lr, backbone_lr_mult=0.1, extra=()):
    """Return parameter groups: the backbone at lr * backbone_lr_mult, the new layers (and `extra`, e.g. the
    losses' class weights) at lr. Frozen parameters (BNNeck's BN bias) are left out."""
    body = [p for p in model.body.parameters() if p.requires_grad]
    body_ids = {id(p) for p in model.body.parameters()}
    head = [p for p in model.parameters() if id(p) not in body_ids and p.requires_grad] + list(extra)
    return [{'params': body, 'lr': lr * backbone_lr_mult}, {'params': head, 'lr': lr}]


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
