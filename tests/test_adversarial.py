"""Tests of reid/training/adversarial.py: opposite-direction images stay within the budget and the valid pixel
range, and
turn the feature away from the clean one; the model's mode and weights are untouched."""
import torch
import torch.nn.functional as F

from reid.training.adversarial import opposite_direction_images
from reid.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from conftest import build


def test_opposite_direction_images_respect_the_budget_and_turn_the_feature():
    torch.manual_seed(0)
    net = build({'backbone': 'resnet18', 'scratch': True}, num_classes=4)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    images = (torch.rand(3, 3, 32, 16) - mean) / std
    adv = opposite_direction_images(net, images, rate=4)
    assert net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    pixels_clean, pixels_adv = images * std + mean, adv * std + mean
    assert pixels_adv.min() >= -1e-6 and pixels_adv.max() <= 1 + 1e-6
    # at most `rate` steps of one grey level (the step is 1 / (0.226 * 255) in normalised units)
    assert ((adv - images).abs() <= 4 / (0.226 * 255) + 1e-5).all()
    assert not torch.equal(adv, images)
    net.eval()
    with torch.no_grad():
        clean = F.normalize(net(images, return_feature=True), dim=1)
        moved = F.normalize(net(adv, return_feature=True), dim=1)
        # the same change per pixel with random signs: the U-turn must turn the feature further than chance does
        signs = torch.randint(0, 2, adv.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
        noise = F.normalize(net(images + signs * (adv - images).abs(), return_feature=True), dim=1)
    turned, by_chance = (clean * moved).sum(1), (clean * noise).sum(1)
    assert (turned < 0.999).all() and (1 - turned > 2 * (1 - by_chance)).all(), (turned, by_chance)


def test_the_default_budget_is_the_originals_16_grey_levels():
    """--adv crafts with ODFA's default rate 16 (20 sign steps): some pixels move by more than 8 grey levels, none
    by more than 16."""
    torch.manual_seed(1)
    net = build({'backbone': 'resnet18', 'scratch': True}, num_classes=4)
    images = (torch.rand(2, 3, 32, 16) - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / \
        torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    levels = ((opposite_direction_images(net, images) - images).abs() * (0.226 * 255)).amax()
    assert 8 + 0.5 < levels <= 16 + 1e-3


def test_the_attack_takes_kurakins_number_of_steps():
    """The original's iteration count (Kurakin et al.): min(rate + 4, 1.25 * rate) sign steps, rounded."""
    from reid.training.adversarial import odfa_steps
    assert [odfa_steps(rate) for rate in (2, 8, 16, 40)] == [2, 10, 20, 44]
