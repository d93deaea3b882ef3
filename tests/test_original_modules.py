"""The original's classes and helpers under its names (model.ft_net, ft_net_dense, ft_net_middle, PCB, PCB_test,
ClassBlock; utils.fuse_all_conv_bn, save_network): its module tree, written out below from its definitions
independently of the code under test, loads into them strictly and gives the same outputs."""
import copy
import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import model
import utils
from reid.models import backbones
from reid.models.original_modules import USAM

REPO = Path(__file__).resolve().parents[1]
NCLASSES = 7


def images(seed=1):
    return torch.randn(2, 3, 64, 32, generator=torch.Generator().manual_seed(seed))


class RefClassBlock(nn.Module):
    def __init__(self, input_dim, class_num, droprate=0.5, relu=False, bnorm=True, linear=512, return_f=False):
        super().__init__()
        layers, dim = [], input_dim
        if linear > 0:
            layers, dim = [nn.Linear(input_dim, linear)], linear
        if bnorm:
            layers.append(nn.BatchNorm1d(dim))
        if relu:
            layers.append(nn.LeakyReLU(0.1))
        if droprate > 0:
            layers.append(nn.Dropout(droprate))
        self.return_f = return_f
        self.add_block = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(dim, class_num))

    def forward(self, x):
        f = self.add_block(x)
        return [self.classifier(f), f] if self.return_f else self.classifier(f)


class RefUSAM(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, 1, 3, 3), requires_grad=False)
        self.weight2 = nn.Parameter(torch.ones(1, 1, 1, 1) * 9, requires_grad=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x):
        fmap = x.sum(1, keepdim=True)
        att = F.leaky_relu(self.bn(F.conv2d(fmap, self.weight2) - F.conv2d(fmap, self.weight, padding=1)), 0.1)
        att[:, :, :, 0] = 0
        att[:, :, :, -1] = 0
        att[:, :, 0, :] = 0
        att[:, :, -1, :] = 0
        return x + att * x


class RefIBN(nn.Module):
    def __init__(self, planes):
        super().__init__()
        self.half = planes // 2
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x):
        return torch.cat([self.IN(x[:, :self.half].contiguous()), self.BN(x[:, self.half:].contiguous())], 1)


def ref_resnet50(stride=2, ibn=False):
    net = torchvision.models.resnet50(weights=None)
    if ibn:  # IBN-Net's resnet50_ibn_a: IBN as the first norm of every block of layers 1-3
        for layer in (net.layer1, net.layer2, net.layer3):
            for block in layer:
                block.bn1 = RefIBN(block.bn1.num_features)
    if stride == 1:
        net.layer4[0].downsample[0].stride = (1, 1)
        net.layer4[0].conv2.stride = (1, 1)
    return net


def ref_resnet_map(m, x, usam_1=None, usam_2=None):
    x = m.relu(m.bn1(m.conv1(x)))
    x = usam_1(x) if usam_1 else x
    x = m.layer1(m.maxpool(x))
    x = usam_2(x) if usam_2 else x
    return m.layer4(m.layer3(m.layer2(x)))


class RefFtNet(nn.Module):
    def __init__(self, droprate=0.5, stride=2, circle=False, ibn=False, linear_num=512, usam=False):
        super().__init__()
        self.model = ref_resnet50(stride, ibn)
        self.model.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = RefClassBlock(2048, NCLASSES, droprate, linear=linear_num, return_f=circle)
        self.usam = usam
        if usam:
            self.usam_1, self.usam_2 = RefUSAM(), RefUSAM()

    def forward(self, x):
        x = ref_resnet_map(self.model, x, *((self.usam_1, self.usam_2) if self.usam else ()))
        x = self.model.avgpool(x)
        return self.classifier(x.view(x.size(0), x.size(1)))


class RefDense(nn.Module):
    def __init__(self, stride=2, circle=False):
        super().__init__()
        self.model = torchvision.models.densenet121(weights=None)
        self.model.features.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.model.fc = nn.Sequential()
        if stride == 1:
            self.model.features.transition3.pool.stride = 1
        self.classifier = RefClassBlock(1024, NCLASSES, return_f=circle)

    def forward(self, x):
        x = self.model.features(x)
        return self.classifier(x.view(x.size(0), x.size(1)))


