"""The feature contract of reid.models.features and test.py's embedder: flip-sum, L2 normalisation (PCB: each part,
then / sqrt(6)), --ms scales of the original image, conv+BN fusion.

The references never come from the code under test: the mirror is PIL's (the network run on a PIL-transposed
image), the inputs come from conftest.hand_transform, norms are summed in numpy loops, and the --ms and PCB
formulas are the original test.py's, written out here.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from conftest import build, hand_transform
from reid.data.prepared import list_reid_images
from reid.evaluation import extract
from reid.models.features import FeatureExtractor, flip_sum_features, fuse_conv_bn, l2_normalize_features

H, W = 64, 32


def randomised_net(pcb=False, backbone='resnet18', seed=0):
    """A toolkit network in eval mode with random weights and random BatchNorm statistics (so that a BatchNorm
    applied twice, or skipped, shows in the outputs)."""
    torch.manual_seed(seed)
    opts = {'backbone': backbone, 'scratch': True, 'PCB': pcb, 'h': H, 'w': W, 'linear_num': 64}
    net = build(opts, 5, pretrained=False)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith('running_mean'):
                t.copy_(torch.randn(t.shape, generator=g) * 0.2)
            elif name.endswith('running_var'):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith('bias') and t.dim() == 1:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    return net.eval()


def query_batch(prepared, n, mirrored=False):
    """n real query images as test.py feeds them (hand_transform); `mirrored`: each PIL image transposed left-right
    first, the mirror made without torch."""
    tf = hand_transform(H, W)
    images = []
    for path, _, _ in list_reid_images(prepared / 'query')[:n]:
        with Image.open(path) as img:
            img = img.convert('RGB')
            images.append(tf(img.transpose(Image.FLIP_LEFT_RIGHT) if mirrored else img))
    return torch.stack(images)


def features_of(net, images):
    with torch.no_grad():
        return net(images, return_feature=True).double().numpy()


def unit_rows(rows):
    """Each row divided by the square root of the sum of its squares, summed in a loop."""
    out = []
    for row in rows:
        total = 0.0
        for v in row.reshape(-1):
            total += float(v) * float(v)
        out.append(row / math.sqrt(total))
    return np.stack(out)


def test_flip_sum_adds_the_features_of_the_mirrored_image(tiny_prepared):
    net = randomised_net()
    images, mirrored = query_batch(tiny_prepared, 4), query_batch(tiny_prepared, 4, mirrored=True)
    summed = features_of(net, images) + features_of(net, mirrored)
    assert not np.allclose(summed, 2 * features_of(net, images), atol=1e-3)  # the images are not symmetric
    with torch.no_grad():
        got = flip_sum_features(net, images)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), summed, atol=1e-4, rtol=1e-4)   # a sum, not a mean


def test_the_extractor_divides_the_flip_sum_by_its_l2_norm(tiny_prepared):
    """FeatureExtractor is what export.py writes and the API runs: its rows are the hand-normalised flip-sums."""
    net = randomised_net()
    images = query_batch(tiny_prepared, 4)
    ref = unit_rows(features_of(net, images) + features_of(net, query_batch(tiny_prepared, 4, mirrored=True)))
    with torch.no_grad():
        got = FeatureExtractor(net)(images).double().numpy()
    assert got.shape == (4, 64)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    for row in got:
        assert sum(float(v) ** 2 for v in row) == pytest.approx(1.0, abs=1e-5)


def test_pcb_normalises_each_part_then_divides_by_sqrt_six(tiny_prepared):
    """The original test.py: ff [N, 2048, 6] (here [N, 6, 512]) divided by the norm of each part's channels times
    sqrt(6), so every part weighs the same and the whole vector has unit norm."""
    net = randomised_net(pcb=True)
    images = query_batch(tiny_prepared, 3)
    summed = features_of(net, images) + features_of(net, query_batch(tiny_prepared, 3, mirrored=True))
    assert summed.shape == (3, 6, 512)
    ref = np.stack([np.concatenate([unit_rows(part[None])[0] / math.sqrt(6) for part in row]) for row in summed])
    with torch.no_grad():
        got = FeatureExtractor(net)(images).double().numpy()
        got_split = l2_normalize_features(flip_sum_features(net, images)).double().numpy()
    assert got.shape == (3, 6 * 512)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    np.testing.assert_allclose(got_split, ref, atol=1e-5)
    for row in got:
        for p in range(6):   # each part has norm 1 / sqrt(6): no part outweighs another
            part = row[p * 512:(p + 1) * 512]
            assert math.sqrt(sum(float(v) ** 2 for v in part)) == pytest.approx(1 / math.sqrt(6), abs=1e-5)


def test_ms_sums_every_scale_of_the_original_image_resized_bicubic(tiny_prepared):
    """--ms 1,1.21,1.44 are area ratios: the original image resized by 1, 1.1 and 1.2 (bicubic, each from the
    original, never from the previous scale's result), each with its mirror, all summed, then L2-normalised.
    Three scales, so that a compounded scale (the original's defect) shows."""
    net = randomised_net()
    images = query_batch(tiny_prepared, 3)
    scales = extract.parse_scales('1,1.21,1.44')
    assert scales == pytest.approx([1.0, 1.1, 1.2])
    summed = 0
    for s in (1.0, 1.1, 1.2):
        x = images if s == 1.0 else F.interpolate(images, scale_factor=s, mode='bicubic', align_corners=False)
        mirrored = torch.from_numpy(x.numpy()[:, :, :, ::-1].copy())
        summed = summed + features_of(net, x) + features_of(net, mirrored)
    ref = unit_rows(summed)
    with torch.no_grad():
        got = extract.embedder(net, torch.device('cpu'), scales)(images).double().numpy()   # test.py's path
    np.testing.assert_allclose(got, ref, atol=1e-5)


def count_batchnorm2d(model):
    n = 0
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n += 1
    return n


@pytest.mark.parametrize('backbone', ['resnet18', 'resnet50'])
def test_fusing_conv_bn_keeps_the_outputs_folds_every_pair_and_leaves_the_network_alone(tiny_prepared, backbone):
    """test.py, export.py and the API run the fused copy: the same features as the network in eval mode, every
    BatchNorm2d of a ResNet (stem, blocks, downsample; Bottleneck's bn3 too) folded, the network itself unchanged."""
    net = randomised_net(backbone=backbone, seed=2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    n_bn = count_batchnorm2d(net)
    assert n_bn == (20 if backbone == 'resnet18' else 53)   # 1 + 2 per block + 3 downsamples; 1 + 3 x 16 + 4
    images = query_batch(tiny_prepared, 3)
    fused = fuse_conv_bn(net)
    assert count_batchnorm2d(fused) == 0
    with torch.no_grad():
        np.testing.assert_allclose(fused(images, return_feature=True).numpy(), features_of(net, images),
                                   atol=1e-4, rtol=1e-3)
    assert count_batchnorm2d(net) == n_bn
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
