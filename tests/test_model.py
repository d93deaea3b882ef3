"""Tests of reid/models/ (backbones, heads, features): shapes, the feature contract (flip-sum, multi-scale, L2),
PCB, fusion, weights loading.

Small scratch backbones (resnet18) on tiny inputs keep them fast on a CPU.
"""
import math
import os
import urllib.error
from argparse import Namespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reid.models import backbones as M
from reid import spec
from reid.models import features, heads
from conftest import build
from reid.training import recipe

SMALL = {'backbone': 'resnet18', 'scratch': True}


def randomise_batchnorm(net, seed=0):
    """Give every BatchNorm non-trivial statistics and affine parameters, so fusion has something to fold."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return net


def test_logits_and_feature_shapes_and_the_shared_forward():
    torch.manual_seed(0)
    net = randomise_batchnorm(build(SMALL, num_classes=7)).eval()
    x = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        logits = net(x)
        feature = net(x, return_feature=True)
        # independent path: body -> mean over H, W -> Linear -> BatchNorm (eval) -> classifier
        pooled = net.body(x).mean(dim=(2, 3))
        lin, bn = net.classifier.add_block[0], net.classifier.add_block[1]
        z = pooled @ lin.weight.T + lin.bias
        expected = (z - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    assert logits.shape == (3, 7)
    assert feature.shape == (3, 512)
    torch.testing.assert_close(feature, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits, net.classifier.classifier(feature))


def test_linear_num_and_droprate_shape_the_class_block():
    net = build({**SMALL, 'linear_num': 64, 'droprate': 0.0}, num_classes=5)
    kinds = [type(m) for m in net.classifier.add_block]
    assert kinds == [nn.Linear, nn.BatchNorm1d]
    assert net.classifier.classifier.in_features == 64
    assert net(torch.randn(2, 3, 64, 32), return_feature=True).shape == (2, 64)


def test_stride_1_doubles_the_last_feature_map():
    x = torch.randn(1, 3, 64, 32)
    s2 = build({**SMALL, 'stride': 2}, 3).eval().body(x)
    s1 = build({**SMALL, 'stride': 1}, 3).eval().body(x)
    assert s1.shape[2:] == (2 * s2.shape[2], 2 * s2.shape[3])


def test_densenet_and_a_generic_torchvision_backbone_build():
    x = torch.randn(2, 3, 64, 32)
    dense = build({'use_dense': True, 'scratch': True, 'stride': 1}, 4).eval()
    assert dense.classifier.add_block[0].in_features == 1024
    mobile = build({'backbone': 'mobilenet_v3_small', 'scratch': True}, 4).eval()
    with torch.no_grad():
        assert dense(x).shape == (2, 4)
        assert mobile(x, return_feature=True).shape == (2, 512)
    with pytest.raises(ValueError, match='stride 1'):
        build({'backbone': 'mobilenet_v3_small', 'scratch': True, 'stride': 1}, 4)


def test_bad_backbone_names_give_clear_errors():
    with pytest.raises(ValueError, match='not a torchvision classification model'):
        build({'backbone': 'resnet_nonexistent', 'scratch': True}, 4)
    with pytest.raises(ValueError, match='use_dense'):
        build({'backbone': 'resnet18', 'use_dense': True, 'scratch': True}, 4)
    try:
        import timm  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match='timm is not installed'):
            build({'backbone': 'timm:resnet18', 'scratch': True}, 4)


@pytest.mark.parametrize('stride', [1, 2])
def test_namespace_and_dict_options_build_the_same_network(stride):
    """Same options as a Namespace (train.py) or a dict (opts.yaml in test.py): the same weights, the same
    feature map (--stride changes no weight shape, only the map: H/16 x W/16 with stride 1, H/32 x W/32 with 2)
    and the same outputs."""
    x = torch.randn(2, 3, 64, 32)
    torch.manual_seed(0)
    a = build(Namespace(**SMALL, stride=stride, linear_num=128), 6).eval()
    torch.manual_seed(0)
    b = build({**SMALL, 'stride': stride, 'linear_num': 128}, 6).eval()
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    with torch.no_grad():
        maps = a.body(x), b.body(x)
        assert maps[0].shape[2:] == maps[1].shape[2:] == (64 // (16 * stride), 32 // (16 * stride))
        torch.testing.assert_close(a(x, return_feature=True), b(x, return_feature=True), rtol=0, atol=0)
        assert a(x, return_feature=True).shape == (2, 128)


def test_pcb_gives_six_parts_and_sums_their_losses():
    torch.manual_seed(0)
    net = build({**SMALL, 'PCB': True}, 5).eval()
    x = torch.randn(2, 3, 96, 48)
    with torch.no_grad():
        logits = net(x)
        parts = net(x, return_feature=True)
        body = net.body(x)
    assert logits.shape == (2, 6, 5)
    assert parts.shape == (2, 6, 512)
    # stripe i is the mean over its rows of the feature map (6 rows at this size: one row per part)
    torch.testing.assert_close(parts, body.mean(dim=3).transpose(1, 2), rtol=1e-5, atol=1e-5)
    labels = torch.tensor([1, 3])
    expected = sum(F.cross_entropy(logits[:, i], labels) for i in range(6))
    torch.testing.assert_close(heads.cross_entropy_loss(logits, labels), expected)
    summed_probs = logits.softmax(2).sum(1)
    assert torch.equal(heads.predicted_classes(logits), summed_probs.argmax(1))


class PositionNet(nn.Module):
    """A feature that depends on where things are (so flips matter) and works at any input size."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d((2, 2))

    def forward(self, x, return_feature=False):
        return self.pool(self.conv(x)).flatten(1)


