"""Runs of the original repository: state_dicts laid out in its names load here and give its features.

The original's ft_net, ft_net_dense and PCB are rebuilt below independently (torchvision backbone under
`model`, ClassBlock with `add_block` and `classifier` Sequentials), with its test-time forward and its feature
normalisation; the toolkit's loader must reproduce those features from the saved state_dict alone.
"""
import math
from pathlib import Path

import pytest
import scipy.io
import torch
import torch.nn.functional as F
import torchvision
import yaml
from torch import nn

from reid import api
from reid.models import original
from reid.models.features import flip_sum_features, l2_normalize_features
from conftest import load_test_cli, hand_transform

ROOT = Path(__file__).resolve().parents[1]
NCLASSES = 7


class OrigClassBlock(nn.Module):
    def __init__(self, input_dim, class_num, droprate=0.5, linear=512):
        super().__init__()
        self.add_block = nn.Sequential(nn.Linear(input_dim, linear), nn.BatchNorm1d(linear), nn.Dropout(droprate))
        self.classifier = nn.Sequential(nn.Linear(linear, class_num))


class OrigUSAM(nn.Module):
    """The original's USAM as its model.py defines it: fixed kernels `weight` (3x3 ones) and `weight2` (1x1 of 9),
    att = LeakyReLU_0.1(BN(conv(fmap, weight2) - conv(fmap, weight, padding 1))) on the channel sum, zero on the
    border, output x + att * x."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, 1, 3, 3), requires_grad=False)
        self.weight2 = nn.Parameter(torch.full((1, 1, 1, 1), 9.0), requires_grad=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x):
        fmap = x.sum(1, keepdim=True)
        att = F.conv2d(fmap, self.weight2) - F.conv2d(fmap, self.weight, padding=1)
        att = F.leaky_relu(self.bn(att), 0.1)
        att[:, :, :, 0] = att[:, :, :, -1] = 0
        att[:, :, 0, :] = att[:, :, -1, :] = 0
        return x + att * x


class OrigFtNet(nn.Module):
    """The original's ft_net at test time (classifier.classifier replaced by an empty Sequential); with `usam`
    its USAM after the stem's ReLU and after layer1."""

    def __init__(self, stride=2, linear=512, usam=False):
        super().__init__()
        self.model = torchvision.models.resnet50(weights=None)
        if stride == 1:
            self.model.layer4[0].downsample[0].stride = (1, 1)
            self.model.layer4[0].conv2.stride = (1, 1)
        self.model.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = OrigClassBlock(2048, NCLASSES, linear=linear)
        self.usam = usam
        if usam:
            self.usam_1, self.usam_2 = OrigUSAM(), OrigUSAM()

    def feature(self, x):
        m = self.model
        x = m.relu(m.bn1(m.conv1(x)))
        x = self.usam_1(x) if self.usam else x
        x = m.layer1(m.maxpool(x))
        x = self.usam_2(x) if self.usam else x
        x = m.layer4(m.layer3(m.layer2(x)))
        return self.classifier.add_block(m.avgpool(x).view(x.size(0), x.size(1)))


class OrigDense(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = torchvision.models.densenet121(weights=None)
        self.model.features.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.model.fc = nn.Sequential()
        self.classifier = OrigClassBlock(1024, NCLASSES)

    def feature(self, x):
        x = self.model.features(x)
        return self.classifier.add_block(x.view(x.size(0), x.size(1)))


class OrigPCB(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = torchvision.models.resnet50(weights=None)
        self.model.layer4[0].downsample[0].stride = (1, 1)
        self.model.layer4[0].conv2.stride = (1, 1)
        self.avgpool = nn.AdaptiveAvgPool2d((6, 1))
        for i in range(6):
            setattr(self, f'classifier{i}', OrigClassBlock(2048, NCLASSES, linear=256))

    def feature(self, x):  # PCB_test: [B, 2048, 6]
        m = self.model
        x = m.layer4(m.layer3(m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x))))))))
        x = self.avgpool(x)
        return x.view(x.size(0), x.size(1), x.size(2))


