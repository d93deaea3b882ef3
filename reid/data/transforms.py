"""Random Erasing (Zhong et al., AAAI 2020) as used by the baseline's `--erasing_p`.

Wraps torchvision's RandomErasing with the paper's ranges: area 2%-40% of the image, aspect ratio 0.3-3.33.
"""
from torchvision import transforms


def random_erasing(probability=0.5, area=(0.02, 0.4), min_aspect=0.3, fill=(0.0, 0.0, 0.0)):
    """Return a tensor transform that, with `probability`, fills one random rectangle with `fill`.

    Apply it after Normalize: the default fill 0 is then the ImageNet mean colour, as in the original recipe.
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f'--erasing_p {probability}: must be between 0 and 1')
    return transforms.RandomErasing(p=probability, scale=area, ratio=(min_aspect, 1.0 / min_aspect),
                                    value=tuple(fill))
