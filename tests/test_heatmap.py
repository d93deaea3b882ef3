"""Activation maps (reid.evaluation.heatmap, demo.py --heatmap): the formula against a loop, the feature map of
every kind of backbone (CNN map, ViT/DINO token grid, Swin stage tokens) located where the input changed."""
import numpy as np
import pytest
import torch
from PIL import Image

import demo
from reid.evaluation.heatmap import activation_maps, last_feature_map, mass_inside_box
from reid.models.heads import build_model
from reid.spec import NetworkSpec


def test_activation_map_is_the_scaled_channel_mean_of_squares():
    fmap = torch.randn(2, 5, 4, 3, generator=torch.Generator().manual_seed(0))
    got = activation_maps(fmap, (4, 3)).numpy()
    for b in range(2):
        energy = np.zeros((4, 3))
        for y in range(4):
            for x in range(3):
                energy[y, x] = sum(float(fmap[b, c, y, x]) ** 2 for c in range(5)) / 5
        assert got[b] == pytest.approx((energy - energy.min()) / (energy.max() - energy.min()), abs=1e-5)
    up = activation_maps(fmap, (16, 12)).numpy()
    assert up.shape == (2, 16, 12) and up.min() == pytest.approx(0) and up.max() == pytest.approx(1)
    for b in range(2):  # upsampling keeps the hottest cell where it was (each cell is 4 x 4 pixels)
        y, x = np.unravel_index(np.argmax(got[b]), got[b].shape)
        yy, xx = np.unravel_index(np.argmax(up[b]), up[b].shape)
        assert (yy // 4, xx // 4) == (y, x)


def test_resnet_map_is_layer4_output():
    net = build_model(NetworkSpec(backbone='resnet18', h=64, w=32), 3, pretrained=False).eval()
    x = torch.randn(2, 3, 64, 32)
    b = net.body
    with torch.no_grad():  # torchvision's stages called by hand
        ref = b.layer4(b.layer3(b.layer2(b.layer1(b.maxpool(b.relu(b.bn1(b.conv1(x))))))))
    assert torch.allclose(last_feature_map(net, x), ref)


BACKBONES = [  # (backbone, input size, feature grid)
    ('resnet18', (128, 64), (4, 2)),
    ('mobilenet_v3_small', (128, 64), (4, 2)),
    ('timm:vit_tiny_patch16_224', (128, 64), (8, 4)),            # ViT: 16 x 16 patches, one class token
    ('timm:vit_small_patch14_reg4_dinov2', (112, 56), (8, 4)),   # DINO(v2): class + 4 register tokens
    ('timm:swin_tiny_patch4_window7_224', (224, 224), (7, 7)),   # Swin: channels-last stage output
]


@pytest.mark.parametrize('backbone,size,grid', BACKBONES, ids=[b for b, _, _ in BACKBONES])
def test_every_backbone_map_lights_up_where_the_image_is_bright(backbone, size, grid):
    """A dim noise image with a bright lower-right quarter: the map has the backbone's grid and holds more mass
    in that quarter than in any other (a transposed or shifted token grid would not)."""
    if backbone.startswith('timm:'):
        pytest.importorskip('timm')
    torch.manual_seed(0)
    net = build_model(NetworkSpec(backbone=backbone, h=size[0], w=size[1]), 3, pretrained=False).eval()
    h, w = size
    x = 0.1 * torch.randn(1, 3, h, w)
    x[:, :, h // 2:, w // 2:] += 4.0
    fmap = last_feature_map(net, x)
    assert tuple(fmap.shape[2:]) == grid
    heat = activation_maps(fmap, size)[0].numpy()
    quarters = [mass_inside_box(heat, (qx, qy, qx + w // 2, qy + h // 2)) for qy in (0, h // 2) for qx in (0, w // 2)]
    assert quarters[3] == max(quarters) and quarters[3] > 0.3, quarters


def test_mass_inside_box_counts_pixels_by_edges():
    heat = np.zeros((10, 6))
    heat[2:5, 1:3] = 1.0
    heat[9, 5] = 2.0
    assert mass_inside_box(heat, (1, 2, 3, 5)) == pytest.approx(6 / 8)
    assert mass_inside_box(heat, (0, 0, 6, 10)) == pytest.approx(1.0)


def test_demo_heatmap_writes_heatmap_png_with_the_run(tiny_prepared, tmp_path, capsys):
    from test_demo import _write_result
    from test_export import write_run

    (tmp_path / 'model' / 'run').mkdir(parents=True)
    write_run(tmp_path / 'model' / 'run', pcb=False)
    _write_result(tmp_path / 'r.mat', tiny_prepared)
    argv = ['--query_index', '2', '--test_dir', str(tiny_prepared), '--result', str(tmp_path / 'r.mat'),
            '--output', str(tmp_path / 'out' / 'show.png'), '--name', 'run', '--model_dir', str(tmp_path / 'model')]
    (tmp_path / 'out').mkdir()
    demo.main(argv + ['--heatmap'])
    assert 'heatmap.png' in capsys.readouterr().out
    with Image.open(tmp_path / 'out' / 'show.png') as a, Image.open(tmp_path / 'out' / 'heatmap.png') as b:
        show, heat = np.asarray(a.convert('RGB'), np.int16), np.asarray(b.convert('RGB'), np.int16)
    assert show.shape == heat.shape and (np.abs(show - heat) > 40).any(axis=2).mean() > 0.05  # laid over
    photo = sorted((tiny_prepared / 'query').rglob('*.jpg'))[0]   # --query_image draws its heatmap.png too
    (tmp_path / 'out' / 'heatmap.png').unlink()
    import scipy.io
    r = scipy.io.loadmat(tmp_path / 'r.mat')
    for key in ('query_f', 'gallery_f'):  # the run's 64-d features, so the photo can be searched
        f = np.random.default_rng(0).standard_normal((r[key].shape[0], 64)).astype(np.float32)
        r[key] = f / np.linalg.norm(f, axis=1, keepdims=True)
    scipy.io.savemat(tmp_path / 'r.mat', {k: v for k, v in r.items() if not k.startswith('__')})
    demo.main(argv + ['--heatmap', '--query_image', str(photo)])
    assert (tmp_path / 'out' / 'heatmap.png').is_file()
    with pytest.raises(SystemExit, match='--name nope'):
        demo.main(argv[:-4] + ['--name', 'nope', '--model_dir', str(tmp_path / 'model'), '--heatmap'])