def test_flip_sum_uses_each_scale_of_the_original_image():
    net = PositionNet().eval()
    x = torch.randn(2, 3, 16, 8)
    scales = (1.0, 1.25, 1.5)  # two scales other than 1: a compounding implementation would differ
    with torch.no_grad():
        got = features.flip_sum_features(net, x, scales)
        expected = 0
        for s in scales:
            scaled = F.interpolate(x, scale_factor=s, mode='bicubic', align_corners=False) if s != 1 else x
            expected = expected + net(scaled) + net(scaled.flip(3))
        assert not torch.allclose(net(x), net(x.flip(3)))  # else a missing flip would go unseen
    torch.testing.assert_close(got, expected)
    assert got.dtype == torch.float32


def test_l2_normalisation_of_plain_and_part_features():
    f = torch.randn(5, 8) * 3
    n = features.l2_normalize_features(f)
    torch.testing.assert_close(n.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(n * f.norm(dim=1, keepdim=True), f)
    parts = torch.randn(4, 6, 3) * 2
    p = features.l2_normalize_features(parts)
    assert p.shape == (4, 18)
    torch.testing.assert_close(p.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(p.view(4, 6, 3).norm(dim=2), torch.full((4, 6), 1 / math.sqrt(6)))


def test_fused_network_matches_the_original_in_eval_mode():
    torch.manual_seed(0)
    net = randomise_batchnorm(build(SMALL, 9)).eval()
    fused = features.fuse_conv_bn(net)
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(fused(x, return_feature=True), net(x, return_feature=True),
                                   rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(fused(x), net(x), rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # the original is left alone


def test_parameter_groups_split_backbone_and_new_layers():
    net = build(SMALL, 4)
    body, head = heads.parameter_groups(net, lr=0.05, backbone_lr_mult=0.1)
    assert body['lr'] == pytest.approx(0.005) and head['lr'] == 0.05
    assert len(body['params']) + len(head['params']) == len(list(net.parameters()))
    assert {id(p) for p in head['params']} == {id(p) for p in net.classifier.parameters()}


def test_missing_imagenet_weights_offline_give_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    attempts = []

    def offline(url, dst, *args, **kwargs):
        assert os.path.isdir(os.path.dirname(dst))  # torch's downloader needs the folder to exist
        attempts.append(url)
        raise urllib.error.URLError('network is unreachable')

    monkeypatch.setattr(torch.hub, 'download_url_to_file', offline)
    with pytest.raises(M.PretrainedWeightsUnavailable) as err:
        build({'backbone': 'resnet18'}, 4)
    message = str(err.value)
    url, cache = M.imagenet_weight_file('resnet18')
    assert cache.startswith(str(tmp_path)) and cache.endswith('.pth')
    assert cache in message and url in message and '--scratch' in message
    assert attempts == [url]


def forbid_downloads(torch_home, monkeypatch):
    """Point the torch hub cache at `torch_home` and fail the test on any download: the file must be read there."""
    monkeypatch.setenv('TORCH_HOME', str(torch_home))
    monkeypatch.setattr(torch.hub, 'download_url_to_file',
                        lambda *a, **k: pytest.fail('must not download when the file is cached'))


def test_cached_imagenet_weights_are_loaded_from_the_hub_cache(tmp_path, monkeypatch):
    forbid_downloads(tmp_path, monkeypatch)
    import torchvision
    torch.manual_seed(3)
    reference = torchvision.models.resnet18()
    _, cache = M.imagenet_weight_file('resnet18')
    (tmp_path / 'hub' / 'checkpoints').mkdir(parents=True)
    torch.save(reference.state_dict(), cache)
    net = build({'backbone': 'resnet18'}, 4)
    assert torch.equal(net.body.conv1.weight, reference.conv1.weight)
    assert torch.equal(net.body.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)


def test_bnneck_gives_bn_feature_for_retrieval_and_the_pre_bn_feature_for_metric_losses():
    torch.manual_seed(0)
    net = randomise_batchnorm(build({**SMALL, 'bnneck': True}, num_classes=5)).eval()
    x = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        pooled = net.body(x).mean(dim=(2, 3))
        bn = net.classifier.bn
        expected = (pooled - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        feature = net(x, return_feature=True)
        logits, metric_feature = net(x, return_metric_feature=True)
    torch.testing.assert_close(feature, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(metric_feature, pooled, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, feature @ net.classifier.classifier.weight.T)
    assert net.classifier.classifier.bias is None and not bn.bias.requires_grad
    assert net.feature_dim == pooled.shape[1]
    body, head = heads.parameter_groups(net, 0.1)
    assert all(p.requires_grad for p in head['params']) and id(bn.bias) not in {id(p) for p in head['params']}


def test_class_block_gives_the_bottleneck_feature_to_metric_losses():
    net = build(SMALL, num_classes=5).eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        logits, feature = net(x, return_metric_feature=True)
        torch.testing.assert_close(feature, net(x, return_feature=True))
        torch.testing.assert_close(logits, net(x))


@pytest.mark.parametrize('flag', [f for f, (name, _) in spec.BACKBONE_ALIASES.items()
                                  if name and f not in ('use_dense', 'ibn', 'use_convnext')])
def test_every_timm_backbone_flag_builds_and_gives_the_feature_shape(flag):
    """Built on the meta device (shapes only, no weights initialised in memory): the large timm models in
    seconds. use_convnext and ibn run real forwards below."""
    name, size = spec.BACKBONE_ALIASES[flag]
    h, w = size or (64, 64)
    with torch.device('meta'):
        net = build({flag: True, 'scratch': True, 'h': h, 'w': w}, num_classes=5)
        x = torch.empty(2, 3, h, w)
        assert net(x).shape == (2, 5)
        assert net(x, return_feature=True).shape == (2, 512)
    assert spec.backbone_name({flag: True}) == name and name.startswith('timm:')


def test_convnext_and_ibn_run_real_forwards_and_ibn_matches_its_definition():
    torch.manual_seed(0)
    convnext = build({'use_convnext': True, 'scratch': True}, num_classes=3).eval()
    with torch.no_grad():
        assert convnext(torch.randn(2, 3, 64, 32), return_feature=True).shape == (2, 512)
    ibn = build({'ibn': True, 'scratch': True, 'bnneck': True}, num_classes=3).eval()
    block = ibn.body.layer2[0].bn1
    assert isinstance(block, M.IBN) and not isinstance(ibn.body.layer4[0].bn1, M.IBN)
    x = torch.randn(2, block.IN.num_features + block.BN.num_features, 5, 4)
    assert x.shape[1] == 128   # layer2's first block; IBN-a: InstanceNorm on half of its channels
    with torch.no_grad():
        half = 64
        a = x[:, :half]
        mean, var = a.mean(dim=(2, 3), keepdim=True), a.var(dim=(2, 3), unbiased=False, keepdim=True)
        expected_in = (a - mean) / torch.sqrt(var + block.IN.eps) * block.IN.weight[:, None, None] + \
            block.IN.bias[:, None, None]
        torch.testing.assert_close(block(x)[:, :half], expected_in, rtol=1e-4, atol=1e-4)
        assert ibn(torch.randn(2, 3, 64, 32), return_feature=True).shape == (2, 2048)


def test_backbone_flags_conflict_clearly_and_imply_input_sizes():
    with pytest.raises(ValueError, match='pick one backbone'):
        spec.backbone_name({'use_swin': True, 'use_hr': True})
    with pytest.raises(ValueError, match='conflicts with --backbone resnet18'):
        spec.backbone_name({'use_convnext': True, 'backbone': 'resnet18'})
    assert spec.NetworkSpec.from_opts({'use_swinv2': True}).input_size() == (224, 224)
    with pytest.raises(ValueError, match='--use_vit: a backbone of older versions of the original'):
        spec.backbone_name({'use_vit': True})
    o = recipe.resolved_opts(recipe.build_parser().parse_args(['--use_swin']))
    assert (o.h, o.w) == (224, 224)


def test_usam_matches_its_definition_and_sits_after_the_stem_and_layer1():
    net = build({**SMALL, 'usam': True}, num_classes=3)
    names = [n for n, _ in net.body.named_children()]
    assert names[:7] == ['conv1', 'bn1', 'relu', 'usam_1', 'maxpool', 'layer1', 'usam_2']
    usam = net.body.usam_1.eval()
    with torch.no_grad():
        usam.bn.running_mean.fill_(0.3)
        usam.bn.running_var.fill_(2.0)
    x = torch.randn(2, 4, 6, 5)
    s = x.sum(1)
    expected = x.clone()
    for b in range(2):
        for i in range(1, 5):
            for j in range(1, 4):
                unit_sub = 9 * s[b, i, j] - s[b, i - 1:i + 2, j - 1:j + 2].sum()
                v = float((unit_sub - 0.3) / math.sqrt(2.0 + usam.bn.eps) * usam.bn.weight + usam.bn.bias)
                a = v if v > 0 else 0.1 * v   # the original's LeakyReLU(0.1)
                expected[b, :, i, j] = x[b, :, i, j] * (1 + a)
    with torch.no_grad():
        torch.testing.assert_close(usam(x), expected, rtol=1e-5, atol=1e-5)
        assert net.eval()(torch.randn(2, 3, 64, 32)).shape == (2, 3)
    with pytest.raises(ValueError, match='--usam'):
        build({'backbone': 'mobilenet_v3_small', 'scratch': True, 'usam': True}, 3)


def test_classifier_starts_as_the_originals_weights_init_classifier():
    # The original: init.normal_(classifier Linear weight, std=0.0001), bias 0. BoT's BNNeck keeps its 0.001.
    torch.manual_seed(0)
    block = heads.ClassBlock(64, 20000, droprate=0.5, linear_num=512)
    weight = block.classifier.weight.detach().double()
    assert abs(weight.std().item() - 1e-4) < 2e-6 and abs(weight.mean().item()) < 1e-6
    assert torch.count_nonzero(block.classifier.bias) == 0
    neck = heads.BNNeck(512, 20000).classifier.weight.detach().double()
    assert abs(neck.std().item() - 1e-3) < 2e-5


def test_pcb_heads_drop_half_whatever_droprate_says():
    # The original's PCB: ClassBlock(2048, class_num, droprate=0.5, linear=256) for each part, and Dropout(0.5).
    for droprate in (0.0, 0.75):
        net = build({**SMALL, 'PCB': True, 'droprate': droprate}, 5)
        drops = [m.p for m in net.modules() if isinstance(m, nn.Dropout)]
        assert drops == [0.5] * 7, droprate


def test_use_dense_loads_torchvisions_densenet_file_with_its_old_key_names(tmp_path, monkeypatch):
    # torchvision's densenet121 ImageNet file keeps the names of before its rename (`norm.1`, `conv.2`) and no
    # num_batches_tracked; torchvision's own loader renames them, so must train.py --use_dense.
    forbid_downloads(tmp_path, monkeypatch)
    import torchvision
    torch.manual_seed(4)
    reference = torchvision.models.densenet121()
    old_names = {k.replace('.norm1.', '.norm.1.').replace('.conv2.', '.conv.2.'): v
                 for k, v in reference.state_dict().items() if not k.endswith('num_batches_tracked')}
    assert 'features.denseblock1.denselayer1.conv.2.weight' in old_names
    _, cache = M.imagenet_weight_file('densenet121')
    (tmp_path / 'hub' / 'checkpoints').mkdir(parents=True)
    torch.save(old_names, cache)
    net = build({'use_dense': True}, 4)
    layer = net.body.features.denseblock4.denselayer16
    assert torch.equal(layer.conv2.weight, reference.features.denseblock4.denselayer16.conv2.weight)
    assert torch.equal(layer.norm1.running_var, reference.features.denseblock4.denselayer16.norm1.running_var)


def test_the_backbone_records_say_what_their_bodies_give():
    """reid.spec.BACKBONES is the one place a named backbone's facts live: its record's output kind is what the
    built body gives, its flag is the original's alias of it, and the original's runs are read for exactly
    ResNet-50 and DenseNet-121 (the original's test.py rebuilds those)."""
    from reid.models.backbones import backbone_body
    for name in ('resnet50', 'densenet121', 'resnet50_ibn_a'):
        _, _, is_map = backbone_body(name, pretrained=False)
        assert is_map == (spec.BACKBONES[name].output == 'map')
    assert spec.BACKBONE_ALIASES['use_dense'] == ('densenet121', None)
    assert spec.BACKBONE_ALIASES['use_swin'] == ('timm:swin_base_patch4_window7_224', (224, 224))
    assert {n for n, b in spec.BACKBONES.items() if b.original_runs} == {'resnet50', 'densenet121'}
    assert spec.backbone_record('mobilenet_v3_small') == spec.Backbone()


def test_token_grid_backbones_are_built_for_the_runs_input_size_as_their_records_say():
    """A ViT's position grid is built for one input size: a backbone whose record says 'tokens' (and an unlisted
    timm ViT, by its family name) is built for the run's 256x128, timm's patch embedding shows the grid it got;
    a CNN is given no grid (timm's ResNet would refuse the argument)."""
    from reid.models.backbones import backbone_body
    assert spec.BACKBONES['timm:vit_small_patch16_224.dino'].output == 'tokens'
    for name in ('timm:vit_small_patch16_224.dino', 'timm:vit_tiny_patch16_224'):
        body, _, _ = backbone_body(name, pretrained=False, input_size=(256, 128))
        assert tuple(body.patch_embed.img_size) == (256, 128), name
        assert body.patch_embed.grid_size == (16, 8)
    body, _, _ = backbone_body('timm:resnet18', pretrained=False, input_size=(256, 128))
    assert body(torch.zeros(1, 3, 256, 128)).shape[-1] == 512
    assert [spec.builds_token_grid(n) for n in ('resnet50', 'timm:convnext_tiny', 'timm:swinv2_base_window8_256')] \
        == [False, False, True]