class RefPCB(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = ref_resnet50(stride=1)
        self.avgpool = nn.AdaptiveAvgPool2d((6, 1))
        self.dropout = nn.Dropout(0.5)
        for i in range(6):
            setattr(self, f'classifier{i}', RefClassBlock(2048, NCLASSES, linear=256))

    def stripes(self, x):  # PCB_test's output
        x = self.avgpool(ref_resnet_map(self.model, x))
        return x.view(x.size(0), x.size(1), x.size(2))

    def forward(self, x):
        x = self.stripes(x)
        return [getattr(self, f'classifier{i}')(x[:, :, i]) for i in range(6)]


def randomised(net, seed):
    """`net` in eval mode, every floating tensor random (USAM's fixed kernels too), so a misplaced one shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith('running_var'):
                t.uniform_(0.5, 1.5, generator=g)
            elif t.dtype.is_floating_point:
                t.normal_(1.0 if name.endswith('weight') and t.dim() == 1 else 0.0, 0.05 if t.dim() > 1 else 0.2,
                          generator=g)
    return net.eval()


def loaded(ours, ref, tmp_path):
    """`ours` (eval) after a strict load of the reference's saved state_dict; their key lists and shapes match."""
    torch.save(ref.state_dict(), tmp_path / 'net_last.pth')
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in ref.state_dict().items()]
    ours.load_state_dict(torch.load(tmp_path / 'net_last.pth', weights_only=True), strict=True)
    return ours.eval()


