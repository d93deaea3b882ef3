"""The images' transforms: the baseline's training augmentation and evaluation resize, ImageNet normalisation,
and the original's Random Erasing (Zhong et al., AAAI 2020), as `--erasing_p` uses it.
"""
import math

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# The original's RandomErasing: its default fill (CIFAR's mean, in normalised units; its train.py passes 0) and
# its 100 tries for a rectangle that fits.
ORIGINAL_ERASING_MEAN = (0.4914, 0.4822, 0.4465)
ERASING_ATTEMPTS = 100
# The rest of the augmentation's constants, the one place both the per-image and the cached (--cache) path read:
ERASING_AREA = (0.02, 0.4)     # share of the image a rectangle covers (the original's sl, sh)
ERASING_MIN_ASPECT = 0.3       # height / width uniform in [0.3, 1 / 0.3] (the original's r1)
JITTER = 0.1                   # --color_jitter's brightness, contrast and saturation (hue 0)
ORIGINAL_PAD = 10              # pixels of padding before the random crop at width 128 (the original's)


class RandomErasing:
    """The original's Random Erasing of a [C, H, W] tensor, in place: with `probability`, up to 100 draws of an
    area share uniform in [sl, sh] and an aspect ratio (height / width) uniform in [r1, 1 / r1]; the first
    rectangle strictly smaller than the image is filled with `mean` per channel. Uniform ratios make most
    rectangles taller than wide (about 0.82; torchvision's log-uniform ratio about 0.58). Draws come from torch's
    generator, so seeded runs repeat and resume exactly."""

    def __init__(self, probability=0.5, sl=ERASING_AREA[0], sh=ERASING_AREA[1], r1=ERASING_MIN_ASPECT,
                 mean=ORIGINAL_ERASING_MEAN):
        self.probability, self.sl, self.sh, self.r1, self.mean = probability, sl, sh, r1, mean

    def __call__(self, img):
        if torch.rand(()).item() > self.probability:
            return img
        channels, height, width = img.shape
        for _ in range(ERASING_ATTEMPTS):
            area = (self.sl + (self.sh - self.sl) * torch.rand(()).item()) * height * width
            aspect = self.r1 + (1 / self.r1 - self.r1) * torch.rand(()).item()
            h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if h < height and w < width:
                top = int(torch.randint(0, height - h + 1, ()))
                left = int(torch.randint(0, width - w + 1, ()))
                fill = torch.tensor(self.mean[:channels], dtype=img.dtype).view(-1, 1, 1)
                img[:, top:top + h, left:left + w] = fill
                return img
        return img


def random_erasing(probability=0.5, fill=(0.0, 0.0, 0.0)):
    """Return the original's RandomErasing for --erasing_p; ValueError naming the flag outside [0, 1].

    Apply it after Normalize: the fill 0 (what the original's train.py passes) is then the ImageNet mean colour.
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f'--erasing_p {probability}: must be between 0 and 1')
    return RandomErasing(probability, mean=tuple(fill))


def train_transform(h, w, pad=ORIGINAL_PAD, erasing_p=0.0, color_jitter=False):
    """Return the training augmentation of the baseline: bicubic resize, pad + random crop, flip, normalise.

    `color_jitter` adds a mild brightness/contrast/saturation jitter before the resize (as the original);
    `erasing_p` > 0 adds the original's Random Erasing.
    """
    # torchvision is imported here, not at the top: it takes seconds, and prepare.py only parses names.
    from torchvision import transforms

    # the original jitters the image as it comes, before the resize
    jitter = transforms.ColorJitter(brightness=JITTER, contrast=JITTER, saturation=JITTER, hue=0)
    steps = [jitter] if color_jitter else []
    steps.append(transforms.Resize((h, w), interpolation=transforms.InterpolationMode.BICUBIC))
    if pad > 0:
        steps += [transforms.Pad(pad), transforms.RandomCrop((h, w))]
    steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if erasing_p > 0:
        steps.append(random_erasing(erasing_p))
    return transforms.Compose(steps)


def eval_transform(h, w):
    """Return the evaluation transform: bicubic resize to (h, w), tensor, ImageNet normalisation."""
    from torchvision import transforms

    return transforms.Compose([
        transforms.Resize((h, w), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
