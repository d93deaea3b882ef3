"""Activation maps (reid.evaluation.heatmap, demo.py --heatmap): the formula against a loop, the feature map of
every kind of backbone (CNN map, ViT/DINO token grid, Swin stage tokens) located where the input changed."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import demo
from conftest import hand_transform
from reid.evaluation.heatmap import activation_maps, image_heatmaps, last_feature_map, mass_inside_box, overlay
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


# ---- the activation map written out by hand (numpy), from README's definition: the channel mean of the squared
# activations of ResNet's layer4, bilinearly upsampled to the image (pixel centres, edges clamped: torch's
# align_corners=False), min-max scaled per image. Shared by the tutorial and quick-start tests.

def resnet_layer4(body, x):
    """torchvision ResNet's stages called by hand: layer4's output for a normalised batch."""
    with torch.no_grad():
        return body.layer4(body.layer3(body.layer2(body.layer1(body.maxpool(body.relu(body.bn1(body.conv1(x))))))))


def bilinear_weights(n_in, n_out):
    """(n_out, n_in) weights of a half-pixel-centred linear resize: output i samples the input at
    (i + 0.5) * n_in / n_out - 0.5, clamped to [0, n_in - 1], between its two nearest inputs."""
    weights = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1)
        lo = int(np.floor(src))
        hi = min(lo + 1, n_in - 1)
        weights[i, lo] += 1 - (src - lo)
        weights[i, hi] += src - lo
    return weights


def hand_activation_map(fmap, height, width):
    """One [C, h, w] feature map (numpy) -> the [height, width] map in [0, 1] (float64)."""
    fmap = np.asarray(fmap, dtype=np.float64)
    energy = (fmap ** 2).sum(axis=0) / fmap.shape[0]
    up = bilinear_weights(fmap.shape[1], height) @ energy @ bilinear_weights(fmap.shape[2], width).T
    return (up - up.min()) / max(up.max() - up.min(), 1e-12)


def hand_person_box_figures(run_dir, epoch, raw_dir, every=1):
    """{'images', 'mass', 'area', 'ratio'} of a ResNet run over the people (id > 0) of the generator's boxes file
    (query and bounding_box_test, every `every`-th by path), computed here: the image fed as test.py feeds it
    (conftest.hand_transform at the run's opts.yaml h x w), layer4 by hand, the map by hand, the mass in the box
    summed pixel by pixel over the box's rows and columns."""
    import yaml
    from reid.api import load_network
    from reid.data.synthetic import read_person_boxes

    opts = yaml.safe_load((Path(run_dir) / 'opts.yaml').read_text())
    body = load_network(run_dir, epoch)[0].body.eval()
    transform = hand_transform(opts['h'], opts['w'])
    people = sorted((rel, box) for rel, box in read_person_boxes(raw_dir).items()
                    if rel.split('/')[0] in ('query', 'bounding_box_test') and int(Path(rel).name.split('_')[0]) > 0)
    masses, areas = [], []
    people = people[::every]
    for start in range(0, len(people), 32):
        chunk = people[start:start + 32]
        sizes, images = [], []
        for rel, _ in chunk:
            with Image.open(Path(raw_dir) / rel) as img:
                images.append(transform(img))
                sizes.append((img.height, img.width))
        fmaps = resnet_layer4(body, torch.stack(images)).numpy()
        for (_, (x0, y0, x1, y1)), fmap, (height, width) in zip(chunk, fmaps, sizes):
            heat = hand_activation_map(fmap, height, width)
            rows, cols = range(max(y0, 0), min(y1, height)), range(max(x0, 0), min(x1, width))
            masses.append(sum(float(heat[y, cols.start:cols.stop].sum()) for y in rows) / heat.sum())
            areas.append((x1 - x0) * (y1 - y0) / (height * width))
    mass, area = float(np.mean(masses)), float(np.mean(areas))
    return {'images': len(masses), 'mass': mass, 'area': area, 'ratio': mass / area}


def test_bilinear_weights_are_torchs_half_pixel_resize():
    # the reference's resize checked on its own against a hand-counted case: 2 -> 4 samples at -0.25 (clamped
    # to 0), 0.25, 0.75, 1.25 (clamped to 1)
    assert bilinear_weights(2, 4).tolist() == [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]]


def test_image_heatmaps_are_the_hand_computed_maps_at_each_images_own_size(tiny_prepared, tmp_path):
    """image_heatmaps (demo.py --heatmap, the results page): per image, the map rebuilt by hand from layer4 of the
    same weights, at the image's own height x width (one image here is resized to 100 x 45)."""
    from test_export import H, W, write_run
    from reid.api import ReIDRun

    (tmp_path / 'run').mkdir()
    net = write_run(tmp_path / 'run', pcb=False)
    paths = [p for p in sorted((tiny_prepared / 'query').rglob('*.jpg'))[:3]]
    with Image.open(paths[0]) as img:
        img.convert('RGB').resize((45, 100)).save(tmp_path / 'odd.png')
    paths.append(tmp_path / 'odd.png')
    got = image_heatmaps(ReIDRun(tmp_path / 'run', device='cpu', backend='torch'), paths, batch_size=2)
    for path, heat in zip(paths, got):
        with Image.open(path) as img:
            want = hand_activation_map(resnet_layer4(net.body, hand_transform(H, W)(img)[None])[0].numpy(),
                                       img.height, img.width)
        assert heat.shape == want.shape == (img.height, img.width)
        assert np.abs(heat - want).max() < 1e-4
        assert want.std() > 0.1   # a map with structure, not a flat one