def assert_same_outputs(ours, ref, x):
    """Same logits (or [logits, feature]), then the same bottleneck feature once the last Linear is removed,
    as the original's test.py does."""
    with torch.no_grad():
        for a, b in zip(*(o if isinstance(o, list) else [o] for o in (ours(x), ref(x))), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        ours.classifier.classifier = nn.Sequential()
        ref.classifier.classifier = nn.Sequential()
        feature = ours(x)
        torch.testing.assert_close(feature, ref(x), rtol=1e-4, atol=1e-5)
    return feature


FT_NET_VARIANTS = [{}, {'stride': 1, 'usam': True}, {'circle': True, 'linear_num': 256, 'droprate': 0}, {'ibn': True}]


@pytest.mark.parametrize('options', FT_NET_VARIANTS, ids=lambda o: '-'.join(f'{k}={v}' for k, v in o.items()) or 'default')
def test_ft_net_loads_the_originals_state_dict_and_gives_its_outputs(tmp_path, options):
    ref = randomised(RefFtNet(**options), seed=len(str(options)))
    ours = loaded(model.ft_net(NCLASSES, **options, pretrained=False), ref, tmp_path)
    feature = assert_same_outputs(ours, ref, images())
    width = options.get('linear_num', 512)
    assert (feature[0] if options.get('circle') else feature).shape == (2, width)


@pytest.mark.parametrize('options', [{}, {'stride': 1, 'circle': True}], ids=['default', 'stride1-circle'])
def test_ft_net_dense_loads_the_originals_state_dict_and_gives_its_outputs(tmp_path, options):
    ref = randomised(RefDense(**options), seed=3)
    ours = loaded(model.ft_net_dense(NCLASSES, **options, pretrained=False), ref, tmp_path)
    assert_same_outputs(ours, ref, images())


def test_ft_net_middle_is_ft_net_with_its_defaults(tmp_path):
    ref = randomised(RefFtNet(), seed=4)
    ours = loaded(model.ft_net_middle(NCLASSES, pretrained=False), ref, tmp_path)
    assert_same_outputs(ours, ref, images())


def test_pcb_gives_six_part_logits_and_pcb_test_the_stripes(tmp_path):
    ref = randomised(RefPCB(), seed=5)
    ours = loaded(model.PCB(NCLASSES, pretrained=False), ref, tmp_path)
    x = images()
    with torch.no_grad():
        logits, expected = ours(x), ref(x)
        assert len(logits) == 6
        for a, b in zip(logits, expected, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        ours.model.layer4[0].conv2.stride = ours.model.layer4[0].downsample[0].stride = (2, 2)
        tester = model.PCB_test(ours).eval()   # the original's PCB_test sets the last stride 1 itself
        stripes = tester(x)
    assert tester.model is ours.model
    assert ours.dropout.p == 0.5
    assert stripes.shape == (2, 2048, 6)
    torch.testing.assert_close(stripes, ref.stripes(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('flags, layers', [
    ({}, [nn.Linear, nn.BatchNorm1d, nn.Dropout]),
    ({'relu': True, 'droprate': 0}, [nn.Linear, nn.BatchNorm1d, nn.LeakyReLU]),
    ({'bnorm': False, 'linear': 0}, [nn.Dropout]),
])
def test_class_block_layers_follow_its_flags(flags, layers):
    block = model.ClassBlock(32, NCLASSES, **{'droprate': 0.5, **flags})
    assert [type(m) for m in block.add_block] == layers
    assert isinstance(block.classifier, nn.Sequential) and len(block.classifier) == 1
    width = 32 if flags.get('linear') == 0 else 512
    assert block.classifier[0].in_features == width
    if flags.get('relu'):
        assert block.add_block[2].negative_slope == 0.1
    else:
        assert block.add_block[-1].p == 0.5
    block.return_f = True
    logits, f = block.eval()(torch.randn(3, 32))
    assert logits.shape == (3, NCLASSES) and f.shape == (3, width)


def test_class_block_starts_from_the_originals_initialisation():
    torch.manual_seed(0)
    block = model.ClassBlock(2048, 4000, 0.5)
    linear, bn, classifier = block.add_block[0], block.add_block[1], block.classifier[0]
    assert classifier.weight.std().item() == pytest.approx(1e-4, rel=0.02)   # 2M draws: std known to 0.1 %
    assert linear.weight.std().item() == pytest.approx((2 / 512) ** 0.5, rel=0.02)  # Kaiming, fan_out = 512
    assert bn.weight.mean().item() == pytest.approx(1.0, abs=0.005)
    assert bn.weight.std().item() == pytest.approx(0.02, rel=0.2)
    for bias in (linear.bias, bn.bias, classifier.bias):
        assert not bias.any()


def test_usam_starts_with_the_originals_frozen_kernels():
    torch.manual_seed(2)
    ours, ref = USAM(), RefUSAM()
    assert list(ours.state_dict()) == list(ref.state_dict()) == ['weight', 'weight2', 'bn.weight', 'bn.bias',
                                                                  'bn.running_mean', 'bn.running_var',
                                                                  'bn.num_batches_tracked']
    assert not ours.weight.requires_grad and not ours.weight2.requires_grad
    ours.bn.weight.data.fill_(0.7)
    ours.bn.running_mean.fill_(-3.0)
    ref.bn.load_state_dict(ours.bn.state_dict())   # the kernels stay each one's own initial values
    x = torch.randn(2, 4, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), ref.eval()(x))


@pytest.mark.parametrize('build', ['ft_net', 'ft_net_dense'])
def test_fuse_all_conv_bn_keeps_the_outputs_and_folds_every_conv_bn_pair(build):
    net = randomised(getattr(model, build)(NCLASSES, pretrained=False), seed=6)
    net.classifier.classifier = nn.Sequential()
    reference = copy.deepcopy(net)
    net.train()   # the original's test.py fuses an eval-mode network; the helper sets eval itself
    fused = utils.fuse_all_conv_bn(net)
    assert fused is net and not fused.training
    with torch.no_grad():
        expected = reference(images())
        # float rounding through 50 random layers: relative to the largest feature (~800 for the ResNet)
        torch.testing.assert_close(fused(images()), expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())
    left = [name for name, m in fused.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if build == 'ft_net':
        assert left == []
    else:   # DenseNet: only the norms that no convolution feeds (before ReLU at a layer's or transition's start)
        assert left and all(name.endswith(('.norm1', '.norm', '.norm5')) for name in left)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in (fused.model.features.norm0,
                                                               fused.model.features.denseblock4.denselayer16.norm2))


def test_save_network_writes_the_originals_file_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    net = model.ClassBlock(8, 3, 0.5)
    utils.save_network(net, 'run', 10)
    utils.save_network(net, 'run', 'last')
    utils.save_network(net, 'run', 'rank1', local_rank=1)
    utils.save_network(net, 'run', 'rank0', local_rank=0)
    folder = tmp_path / 'model' / 'run'
    assert sorted(os.listdir(folder)) == ['net_010.pth', 'net_last.pth', 'net_rank0.pth']
    saved = torch.load(folder / 'net_010.pth', weights_only=True)
    assert saved.keys() == net.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in net.state_dict().items())
    assert next(net.parameters()).device.type == 'cpu'


def test_the_originals_imports_work_from_the_repository_root():
    code = ('from model import ft_net, ft_net_dense, ft_net_middle, PCB, PCB_test, ClassBlock\n'
            'from utils import fuse_all_conv_bn, save_network\n'
            'names = (ft_net, ft_net_dense, ft_net_middle, PCB, PCB_test, ClassBlock, fuse_all_conv_bn, save_network)\n'
            'print(sorted({f.__module__ for f in names}))\n')
    done = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != 'PYTHONPATH'})
    assert done.returncode == 0, done.stderr
    assert done.stdout == "['reid.models.original_modules']\n"


