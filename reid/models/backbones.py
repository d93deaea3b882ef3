"""Backbones: one registry from a name (torchvision's, `timm:<name>`, or built here: ResNet-50-IBN-a) to a body that
gives a feature map or a pooled vector, with its ImageNet weights from the torch hub cache; USAM, IBN, stride 1.

What the toolkit knows of each named backbone (the original's flag, input size, ...) is its record in
reid.spec.BACKBONES.
"""
import os
import re
import socket
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from reid.spec import backbone_record, builds_token_grid

DOWNLOAD_TIMEOUT_S = 30


class PretrainedWeightsUnavailable(RuntimeError):
    """ImageNet weights are neither in the torch hub cache nor downloadable; the message says what to do."""


# torchvision's densenet121 ImageNet file was saved before DenseNet's layers were renamed: it keeps `norm.1`-style
# keys, which torchvision's own loader renames the same way.
_OLD_DENSE_KEY = re.compile(r'^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|running_var))$')


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
    return {_OLD_DENSE_KEY.sub(r'\1\2', k): v for k, v in cached_or_downloaded(url, cache, name).items()}


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


def torchvision_classifier(name, pretrained):
    """torchvision's classification model `name`, with its ImageNet weights when `pretrained`."""
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
    extra = {'img_size': tuple(input_size)} if input_size and builds_token_grid(f'timm:{name}') else {}
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
        # the original pools `features` (ending in BatchNorm norm5) directly, without the ReLU torchvision's
        # own forward adds
        return nn.Sequential(OrderedDict(features=net.features)), net.classifier.in_features, True
    linears = [(path, m) for path, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f'--backbone {name}: no Linear classifier to replace')
    path, classifier = linears[-1]
    parent, _, attr = path.rpartition('.')
    setattr(net.get_submodule(parent), attr, nn.Identity())
    return net, classifier.in_features, False


class USAM(nn.Module):
    """Unit Subtraction Attention Module (Lin et al., TIP 2022), as the original's --usam: the channel sum of
    the map minus its 3x3 neighbourhood mean (x9) -> BN -> LeakyReLU(0.1), zero on the border, gives a map a;
    returns x + a * x."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x):
        fmap = x.sum(1, keepdim=True)
        neighbourhood = F.avg_pool2d(fmap, 3, stride=1, padding=1, count_include_pad=True) * 9
        return usam_output(x, self.bn(9 * fmap - neighbourhood))


def usam_output(x, contrast):
    """USAM's output: x + attention * x, the attention being LeakyReLU(0.1) of the normalised centre-surround
    `contrast` [B, 1, h, w], zero on the map's border (the original's)."""
    att = F.leaky_relu(contrast, 0.1)
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


def custom_builder(name):
    """The constructor(pretrained) of a backbone built here (reid.spec.BACKBONES' `builder`), or None."""
    import importlib

    builder = backbone_record(name).builder
    if builder is None:
        return None
    module, _, function = builder.partition(':')
    return getattr(importlib.import_module(module), function)


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
    elif custom_builder(name) is not None:
        body, dim, is_map = _torchvision_body(custom_builder(name)(pretrained), name, usam)
    else:
        body, dim, is_map = _torchvision_body(torchvision_classifier(name, pretrained), name, usam)
    if stride == 1:
        if not is_map:
            raise ValueError(f'--stride 1 is supported for ResNet and DenseNet backbones, not {name}')
        _set_last_stage_stride_1(body, name)
    elif stride != 2:
        raise ValueError(f'--stride {stride}: must be 1 or 2')
    return body, dim, is_map