def test_person_box_figures_are_the_hand_counted_shares(tiny_prepared, tmp_path):
    """person_box_figures (bench.heatmap_box, README's 1.48x): the mean share of each map's mass inside the
    person's box and the box's share of the image, over every person of the generator's boxes file, equal the
    hand-computed ones (the tiny set written again with boxes=True: the same images as tiny_prepared's)."""
    from test_export import write_run
    from reid.api import ReIDRun
    from reid.data import synthetic
    from reid.evaluation.heatmap import person_box_figures

    synthetic.make_dataset(tmp_path / 'boxes', size='tiny', seed=0, boxes=True)
    (tmp_path / 'run').mkdir()
    write_run(tmp_path / 'run', pcb=False)
    got = person_box_figures(ReIDRun(tmp_path / 'run', device='cpu', backend='torch'), tiny_prepared, tmp_path / 'boxes')
    want = hand_person_box_figures(tmp_path / 'run', 'last', tmp_path / 'boxes')
    assert got['images'] == want['images'] > 50
    assert got['mass'] == pytest.approx(want['mass'], abs=1e-5) and got['area'] == pytest.approx(want['area'], abs=1e-9)


def jet(values):
    """matplotlib's 'jet' written out: red, green, blue piecewise linear through these anchors, read from a table
    of 256 entries (entry i holds the colour at i / 255, a value v takes entry min(floor(256 v), 255))."""
    anchors = {'red': ([0, 0.35, 0.66, 0.89, 1], [0, 0, 1, 1, 0.5]),
               'green': ([0, 0.125, 0.375, 0.64, 0.91, 1], [0, 0, 1, 1, 0, 0]),
               'blue': ([0, 0.11, 0.34, 0.65, 1], [0.5, 1, 1, 0, 0])}
    entry = np.minimum(np.floor(np.asarray(values, np.float64) * 256), 255) / 255
    return np.stack([np.interp(entry, *anchors[c]) for c in ('red', 'green', 'blue')], axis=-1)


@pytest.mark.parametrize('alpha', [0.5, 0.3])
def test_overlay_blends_the_image_with_the_jet_colours(alpha):
    """overlay (heatmap.png's panels, the page's heatmap thumbnails): (1 - alpha) image + alpha jet(map), clipped,
    truncated to uint8; pure blue at 0, dark red at 1."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (12, 7, 3)).astype(np.uint8)
    heat = rng.random((12, 7))
    heat[0, 0], heat[0, 1], heat[0, 2] = 0.0, 1.0, 0.5
    got = overlay(Image.fromarray(pixels), heat, alpha=alpha).astype(int)
    assert jet([0.0, 1.0]).tolist() == [[0, 0, 0.5], [0.5, 0, 0]]
    want = np.clip((1 - alpha) * pixels + alpha * 255 * jet(heat), 0, 255)
    assert np.abs(got - want).max() <= 1   # float32 against float64 across a truncation
    assert (got == np.floor(want)).mean() > 0.95


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
    for picture in ('show.png', 'heatmap.png'):   # both drawn again for the photo
        (tmp_path / 'out' / picture).unlink()
    import scipy.io
    r = scipy.io.loadmat(tmp_path / 'r.mat')
    for key in ('query_f', 'gallery_f'):  # the run's 64-d features, so the photo can be searched
        f = np.random.default_rng(0).standard_normal((r[key].shape[0], 64)).astype(np.float32)
        r[key] = f / np.linalg.norm(f, axis=1, keepdims=True)
    scipy.io.savemat(tmp_path / 'r.mat', {k: v for k, v in r.items() if not k.startswith('__')})
    demo.main(argv + ['--heatmap', '--query_image', str(photo)])
    with Image.open(tmp_path / 'out' / 'show.png') as a, Image.open(tmp_path / 'out' / 'heatmap.png') as b:
        show, heat = np.asarray(a.convert('RGB'), np.int16), np.asarray(b.convert('RGB'), np.int16)
    assert show.shape == heat.shape and (np.abs(show - heat) > 40).any(axis=2).mean() > 0.05  # the photo's, laid over
    with pytest.raises(SystemExit, match='--name nope'):
        demo.main(argv[:-4] + ['--name', 'nope', '--model_dir', str(tmp_path / 'model'), '--heatmap'])
