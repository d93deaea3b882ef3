"""Tests of reid/training/terms.py: each loss term's value and weight against a hand computation, when it sits a
step out, the centres' unweighted step, and that the loop's loss is the weighted sum of exactly the terms given."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reid.training import losses, terms
from reid.training.recipe import parse_options, resolved_opts

LABELS = torch.tensor([0, 0, 1, 1, 2, 2])


def batch(model=None, seed=0, classes=3):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(LABELS), classes, generator=g, dtype=torch.float64)
    feature = torch.randn(len(LABELS), 8, generator=g, dtype=torch.float64)
    images = torch.randn(len(LABELS), 3, 16, 8, generator=g)
    return terms.Batch(model, images, LABELS, 0, logits, feature)


def hand_cross_entropy(logits, labels, eps=0.0):
    """-(1 - eps) log p_y - eps / K sum_k log p_k, mean over the batch."""
    total = 0.0
    for row, y in zip(logits.tolist(), labels.tolist()):
        log_z = math.log(sum(math.exp(v) for v in row))
        log_p = [v - log_z for v in row]
        total += -(1 - eps) * log_p[y] - eps / len(row) * sum(log_p)
    return total / len(labels)


def test_softmax_term_is_the_label_smoothed_cross_entropy_at_weight_one():
    b = batch()
    term = terms.SoftmaxTerm(label_smoothing=0.1)
    assert term.weight == 1.0 and not term.needs_feature
    assert float(term.value(b)) == pytest.approx(hand_cross_entropy(b.logits, LABELS, 0.1), rel=1e-5)
    pcb = terms.Batch(None, None, LABELS, 0, torch.stack([b.logits, 2 * b.logits], dim=1))  # [B, parts, K]
    expected = hand_cross_entropy(b.logits, LABELS) + hand_cross_entropy(2 * b.logits, LABELS)
    assert float(terms.SoftmaxTerm().value(pcb)) == pytest.approx(expected, rel=1e-5)


def test_metric_term_reads_the_feature_with_the_losses_own_weight():
    b = batch()
    triplet = losses.TripletLoss(0.3, 'batch_hard', 0.1)
    term = terms.MetricTerm('triplet', triplet)
    assert term.weight == 1.0 and term.needs_feature
    assert float(term.value(b)) == pytest.approx(float(triplet(b.feature.float(), LABELS)))
    center = losses.build_loss('center', {}, 3, 8)
    assert terms.MetricTerm('center', center).weight == 0.0005


def test_the_centres_step_on_the_unweighted_gradient():
    center = losses.build_loss('center', {}, 3, 8)
    term = terms.MetricTerm('center', center)
    b = batch()
    (term.weight * term.value(b)).backward()
    weighted = center.centers.grad.clone()
    term.after_backward()
    torch.testing.assert_close(center.centers.grad, weighted / 0.0005)
    other = losses.build_loss('triplet', {}, 3, 8)
    other_term = terms.MetricTerm('triplet', other)
    other_term.after_backward()   # a loss without its own lr: nothing to do (and no parameters)


class Probe(nn.Module):
    """A network whose logits are a fixed linear map of the images, for the adversarial and DG terms."""

    def __init__(self, classes=3):
        super().__init__()
        self.fc = nn.Linear(3 * 16 * 8, classes)
        self.calls = 0

    def forward(self, x, return_feature=False):
        self.calls += 1
        out = self.fc(x.flatten(1))
        return out if not return_feature else out * 1.0


def test_adversarial_term_sits_out_all_but_every_aiter_th_step(monkeypatch):
    crafted = []

    def fake_odfa(model, images):
        crafted.append(images)
        return images + 1.0
    monkeypatch.setattr(terms, 'opposite_direction_images', fake_odfa)
    model = Probe()
    term = terms.AdversarialTerm(weight=0.2, every=3, label_smoothing=0.0)
    values = []
    for step in range(7):
        b = batch(model)
        b.step = step
        values.append(term.value(b))
    assert [v is not None for v in values] == [True, False, False, True, False, False, True]
    b = batch(model)
    expected = hand_cross_entropy(model(b.images + 1.0).detach().double(), LABELS)
    assert float(term.value(b)) == pytest.approx(expected, rel=1e-5) and term.weight == 0.2
    assert len(crafted) == 4


def test_consistency_term_is_the_symmetric_kl_between_student_and_teacher_views():
    torch.manual_seed(0)
    student, teacher = Probe(), Probe()
    g = torch.Generator().manual_seed(3)
    view1, view2 = torch.randn(4, 3, 16, 8, generator=g), torch.randn(4, 3, 16, 8, generator=g)
    term = terms.ConsistencyTerm(iter([(view1, view2, None)]), teacher)
    assert term.weight == 0.1
    b = batch(student)
    got = float(term.value(b))
    with torch.no_grad():
        p, q = student(view1).softmax(1).double(), teacher(view2).softmax(1).double()
    kl = lambda a, c: float((a * (a / c).log()).sum(1).mean())  # noqa: E731 -- KL(a || c), batch mean
    assert got == pytest.approx((kl(p, q) + kl(q, p)) / 2, rel=1e-4)
    assert not teacher.training   # the teacher is evaluated, never trained


class PartProbe(Probe):
    """PCB-like logits [B, 3 parts, K]: the probe's logits, doubled and negated for the second and third part."""

    def forward(self, x, return_feature=False):
        out = super().forward(x)
        return torch.stack([out, 2 * out, -out], dim=1)


