"""Opposite-direction feature attack (ODFA, "U-turn", Zheng et al., IJCV 2022): images whose retrieval feature
points the other way, as the original's --adv adversarial training crafts them.
"""
import torch
import torch.nn.functional as F

from reid.data.transforms import IMAGENET_MEAN, IMAGENET_STD


def odfa_steps(rate):
    """The number of sign-gradient steps of the original's attack at `rate` grey levels: Kurakin et al.'s
    min(rate + 4, 1.25 * rate), rounded."""
    return round(min(1.25 * rate, rate + 4))


def opposite_direction_images(model, images, rate=16):
    """Return `images` (ImageNet-normalised) perturbed by at most `rate` grey levels per pixel so that the
    model's L2-normalised retrieval feature moves towards minus its clean value (iterative sign steps of one
    grey level, as the original). The model runs in eval mode and gets no gradient; its mode is restored."""
    was_training = model.training
    model.eval()
    try:
        mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
        low, high = (0 - mean) / std, (1 - mean) / std
        step = 1.0 / (0.226 * 255.0)  # one grey level in normalised units (the original's alpha)
        clean = images.detach()
        with torch.no_grad():
            target = -F.normalize(model(clean, return_feature=True).float().flatten(1), dim=1)
        diff = torch.zeros_like(clean)
        adv = clean.clone()
        for _ in range(odfa_steps(rate)):
            adv.requires_grad_(True)
            feature = F.normalize(model(adv, return_feature=True).float().flatten(1), dim=1)
            grad, = torch.autograd.grad(F.mse_loss(feature, target), adv)
            diff = (diff + grad.sign()).clamp(-rate, rate)
            adv = torch.max(torch.min(clean - diff * step, high), low).detach()
        return adv
    finally:
        model.train(was_training)
