"""Decode-once image cache (uint8, memory-mapped) and whole-batch augmentation as tensors on the training device.

The batch augmentation draws from the same distribution as reid.data.transforms.train_transform's per-image
torchvision pipeline
(pad + random crop, flip, colour jitter, normalise, random erasing); tests/test_augment.py compares the two.
"""
import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from reid.data.transforms import (ERASING_AREA, ERASING_ATTEMPTS, ERASING_MIN_ASPECT, IMAGENET_MEAN, IMAGENET_STD,
                                  JITTER, ORIGINAL_PAD)

CACHE_FOLDER = 'cache'  # beside the prepared splits, e.g. <data_dir>/cache/train_all_256x128_<key>.npy


def cache_key(paths, h, w):
    """Return a short hex key of the image list: every path with its size and mtime, and the cached size."""
    digest = hashlib.sha1(f'{h}x{w}'.encode())
    for path in paths:
        st = os.stat(path)
        digest.update(f'\0{path}\0{st.st_size}\0{st.st_mtime_ns}'.encode())
    return digest.hexdigest()[:16]


def resized_pixels(path, h, w):
    """Return the (h, w, 3) uint8 pixels train_transform's Resize gives (PIL bicubic): the cached form."""
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    with Image.open(path) as img:
        img = F.resize(img.convert('RGB'), [h, w], interpolation=InterpolationMode.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


def image_cache(paths, h, w, cache_dir, name='images', progress=True):
    """Return a read-only memory-mapped (N, h, w, 3) uint8 array of `paths` resized to (h, w), built once.

    The file `<cache_dir>/<name>_<h>x<w>_<key>.npy` is keyed by every path, size and mtime, so a changed image
    gives a new file; it is written to a temporary name and renamed, so an interrupted build leaves no cache.
    """
    from tqdm import tqdm

    cache_dir = Path(cache_dir)
    target = cache_dir / f'{name}_{h}x{w}_{cache_key(paths, h, w)}.npy'
    if not target.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f'.{target.name}.{os.getpid()}.tmp')
        try:
            out = np.lib.format.open_memmap(tmp, mode='w+', dtype=np.uint8, shape=(len(paths), h, w, 3))
            for i, path in enumerate(tqdm(paths, desc=f'caching {name}', disable=not progress, leave=False)):
                out[i] = resized_pixels(path, h, w)
            out.flush()
            del out
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
    return np.load(target, mmap_mode='r')


def _uniform(n, low, high, generator, device):
    return torch.rand(n, generator=generator, device=device) * (high - low) + low


def pad_crop(images, pad, generator):
    """Zero-pad (B, C, H, W) by `pad` and crop H x W at a uniform offset per image (Pad + RandomCrop)."""
    if pad <= 0:
        return images
    b, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    top = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=images.device)
    left = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=images.device)
    return crop_at(padded, top, left, h, w)