def test_consistency_term_of_pcb_compares_the_part_averaged_class_probabilities():
    """The original's PCB branch: outputs = (softmax_K(part 1) + ... + softmax_K(part 6)) / 6, then the same
    symmetric KL of softmax(outputs) — classes normalised per part, never across the parts."""
    torch.manual_seed(1)
    student, teacher = PartProbe(classes=4), PartProbe(classes=4)
    g = torch.Generator().manual_seed(4)
    view1, view2 = torch.randn(5, 3, 16, 8, generator=g), torch.randn(5, 3, 16, 8, generator=g)
    got = float(terms.ConsistencyTerm(iter([(view1, view2, None)]), teacher).value(batch(student)))

    def scores(net, view):   # by hand, one image, part and class at a time
        rows = []
        for logits in net(view).detach().double().tolist():
            parts = [[math.exp(v) / sum(math.exp(u) for u in part) for v in part] for part in logits]
            rows.append([sum(part[k] for part in parts) / len(parts) for k in range(len(parts[0]))])
        return rows

    def softmax(row):
        return [math.exp(v) / sum(math.exp(u) for u in row) for v in row]
    p, q = [softmax(r) for r in scores(student, view1)], [softmax(r) for r in scores(teacher, view2)]
    kl = lambda a, c: sum(sum(x * math.log(x / y) for x, y in zip(ra, rc)) for ra, rc in zip(a, c)) / len(a)  # noqa: E731
    assert got == pytest.approx((kl(p, q) + kl(q, p)) / 2, rel=1e-4)


def test_the_loss_is_the_weighted_sum_of_the_active_terms_and_a_run_builds_its_terms():
    class Constant:
        needs_feature = False

        def __init__(self, weight, value):
            self.weight, self._value = weight, value

        def value(self, batch):
            return None if self._value is None else torch.tensor(self._value)
    total = terms.total_loss([Constant(3.0, None), Constant(1.0, 2.0), Constant(0.5, 4.0)], batch())
    assert float(total) == 4.0
    opts = resolved_opts(parse_options(['--triplet', '--center', '--adv', '0.3', '--aiter', '5',
                                        '--label_smoothing', '0.2', '--scratch']))
    built = terms.loss_terms(opts, losses.build_losses(vars(opts), 3, 8))
    assert [t.name for t in built] == ['softmax', 'triplet', 'center', 'adversarial']
    assert [t.weight for t in built] == [1.0, 1.0, 0.0005, 0.3]
    assert built[0].label_smoothing == built[3].label_smoothing == 0.2 and built[3].every == 5
    plain = terms.loss_terms(resolved_opts(parse_options(['--scratch'])), nn.ModuleDict())
    assert [t.name for t in plain] == ['softmax']


def test_hand_cross_entropy_is_torchs():   # the reference above, checked once against torch itself
    b = batch(seed=5)
    assert hand_cross_entropy(b.logits, LABELS, 0.3) == pytest.approx(
        float(F.cross_entropy(b.logits, LABELS, label_smoothing=0.3)), rel=1e-9)


class MetricProbe(nn.Module):
    """Logits and a metric feature that are fixed linear maps of the images (the loop asks for both)."""

    def __init__(self, classes=3, dim=8):
        super().__init__()
        self.fc, self.embed = nn.Linear(3 * 16 * 8, classes), nn.Linear(3 * 16 * 8, dim)

    def forward(self, x, return_metric_feature=False):
        logits = self.fc(x.flatten(1))
        return (logits, self.embed(x.flatten(1))) if return_metric_feature else logits


def test_one_training_step_moves_the_centres_by_their_own_lr_on_the_unweighted_gradient():
    """Through the loop as train.py runs it: after one step of --center, c_k = c_k + 0.5 * 2/B * sum over the
    images i of id k of (x_i - c_k) — the unweighted gradient of mean ||x_i - c_y||^2 at lr 0.5 (BoT), not the
    0.0005-weighted one."""
    from reid.training.loop import train_one_epoch
    from reid.training.state import TrainingState
    torch.manual_seed(0)
    model = MetricProbe()
    built = losses.build_losses({'center': True}, 3, 8)
    start = built['center'].centers.detach().clone()
    images = torch.randn(len(LABELS), 3, 16, 8)
    with torch.no_grad():
        x = model.embed(images.flatten(1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    state = TrainingState(model, optimizer, scheduler, built, losses.loss_optimizer(built))
    train_one_epoch(model, [(images, LABELS)], state,
                    terms.loss_terms(resolved_opts(parse_options(['--center', '--scratch'])), built),
                    SimpleNamespace(device=torch.device('cpu'), amp_dtype=None))
    expected = start.clone()
    for k in range(3):
        members = [i for i in range(len(LABELS)) if LABELS[i] == k]
        expected[k] += 0.5 * 2 / len(LABELS) * sum(x[i] - start[k] for i in members)
    torch.testing.assert_close(built['center'].centers.detach(), expected, rtol=1e-5, atol=1e-6)
