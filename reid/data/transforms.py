"""The images' transforms: the baseline's training augmentation and evaluation resize, ImageNet normalisation,
and Random Erasing (Zhong et al., AAAI 2020) with the paper's ranges, as `--erasing_p` uses it.
"""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def random_erasing(probability=0.5, area=(0.02, 0.4), min_aspect=0.3, fill=(0.0, 0.0, 0.0)):
    """Return a tensor transform that, with `probability`, fills one random rectangle with `fill`.

    Apply it after Normalize: the default fill 0 is then the ImageNet mean colour, as in the original recipe.
    """
    from torchvision import transforms

    if not 0.0 <= probability <= 1.0:
        raise ValueError(f'--erasing_p {probability}: must be between 0 and 1')
    return transforms.RandomErasing(p=probability, scale=area, ratio=(min_aspect, 1.0 / min_aspect),
                                    value=tuple(fill))


def train_transform(h, w, pad=10, erasing_p=0.0, color_jitter=False):
    """Return the training augmentation of the baseline: bicubic resize, pad + random crop, flip, normalise.

    `color_jitter` adds a mild brightness/contrast/saturation jitter; `erasing_p` > 0 adds Random Erasing.
    """
    # torchvision is imported here, not at the top: it takes seconds, and prepare.py only parses names.
    from torchvision import transforms

    steps = [transforms.Resize((h, w), interpolation=transforms.InterpolationMode.BICUBIC)]
    if pad > 0:
        steps += [transforms.Pad(pad), transforms.RandomCrop((h, w))]
    steps.append(transforms.RandomHorizontalFlip())
    if color_jitter:
        steps.append(transforms.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0))
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