def offline(monkeypatch, tmp_path):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))

    def unreachable(url, dst, *args, **kwargs):
        raise urllib.error.URLError('network is unreachable')

    monkeypatch.setattr(torch.hub, 'download_url_to_file', unreachable)


@pytest.mark.parametrize('build, weights', [
    (lambda: model.ft_net(), 'resnet50'), (lambda: model.ft_net(ibn=True), 'ibn'),
    (lambda: model.ft_net_dense(5), 'densenet121'), (lambda: model.PCB(5), 'resnet50'),
], ids=['ft_net', 'ft_net_ibn', 'ft_net_dense', 'PCB'])
def test_offline_constructors_without_cached_weights_raise_the_clear_error(tmp_path, monkeypatch, build, weights):
    offline(monkeypatch, tmp_path)
    with pytest.raises(backbones.PretrainedWeightsUnavailable) as err:
        build()
    url = backbones.IBN_A_URL if weights == 'ibn' else backbones.imagenet_weight_file(weights)[0]
    assert url in str(err.value) and str(tmp_path) in str(err.value) and '--scratch' in str(err.value)


def test_constructors_load_the_cached_imagenet_weights(tmp_path, monkeypatch):
    """By default, as the original: ImageNet weights, here from the hub cache; torchvision's DenseNet file keeps
    the old `norm.1` key names, which must load too."""
    offline(monkeypatch, tmp_path)
    (tmp_path / 'hub' / 'checkpoints').mkdir(parents=True)
    resnet = randomised(torchvision.models.resnet50(weights=None), seed=7)
    torch.save(resnet.state_dict(), backbones.imagenet_weight_file('resnet50')[1])
    dense = randomised(torchvision.models.densenet121(weights=None), seed=8)
    # as in torchvision's file (saved before BatchNorm counted batches): `norm.1`, `conv.2`, no num_batches_tracked
    old_names = {k.replace('.norm1.', '.norm.1.').replace('.conv2.', '.conv.2.'): v
                 for k, v in dense.state_dict().items() if not k.endswith('num_batches_tracked')}
    assert 'features.denseblock1.denselayer1.norm.1.weight' in old_names
    torch.save(old_names, backbones.imagenet_weight_file('densenet121')[1])

    net = model.ft_net(NCLASSES, stride=1)
    assert all(torch.equal(v, net.model.state_dict()[k]) for k, v in resnet.state_dict().items())
    assert net.model.layer4[0].conv2.stride == (1, 1)
    dense_net = model.ft_net_dense(NCLASSES)
    assert all(torch.equal(v, dense_net.model.state_dict()[k]) for k, v in dense.state_dict().items())