def randomised(net, seed):
    """`net` in eval mode with every parameter and BatchNorm statistic random (so a misplaced tensor shows)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if t.dtype.is_floating_point:
                if name.endswith('running_var'):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * (0.05 if t.dim() > 1 else 0.2)
                            + (1.0 if name.endswith('weight') and t.dim() == 1 else 0.0))
    return net.eval()


def original_features(net, images, pcb=False):
    """The original test.py: feature of the image + of its flip, then L2 norm (PCB: per part, x sqrt(6))."""
    with torch.no_grad():
        ff = net.feature(images) + net.feature(torch.flip(images, dims=[3]))
    if pcb:
        ff = ff / (torch.norm(ff, p=2, dim=1, keepdim=True) * math.sqrt(6))
        return ff.reshape(ff.size(0), -1)
    return ff / torch.norm(ff, p=2, dim=1, keepdim=True)


def write_original_run(run_dir, net, **opts):
    """model/<name>/ as the original writes it: opts.yaml (its keys) and net_last.pth (a plain state_dict)."""
    run_dir.mkdir(parents=True)
    values = {'name': run_dir.name, 'data_dir': '../Market/pytorch', 'train_all': True, 'batchsize': 32,
              'lr': 0.05, 'erasing_p': 0, 'color_jitter': False, 'warm_epoch': 0, 'total_epoch': 60,
              'droprate': 0.5, 'stride': 2, 'linear_num': 512, 'use_dense': False, 'use_NAS': False,
              'use_swin': False, 'PCB': False, 'circle': False, 'fp16': False, 'gpu_ids': '0',
              'nclasses': NCLASSES, **opts}
    (run_dir / 'opts.yaml').write_text(yaml.dump(values, default_flow_style=False))
    torch.save(net.state_dict(), run_dir / 'net_last.pth')


@pytest.mark.parametrize('kind', ['ft_net', 'ft_net_stride1', 'ft_net_usam', 'dense', 'PCB'])
def test_original_runs_give_the_original_features(tmp_path, kind):
    net = randomised({'ft_net': lambda: OrigFtNet(), 'ft_net_stride1': lambda: OrigFtNet(stride=1),
                      'ft_net_usam': lambda: OrigFtNet(usam=True), 'dense': OrigDense, 'PCB': OrigPCB}[kind](),
                     seed=len(kind))
    if kind == 'ft_net_usam':   # its fixed kernels stay what the original's constructor made them
        net.usam_1.weight.data.fill_(1.0), net.usam_2.weight.data.fill_(1.0)
        net.usam_1.weight2.data.fill_(9.0), net.usam_2.weight2.data.fill_(9.0)
    opts = {'ft_net_stride1': {'stride': 1}, 'ft_net_usam': {'usam': True}, 'dense': {'use_dense': True},
            'PCB': {'PCB': True}}.get(kind, {})
    write_original_run(tmp_path / kind, net, **opts)
    assert original.is_original_state_dict(torch.load(tmp_path / kind / 'net_last.pth', weights_only=True))

    model, spec, _ = api.load_network(tmp_path / kind)
    assert spec.input_size() == ((384, 192) if kind == 'PCB' else (256, 128))  # no h/w: its defaults
    images = torch.randn(3, 3, 64, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = l2_normalize_features(flip_sum_features(model, images))
    ref = original_features(net, images, pcb=kind == 'PCB')
    if kind == 'PCB':
        # the original flattens [N, 2048, 6] channel-major, this toolkit part-major: the same numbers, reordered
        ref = ref.view(3, 2048, 6).transpose(1, 2).reshape(3, -1)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-4)


def test_an_original_pcb_run_is_a_resnet50_pcb_even_with_use_dense_in_its_opts(tmp_path):
    """The original test.py builds ft_net_dense when use_dense, then replaces it by PCB when PCB: PCB wins."""
    net = randomised(OrigPCB(), seed=5)
    write_original_run(tmp_path / 'pcb', net, PCB=True, use_dense=True)
    model, spec, _ = api.load_network(tmp_path / 'pcb')
    assert (spec.backbone, spec.PCB) == ('resnet50', True)
    images = torch.randn(2, 3, 64, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = l2_normalize_features(flip_sum_features(model, images))
    ref = original_features(net, images, pcb=True).view(2, 2048, 6).transpose(1, 2).reshape(2, -1)
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-4)


def test_key_mapping_names_and_drops():
    sd = {'model.conv1.weight': 1, 'model.layer1.0.bn1.running_mean': 2, 'model.fc.weight': 3,
          'classifier.add_block.0.weight': 4, 'classifier.add_block.1.running_var': 5,
          'classifier.classifier.0.bias': 6, 'classifier3.add_block.1.weight': 7, 'classifier3.classifier.0.weight': 8,
          'model.features.norm5.bias': 9, 'model.classifier.weight': 10}
    assert original.convert_state_dict({'module.' + k: v for k, v in sd.items()}) == {
        'body.conv1.weight': 1, 'body.layer1.0.bn1.running_mean': 2, 'classifier.add_block.0.weight': 4,
        'classifier.add_block.1.running_var': 5, 'classifier.classifier.bias': 6,
        'classifiers.3.add_block.1.weight': 7, 'classifiers.3.classifier.weight': 8, 'body.features.norm5.bias': 9}
    assert not original.is_original_state_dict({'body.conv1.weight': 0, 'classifier.add_block.0.weight': 0})


def test_unsupported_original_backbone_is_named(tmp_path):
    write_original_run(tmp_path / 'swin', randomised(OrigFtNet(), 0), use_swin=True)
    with pytest.raises(ValueError, match='use_swin'):
        api.load_network(tmp_path / 'swin')


@pytest.mark.precision
def test_test_py_reads_an_original_run(tmp_path, tiny_prepared):
    """test.py end to end on an original run: its features equal the original's on the same images."""
    from reid.data.prepared import list_reid_images
    from PIL import Image

    net = randomised(OrigFtNet(), seed=3)
    write_original_run(tmp_path / 'model' / 'orig', net, h=64, w=32)
    cli = load_test_cli()
    result = tmp_path / 'r.mat'
    cli.main(['--name', 'orig', '--model_dir', str(tmp_path / 'model'), '--test_dir', str(tiny_prepared),
              '--result', str(result), '--batchsize', '64', '--cpu_bf16', 'off'])   # compared in fp32
    query = [p for p, _, _ in list_reid_images(tiny_prepared / 'query')]
    tf = hand_transform(64, 32)
    images = torch.stack([tf(Image.open(p).convert('RGB')) for p in query])
    ref = original_features(net, images)
    got = torch.from_numpy(scipy.io.loadmat(result)['query_f'])
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-3)  # test.py fuses conv+BN: float rounding only


