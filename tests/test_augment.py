"""Tests of reid/data/augment.py against reid.data.transforms.train_transform's torchvision pipeline: the cache
holds exactly the resized
pixels, deterministic parts are equal, random parts (crop offsets, flips, erasing, jitter) have the same
distribution (sample statistics within a few standard errors)."""
import math
import os

import numpy as np
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import functional as F

from reid.data import augment
from reid.data.images import ReIDImageFolder
from reid.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from reid.training import recipe, trainer
from reid.runtime import choose_runtime


def write_images(folder, n, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        path = folder / f'{i:04d}_c1s1_000000_00.jpg'
        Image.fromarray(rng.integers(0, 256, (40 + i, 20 + i, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def reference_tensor(path, h, w):
    """ToTensor + Normalize after the torchvision Resize of reid.data.transforms.train_transform."""
    with Image.open(path) as img:
        img = F.resize(img.convert('RGB'), [h, w], interpolation=transforms.InterpolationMode.BICUBIC)
    return F.normalize(F.to_tensor(img), IMAGENET_MEAN, IMAGENET_STD)


def test_cache_holds_the_resized_pixels_and_follows_file_changes(tmp_path):
    paths = write_images(tmp_path / 'raw', 5)
    cache = augment.image_cache(paths, 32, 16, tmp_path / 'cache', name='train', progress=False)
    assert cache.dtype == np.uint8 and cache.shape == (5, 32, 16, 3)
    for i, path in enumerate(paths):
        np.testing.assert_array_equal(cache[i], augment.resized_pixels(path, 32, 16))
        want = np.asarray(transforms.Resize((32, 16), transforms.InterpolationMode.BICUBIC)(
            Image.open(path).convert('RGB')))
        np.testing.assert_array_equal(cache[i], want)
    files = sorted(p.name for p in (tmp_path / 'cache').iterdir())
    assert len(files) == 1 and files[0].startswith('train_32x16_')
    assert sorted(os.listdir(tmp_path / 'raw')) == sorted(os.path.basename(p) for p in paths)  # input untouched
    augment.image_cache(paths, 32, 16, tmp_path / 'cache', name='train', progress=False)
    assert len(list((tmp_path / 'cache').iterdir())) == 1  # reused
    os.utime(paths[2], ns=(1, 1))
    augment.image_cache(paths, 32, 16, tmp_path / 'cache', name='train', progress=False)
    assert len(list((tmp_path / 'cache').iterdir())) == 2  # a changed image: a new key


def test_no_random_part_equals_the_per_image_transform_up_to_a_flip(tmp_path):
    paths = write_images(tmp_path / 'raw', 6)
    cache = augment.image_cache(paths, 32, 16, tmp_path / 'cache', progress=False)
    out = augment.augment_batch(torch.from_numpy(np.array(cache)), torch.Generator().manual_seed(0), pad=0)
    for i, path in enumerate(paths):
        want = reference_tensor(path, 32, 16)
        assert torch.allclose(out[i], want, atol=1e-6, rtol=0) or torch.allclose(out[i], want.flip(-1), atol=1e-6,
                                                                                 rtol=0)


def test_crop_at_equals_torchvision_pad_and_crop():
    img = torch.rand(2, 3, 12, 8)
    padded = torch.nn.functional.pad(img, (3, 3, 3, 3))
    top, left = torch.tensor([0, 5]), torch.tensor([6, 2])
    got = augment.crop_at(padded, top, left, 12, 8)
    for b in range(2):
        want = F.crop(F.pad(img[b], [3]), int(top[b]), int(left[b]), 12, 8)
        torch.testing.assert_close(got[b], want, atol=0, rtol=0)


def test_crop_offsets_and_flips_are_uniform():
    n, pad = 6000, 2
    # one bright pixel at (0, 0): after the crop it lies at (pad - top, pad - left), flipped: mirrored column
    img = torch.zeros(n, 3, 8, 6)
    img[:, :, 0, 0] = 1
    out = augment.random_flip(augment.pad_crop(img, pad, torch.Generator().manual_seed(1)),
                              torch.Generator().manual_seed(2))
    b, _, row, col = (out[:, 0] == 1).unsqueeze(1).nonzero(as_tuple=True)
    # the pixel survives a crop with top <= pad and left <= pad (9 of 25 offsets): 9/25 of the images
    seen = len(b) / n
    assert abs(seen - 9 / 25) < 4 * np.sqrt(9 / 25 * 16 / 25 / n)
    counts = np.bincount(row.numpy(), minlength=pad + 1)[:pad + 1]
    expected = len(b) / (pad + 1)
    assert np.all(np.abs(counts - expected) < 4 * np.sqrt(expected))
    mirrored = (col >= 6 - pad - 1).float().mean()  # flipped copies land in the last columns
    assert abs(float(mirrored) - 0.5) < 4 * np.sqrt(0.25 / len(b))


def originals_erased_box(rng, height, width, p=0.5, sl=0.02, sh=0.4, r1=0.3):
    """The original's random_erasing.py RandomErasing, drawn with Python's random as there: (h, w) of the
    rectangle it erases, or None."""
    if rng.uniform(0, 1) > p:
        return None
    for _ in range(100):
        target = rng.uniform(sl, sh) * height * width
        aspect = rng.uniform(r1, 1 / r1)
        h, w = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if w < width and h < height:
            return h, w
    return None


def erased_boxes(images):
    """(h, w) of the zero rectangle of each image of a batch (None where nothing was erased)."""
    boxes = []
    for zeros in (images == 0).all(1):
        rows, cols = zeros.any(1).nonzero(), zeros.any(0).nonzero()
        boxes.append(None if len(rows) == 0 else (int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)))
    return boxes


def box_stats(boxes):
    """(share erased, mean area share, share of rectangles taller than wide) at 32 x 16."""
    done = [b for b in boxes if b is not None]
    return (len(done) / len(boxes), float(np.mean([h * w / 512 for h, w in done])),
            float(np.mean([h > w for h, w in done])))


def test_random_erasing_follows_the_originals_in_distribution_on_both_paths():
    """The original draws the aspect ratio uniformly in [0.3, 1/0.3] (not log-uniformly, as torchvision): about
    0.8 of its rectangles are taller than wide. The cached batches and the per-image transform draw the same
    (h, w) distribution as the original's own algorithm (written above from its definition)."""
    import random
    from reid.data.transforms import random_erasing
    n, p = 3000, 0.5
    rng = random.Random(0)
    want = box_stats([originals_erased_box(rng, 32, 16, p) for _ in range(n)])
    assert want[2] > 0.75
    ones = torch.ones(n, 3, 32, 16)
    cached = box_stats(erased_boxes(augment.random_erasing(ones, torch.Generator().manual_seed(3), p)))
    torch.manual_seed(4)
    erase = random_erasing(p)
    per_image = box_stats(erased_boxes(torch.stack([erase(img.clone()) for img in ones])))
    for got in (cached, per_image):
        assert abs(got[0] - want[0]) < 4 * np.sqrt(2 * p * (1 - p) / n)
        assert abs(got[1] - want[1]) < 0.02   # area shares uniform in [0.02, 0.4]: sd 0.11 / sqrt(1500) each
        assert abs(got[2] - want[2]) < 4 * np.sqrt(2 * 0.2 * 0.8 / (n * p))
    # with probability 1 the original's 100 tries find a rectangle for every image (one try misses about 6%)
    always = torch.ones(1000, 3, 32, 16)
    assert all(b is not None for b in erased_boxes(augment.random_erasing(always, torch.Generator().manual_seed(5), 1.0)))
    assert all(b is not None for b in erased_boxes(torch.stack([random_erasing(1.0)(img) for img in always])))


def test_the_original_random_erasing_class_fills_its_mean_in_place():
    from random_erasing import RandomErasing
    torch.manual_seed(1)
    img = torch.full((3, 64, 32), 7.0)
    out = RandomErasing(probability=1.0)(img)
    assert out is img
    erased = (img != 7.0).all(0)
    assert erased.any() and torch.allclose(img[:, erased].mean(1), torch.tensor([0.4914, 0.4822, 0.4465]))
    assert torch.equal(RandomErasing(probability=0.0)(torch.ones(3, 8, 4)), torch.ones(3, 8, 4))


def test_color_jitter_matches_torchvision_in_distribution():
    rng = np.random.default_rng(5)
    pixels = rng.integers(30, 220, (16, 8, 3), dtype=np.uint8)
    n = 1500
    batch = torch.from_numpy(pixels).permute(2, 0, 1).float().div(255).expand(n, 3, 16, 8).contiguous()
    got = augment.color_jitter(batch, torch.Generator().manual_seed(6))
    torch.manual_seed(7)
    jitter = transforms.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0)
    want = torch.stack([F.to_tensor(jitter(Image.fromarray(pixels))) for _ in range(n)])
    # per-image mean brightness and spread: same mean and sd across draws (uint8 rounding: 1/255 slack)
    for stat in (lambda x: x.mean((1, 2, 3)), lambda x: x.std((1, 2, 3))):
        g, w = stat(got), stat(want)
        assert abs(float(g.mean() - w.mean())) < 4 * float(w.std()) / np.sqrt(n) + 1 / 255
        assert abs(float(g.std() / w.std()) - 1) < 0.15


def test_cached_batches_follow_the_sampler_and_labels(tmp_path):
    write_images(tmp_path / 'split' / '0001', 3)
    write_images(tmp_path / 'split' / '0002', 2, seed=1)
    data = ReIDImageFolder(tmp_path / 'split')
    cache = augment.image_cache([p for p, _ in data.samples], 16, 8, tmp_path / 'cache', progress=False)
    batches = augment.CachedBatches(cache, data.targets, [[4, 0], [2, 3]], 'cpu', seed=0, options=dict(pad=0))
    got = list(batches)
    assert len(batches) == 2 and [b[1].tolist() for b in got] == [[1, 0], [0, 1]]
    assert got[0][0].shape == (2, 3, 16, 8)
    want = reference_tensor(data.samples[4][0], 16, 8)
    assert torch.allclose(got[0][0][0], want, atol=1e-6) or torch.allclose(got[0][0][0], want.flip(-1), atol=1e-6)


def test_train_with_cache_writes_only_under_cache_dir_and_keeps_the_sample_order(tiny_prepared, tmp_path):
    before = sorted(p.name for p in tiny_prepared.iterdir())
    opts = recipe.build_parser().parse_args(
        ['--data_dir', str(tiny_prepared), '--model_dir', str(tmp_path / 'model'), '--backbone', 'resnet18',
         '--scratch', '--h', '32', '--w', '16', '--batchsize', '16', '--num_workers', '0', '--lr', '0.01',
         '--name', 'cached', '--total_epoch', '1', '--cache', '--cache_dir', str(tmp_path / 'cache'),
         '--erasing_p', '0.5', '--color_jitter'])
    history = trainer.run_training(opts)
    assert len(history['train_loss']) == 1 and np.isfinite(history['train_loss'][0])
    assert sorted(p.name for p in tiny_prepared.iterdir()) == before  # nothing written beside the user's data
    assert len(list((tmp_path / 'cache').glob('train_32x16_*.npy'))) == 1
    # the cached path visits the samples in the DataLoader's order, batch for batch
    resolved = recipe.resolved_opts(opts)
    data, _ = trainer.datasets(resolved)
    pixels = trainer.cached_pixels(data, resolved)
    steps = trainer.epoch_steps(data, resolved)
    runtime, _ = choose_runtime(resolved, 'train')
    cached = trainer.training_batches(data, resolved, runtime, 3, steps, pixels)
    plain = trainer.training_batches(data, resolved, runtime, 3, steps)
    assert [b[1].tolist() for b in cached] == [b[1].tolist() for b in plain]


def test_the_cached_path_applies_the_runs_erasing_jitter_and_pad_crop(tiny_prepared, tmp_path):
    """What --erasing_p, --color_jitter and the pad-crop ask for reaches the --cache batches: each image checked
    against the cached pixels it came from (found by brute force; flipped or not). Without them every image is
    exactly one source; erasing leaves a source with one rectangle of the normalised value 0; jitter changes every
    image; pad-crop shifts some."""
    def cached_batches(*flags):
        opts = recipe.resolved_opts(recipe.build_parser().parse_args(
            ['--data_dir', str(tiny_prepared), '--backbone', 'resnet18', '--scratch', '--h', '32', '--w', '16',
             '--batchsize', '16', '--num_workers', '0', '--cache', '--cache_dir', str(tmp_path / 'cache'), *flags]))
        data, _ = trainer.datasets(opts)
        pixels = trainer.cached_pixels(data, opts)
        runtime, _ = choose_runtime(opts, 'train')
        batches = trainer.training_batches(data, opts, runtime, 0, trainer.epoch_steps(data, opts), pixels)
        sources = augment.normalise(torch.from_numpy(np.asarray(pixels)).permute(0, 3, 1, 2).float() / 255)
        return torch.cat([images for images, _ in batches]), torch.cat([sources, sources.flip(-1)])

    def differing(images, sources):   # per image: pixels (any channel) that differ from its closest source
        diff = ((images[:, None] - sources[None]).abs() > 1e-5).any(2).flatten(2).sum(2)
        return diff.min(1)

    images, sources = cached_batches('--pad', '0')
    assert (differing(images, sources).values == 0).all()
    images, sources = cached_batches('--pad', '0', '--erasing_p', '1')
    counts, closest = differing(images, sources)
    assert (counts > 0).all()
    changed = ((images - sources[closest]).abs() > 1e-5).any(1)
    assert (images.permute(0, 2, 3, 1)[changed] == 0).all()   # every changed pixel is an erased one
    images, sources = cached_batches('--pad', '0', '--color_jitter')
    assert (differing(images, sources).values > 0).all()
    images, sources = cached_batches('--pad', '2')
    assert (differing(images, sources).values > 0).sum() > len(images) // 2


def test_the_per_image_path_applies_erasing_jitter_flips_and_pad_crop(tmp_path):
    """train_transform as train.py builds it, 40 draws of one image, each checked against the resized image and
    its mirror: without random parts but the flip, every draw is one of them, about half of them mirrored;
    --erasing_p 1 leaves one of them with a rectangle of the normalised value 0; jitter and pad-crop change
    every draw (pad-crop: nearly every)."""
    from reid.data.transforms import train_transform
    path = write_images(tmp_path / 'raw', 1)[0]
    want = reference_tensor(path, 32, 16)

    def draws(**kwargs):
        torch.manual_seed(0)
        transform = train_transform(32, 16, **kwargs)
        with Image.open(path) as img:
            return torch.stack([transform(img.convert('RGB')) for _ in range(40)])

    def changed(images):   # per draw: pixels that differ from the image and from its mirror
        return torch.stack([((images - ref).abs() > 1e-5).any(1) for ref in (want, want.flip(-1))])
    plain = changed(draws(pad=0)).flatten(2).sum(2)
    assert ((plain == 0).sum(0) == 1).all() and 8 <= int((plain[1] == 0).sum()) <= 32
    erased = changed(draws(pad=0, erasing_p=1.0))
    closest = erased.flatten(2).sum(2).argmin(0)
    mask = erased[closest, torch.arange(40)]
    images = draws(pad=0, erasing_p=1.0)
    assert (mask.flatten(1).sum(1) > 0).all() and (images.permute(0, 2, 3, 1)[mask] == 0).all()
    assert (changed(draws(pad=0, color_jitter=True)).flatten(2).sum(2).min(0).values > 0).all()
    assert (changed(draws(pad=2)).flatten(2).sum(2).min(0).values > 0).sum() >= 30


def test_color_jitter_comes_before_the_resize_as_the_original():
    # The original: transform_train_list = [ColorJitter(0.1, 0.1, 0.1, 0)] + [Resize(...), Pad, RandomCrop, ...]
    from reid.data.transforms import train_transform
    steps = [type(s).__name__ for s in train_transform(32, 16, pad=2, color_jitter=True).transforms]
    assert steps[:2] == ['ColorJitter', 'Resize']