def crop_at(padded, top, left, h, w):
    """Return the (h, w) windows of each image of `padded` at (top[b], left[b])."""
    rows = (top[:, None] + torch.arange(h, device=padded.device))[:, None, :, None]
    cols = (left[:, None] + torch.arange(w, device=padded.device))[:, None, None, :]
    batch = torch.arange(len(padded), device=padded.device)[:, None, None, None]
    channel = torch.arange(padded.shape[1], device=padded.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_flip(images, generator, p=0.5):
    flip = torch.rand(len(images), generator=generator, device=images.device) < p
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def _grayscale(images):
    r, g, b = images.unbind(1)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def color_jitter(images, generator, brightness=JITTER, contrast=JITTER, saturation=JITTER):
    """torchvision ColorJitter (hue 0) on [0, 1] images: factors uniform in [1 - x, 1 + x], a random order of
    the three adjustments per image, each a blend clamped to [0, 1]."""
    b, device = len(images), images.device
    factors = [_uniform(b, 1 - x, 1 + x, generator, device)[:, None, None, None]
               for x in (brightness, contrast, saturation)]
    order = torch.argsort(torch.rand(b, 3, generator=generator, device=device), dim=1)  # a uniform permutation

    def adjust(x, which):
        f = factors[which]
        if which == 0:
            return (x * f).clamp_(0, 1)
        if which == 1:
            mean = _grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
            return (f * x + (1 - f) * mean).clamp_(0, 1)
        return (f * x + (1 - f) * _grayscale(x)).clamp_(0, 1)

    for step in range(3):
        choice = order[:, step][:, None, None, None]
        images = torch.where(choice == 0, adjust(images, 0),
                             torch.where(choice == 1, adjust(images, 1), adjust(images, 2)))
    return images


def random_erasing(images, generator, p, area=ERASING_AREA, min_aspect=ERASING_MIN_ASPECT, value=0.0,
                   attempts=ERASING_ATTEMPTS):
    """The original's RandomErasing per image, vectorised: with probability p, up to `attempts` draws of an area
    fraction and an aspect ratio uniform in [min_aspect, 1 / min_aspect]; the first rectangle that fits is
    filled with `value`."""
    b, _, h, w = images.shape
    device = images.device
    erase = torch.rand(b, generator=generator, device=device) < p
    target = h * w * _uniform(b * attempts, area[0], area[1], generator, device).view(b, attempts)
    ratio = _uniform(b * attempts, min_aspect, 1 / min_aspect, generator, device).view(b, attempts)
    eh = torch.round(torch.sqrt(target * ratio)).long()
    ew = torch.round(torch.sqrt(target / ratio)).long()
    fits = (eh < h) & (ew < w)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.zeros(b, dtype=torch.long, device=device))
    erase &= fits.any(1)
    eh, ew = eh.gather(1, first[:, None]).squeeze(1), ew.gather(1, first[:, None]).squeeze(1)
    top = (torch.rand(b, generator=generator, device=device) * (h - eh + 1)).long()
    left = (torch.rand(b, generator=generator, device=device) * (w - ew + 1)).long()
    rows = torch.arange(h, device=device)[None, :, None]
    cols = torch.arange(w, device=device)[None, None, :]
    inside = ((rows >= top[:, None, None]) & (rows < (top + eh)[:, None, None]) &
              (cols >= left[:, None, None]) & (cols < (left + ew)[:, None, None]) & erase[:, None, None])
    return images.masked_fill(inside[:, None], value)


def normalise(images):
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def augment_batch(pixels, generator, pad=ORIGINAL_PAD, erasing_p=0.0, jitter=False):
    """Return the training tensors of a (B, H, W, 3) uint8 batch: pad-crop, flip, [jitter], normalise, [erase]."""
    images = pixels.permute(0, 3, 1, 2).float().div_(255)
    images = random_flip(pad_crop(images, pad, generator), generator)
    if jitter:
        images = color_jitter(images, generator)
    images = normalise(images)
    if erasing_p > 0:
        images = random_erasing(images, generator, erasing_p)
    return images


class CachedBatches:
    """Iterable of (images, labels) training batches from a uint8 cache, augmented on `device` as whole batches.

    `batch_sampler`: any iterable of index lists (e.g. torch's BatchSampler over a RandomSampler, or a P x K
    sampler); `seed` seeds the augmentation; `options`: augment_batch's pad, erasing_p and jitter (default: the
    original's pad, nothing else). A drop-in for the DataLoader reid.training.loop.train_one_epoch iterates.
    """

    def __init__(self, pixels, labels, batch_sampler, device, seed, options=None):
        self.pixels, self.labels = pixels, torch.as_tensor(labels)
        self.batch_sampler, self.device, self.seed = batch_sampler, torch.device(device), seed
        self.options = {**dict(pad=ORIGINAL_PAD, erasing_p=0.0, jitter=False), **(options or {})}

    def __len__(self):
        return len(self.batch_sampler)

    def __iter__(self):
        generator = torch.Generator(device=self.device).manual_seed(self.seed)
        pin = self.device.type == 'cuda'
        for indices in self.batch_sampler:
            indices = list(indices)
            # sorted reads are sequential on the memory map; the batch order is restored afterwards
            order = np.argsort(indices)
            batch = np.empty((len(indices),) + self.pixels.shape[1:], np.uint8)
            batch[order] = self.pixels[np.asarray(indices)[order]]
            pixels = torch.from_numpy(batch)
            if pin:
                pixels = pixels.pin_memory()
            pixels = pixels.to(self.device, non_blocking=True)
            yield augment_batch(pixels, generator, **self.options), self.labels[indices]