def test_checkpoint_of_another_network_is_named(tmp_path):
    write_original_run(tmp_path / 'r', randomised(OrigFtNet(), 0), use_dense=True)  # ResNet weights, dense opts
    with pytest.raises(ValueError, match=r'net_last.pth: does not fit the network of .*opts.yaml \(Missing key'):
        api.load_network(tmp_path / 'r')


@pytest.mark.precision
def test_a_run_without_h_w_is_fed_256x128_on_a_vehicle_layout_by_every_command(tmp_path):
    """An original run's opts.yaml has no h/w: it was trained at 256x128. Tested on a VeRi folder (whose layout
    trains new runs at 256x256), test.py, the API (and so demo.py --query_image) and export.py all feed it 256x128
    (the test folder never changes what a run was trained at)."""
    import export
    from reid.data import synthetic
    from reid.data.prepared import list_reid_images
    from PIL import Image
    import prepare

    synthetic.make_layout(tmp_path / 'veri', 'veri', size='tiny', seed=0)
    prepare.main(['--download_path', str(tmp_path / 'veri')])
    veri = tmp_path / 'veri' / 'pytorch'
    net = randomised(OrigFtNet(), seed=4)
    write_original_run(tmp_path / 'model' / 'orig', net)   # no h, no w
    load_test_cli().main(['--name', 'orig', '--model_dir', str(tmp_path / 'model'), '--test_dir', str(veri),
                          '--result', str(tmp_path / 'r.mat'), '--cpu_bf16', 'off'])   # compared in fp32
    query = [p for p, _, _ in list_reid_images(veri / 'query')][:4]
    got = torch.from_numpy(scipy.io.loadmat(tmp_path / 'r.mat')['query_f'][:4])
    for size, same in (((256, 128), True), ((256, 256), False)):
        images = torch.stack([hand_transform(*size)(Image.open(p).convert('RGB')) for p in query])
        ref = original_features(net, images)
        assert torch.allclose(got, ref, atol=1e-4, rtol=1e-3) is same, size
    run = api.ReIDRun(tmp_path / 'model' / 'orig', device='cpu', precision='fp32')   # auto's backend, in fp32
    assert run.size == (256, 128)
    torch.testing.assert_close(run.features(query), got, atol=1e-4, rtol=1e-3)
    export.main(['--name', 'orig', '--model_dir', str(tmp_path / 'model'), '--format', 'torchscript'])
    meta = yaml.safe_load((tmp_path / 'model' / 'orig' / 'net_last.json').read_text())
    assert (meta['h'], meta['w']) == (256, 128)
