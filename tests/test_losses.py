"""Every loss of reid/training/losses.py against a plain-Python brute-force reference (float64 loops): value and
gradient.

The references are written from the papers' / original's definitions, one pair or triplet at a time.
"""
import math

import pytest
import torch

from reid.training import losses
from reid.models.heads import cross_entropy_loss
from reid.training import terms

LABELS = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 5])
NUM_CLASSES, DIM = 6, 5


def unit(v):
    return v / torch.sqrt((v * v).sum())


def dist(a, b):
    return torch.sqrt(((a - b) ** 2).sum())


def ref_triplet_pairs(x, y, margin=0.3, eps=0.1):
    x = [unit(v) for v in x]
    n, terms = len(x), []
    for a in range(n):
        pos = [j for j in range(n) if j != a and y[j] == y[a]]
        neg = [j for j in range(n) if y[j] != y[a]]
        if not pos or not neg:
            continue
        s = lambda j: float((x[a] * x[j]).sum().detach())
        min_pos, max_neg = min(s(j) for j in pos), max(s(j) for j in neg)
        for p in [j for j in pos if s(j) - eps < max_neg]:
            for q in [j for j in neg if s(j) + eps > min_pos]:
                t = dist(x[a], x[p]) - dist(x[a], x[q]) + margin
                if t > 0:
                    terms.append(t)
    return sum(terms) / len(terms) if terms else x[0].sum() * 0


def ref_triplet_batch_hard(x, y, margin=0.3):
    n, terms = len(x), []
    for a in range(n):
        pos = [dist(x[a], x[j]) for j in range(n) if j != a and y[j] == y[a]]
        neg = [dist(x[a], x[j]) for j in range(n) if y[j] != y[a]]
        if pos and neg:
            terms.append(torch.clamp(max(pos) - min(neg) + margin, min=0))
    return sum(terms) / len(terms)


def ref_circle(x, y, m=0.25, gamma=32.0):
    x = [unit(v) for v in x]
    lp, ln = [], []
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            s = (x[i] * x[j]).sum()
            if y[i] == y[j]:
                lp.append(-max(1 + m - float(s.detach()), 0.0) * (s - (1 - m)) * gamma)
            else:
                ln.append(max(float(s.detach()) + m, 0.0) * (s - m) * gamma)
    lse = lambda v: torch.log(sum(torch.exp(t) for t in v))
    return torch.log(1 + torch.exp(lse(ln) + lse(lp))) / len(x)


def ref_margin_softmax(x, y, w, target_fn, scale):
    total = 0
    for i in range(len(x)):
        f = unit(x[i])
        logits = []
        for k in range(w.shape[1]):
            c = (f * unit(w[:, k])).sum()
            logits.append(scale * (target_fn(c) if k == y[i] else c))
        total = total - logits[y[i]] + torch.log(sum(torch.exp(t) for t in logits))
    return total / len(x) / len(x)


def arc_target(c):
    return torch.cos(torch.acos(c) + math.radians(28.6))


def sphere_target(c):
    theta = torch.acos(c)
    k = math.floor(4 * float(theta.detach()) / math.pi)
    return (-1) ** k * torch.cos(4 * theta) - 2 * k


def ref_contrastive(x, y):
    x = [unit(v) for v in x]
    pos, neg = [], []
    for i in range(len(x)):
        for j in range(len(x)):
            if i == j:
                continue
            d = dist(x[i], x[j])
            if y[i] == y[j] and d > 0:
                pos.append(d)
            elif y[i] != y[j] and 1 - d > 0:
                neg.append(1 - d)
    return sum(pos) / len(pos) + sum(neg) / len(neg)


def ref_lifted(x, y):
    x = [unit(v) for v in x]
    total = 0
    for a in range(len(x)):
        pos = [dist(x[a], x[j]) for j in range(len(x)) if j != a and y[j] == y[a]]
        neg = [1 - dist(x[a], x[j]) for j in range(len(x)) if y[j] != y[a]]
        part = (torch.log(sum(torch.exp(t) for t in pos)) if pos else 0) + \
            (torch.log(sum(torch.exp(t) for t in neg)) if neg else 0)
        total = total + torch.clamp(part, min=0)
    return total / len(x)


def ref_instance(x, y, gamma, use_labels):
    """instance_loss.py: features L2-normalised; with labels, the mean feature of each id (in sorted id order) is
    one instance; cross-entropy of gamma x cosine over the instances, target = the instance itself; / batch."""
    x = [unit(v) for v in x]
    if use_labels:
        ids = sorted(set(int(v) for v in y))
        x = [unit(sum(x[i] for i in range(len(x)) if int(y[i]) == c) / sum(int(v) == c for v in y)) for c in ids]
    total = 0
    for i in range(len(x)):
        row = [gamma * (x[i] * x[j]).sum() for j in range(len(x))]
        total = total - row[i] + torch.log(sum(torch.exp(t) for t in row))
    return total / len(x) / len(y)


def ref_center(x, y, centers):
    return sum(((x[i] - centers[y[i]]) ** 2).sum() for i in range(len(x))) / len(x)


def ref_label_smoothing(logits, y, eps):
    total = 0
    for i in range(len(logits)):
        logp = [logits[i, k] - torch.log(sum(torch.exp(t) for t in logits[i])) for k in range(logits.shape[1])]
        total = total - (1 - eps) * logp[y[i]] - eps * sum(logp) / len(logp)
    return total / len(logits)


def features(seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(len(LABELS), DIM, generator=g, dtype=torch.float64) * scale).requires_grad_()


def compare(loss_fn, ref_fn, x, params=()):
    """Assert value and gradients (w.r.t. x and `params`) agree between the loss and its reference."""
    ours = loss_fn(x)
    grads = torch.autograd.grad(ours, [x, *params], allow_unused=True)
    theirs = ref_fn(x)
    ref_grads = torch.autograd.grad(theirs, [x, *params], allow_unused=True)
    assert float(ours.detach()) == pytest.approx(float(theirs.detach()), rel=1e-9, abs=1e-12)
    assert float(ours.detach()) > 0
    for g, r in zip(grads, ref_grads):
        assert r is not None and g is not None
        assert torch.allclose(g, r, rtol=1e-7, atol=1e-10)
        assert g.abs().sum() > 0


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_triplet_with_hard_pairs_matches_reference(seed):
    loss = losses.build_loss('triplet', {}, NUM_CLASSES, DIM)   # as train.py builds it: margin 0.3, epsilon 0.1
    compare(lambda x: loss(x, LABELS), lambda x: ref_triplet_pairs(x, LABELS), features(seed))


@pytest.mark.parametrize('seed', [0, 1])
def test_batch_hard_triplet_matches_reference(seed):
    loss = losses.build_loss('triplet', {'triplet_mining': 'batch_hard'}, NUM_CLASSES, DIM)
    compare(lambda x: loss(x, LABELS), lambda x: ref_triplet_batch_hard(x, LABELS), features(seed, 0.3))


def test_circle_matches_reference():
    loss = losses.build_loss('circle', {}, NUM_CLASSES, DIM)   # m 0.25, gamma 32
    compare(lambda x: loss(x, LABELS), lambda x: ref_circle(x, LABELS), features(3))


@pytest.mark.parametrize('name,target,scale', [('arcface', arc_target, 64.0),
                                                ('cosface', lambda c: c - 0.35, 64.0),
                                                ('sphere', sphere_target, 1.0)])
def test_margin_softmax_losses_match_reference(name, target, scale):
    loss = losses.build_loss(name, {}, NUM_CLASSES, DIM).double()
    w = loss.weight
    compare(lambda x: loss(x, LABELS), lambda x: ref_margin_softmax(x, LABELS, w, target, scale), features(4),
            params=[w])


def test_sphere_target_covers_several_angle_branches():
    c = torch.linspace(-0.99, 0.99, 41, dtype=torch.float64)
    ours = losses.build_loss('sphere', {}, 2, 2).target_logit(c)
    ref = torch.stack([sphere_target(v) for v in c])
    assert torch.allclose(ours, ref, atol=1e-9)
    assert len(set(torch.floor(4 * torch.acos(c) / math.pi).tolist())) == 4


def test_contrastive_and_lifted_match_reference():
    contrast, lifted = (losses.build_loss(name, {}, NUM_CLASSES, DIM) for name in ('contrast', 'lifted'))
    compare(lambda x: contrast(x, LABELS), lambda x: ref_contrastive(x, LABELS), features(5))
    compare(lambda x: lifted(x, LABELS), lambda x: ref_lifted(x, LABELS), features(6))


@pytest.mark.parametrize('name,use_labels', [('instance', False), ('instance_id', True)])
def test_instance_losses_match_reference_with_ins_gamma(name, use_labels):
    loss = losses.build_loss(name, {'ins_gamma': 16}, NUM_CLASSES, DIM)
    assert loss.gamma == 16
    compare(lambda x: loss(x, LABELS), lambda x: ref_instance(x, LABELS, 16.0, use_labels), features(7))


def test_instance_id_keeps_the_ids_apart_as_the_original():
    """The defect the original's merge avoids: with an image of another id as target, 50 steps of --instance_id
    alone pull the ids together (mean cross-id cosine 0.003 -> 0.81); merged per id, they stay apart."""
    torch.manual_seed(0)
    labels = torch.tensor([0] * 4 + [7] * 4 + [3] * 4)
    x = torch.randn(12, 8, requires_grad=True)
    loss, opt = losses.InstanceLoss(32.0, use_labels=True), torch.optim.SGD([x], lr=5.0)
    for _ in range(50):
        opt.zero_grad()
        loss(x, labels).backward()
        opt.step()
    u = torch.nn.functional.normalize(x.detach(), dim=1)
    sim, same = u @ u.t(), labels[:, None] == labels[None, :]
    assert sim[~same].mean() < 0.1
    assert float(losses.InstanceLoss(32.0, use_labels=True)(x.detach(), torch.zeros(12, dtype=torch.long))) == 0.0


def test_center_loss_matches_reference():
    loss = losses.build_loss('center', {}, NUM_CLASSES, DIM).double()
    compare(lambda x: loss(x, LABELS), lambda x: ref_center(x, LABELS, loss.centers), features(8),
            params=[loss.centers])


def test_label_smoothing_matches_reference():
    logits = torch.randn(len(LABELS), NUM_CLASSES, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(9)).requires_grad_()
    compare(lambda z: cross_entropy_loss(z, LABELS, 0.1), lambda z: ref_label_smoothing(z, LABELS, 0.1), logits)


def test_the_table_builds_every_flag_and_routes_parameters():
    opts = {name: True for name in losses.LOSSES}
    built = losses.build_losses(opts, NUM_CLASSES, DIM)
    assert list(built) == list(losses.LOSSES)
    shared = {id(p) for p in losses.shared_loss_parameters(built)}
    assert shared == {id(built[n].weight) for n in ('arcface', 'cosface', 'sphere')}
    own = losses.loss_optimizer(built)
    assert [g['lr'] for g in own.param_groups] == [0.5]
    assert own.param_groups[0]['params'][0] is built['center'].centers
    x = features(10).float()
    separately = sum(getattr(m, 'loss_weight', 1.0) * m(x, LABELS) for m in built.values())
    summed = terms.total_loss([terms.MetricTerm(n, m) for n, m in built.items()],
                              terms.Batch(None, None, LABELS, 0, None, x))
    assert torch.allclose(summed, separately) and separately > 0
    assert built['center'].loss_weight == 0.0005
    assert losses.loss_optimizer(losses.build_losses({'triplet': True}, 3, 4)) is None


def test_every_entry_of_the_table_is_a_train_flag_whose_help_gives_its_constants():
    """Adding a loss is one entry: train.py offers its switch and its own flags, and --help states the margins."""
    from reid.training.recipe import build_parser
    actions = {s: a for a in build_parser()._actions for s in a.option_strings}
    for name, entry in losses.LOSSES.items():
        assert actions[f'--{name}'].const is True and actions[f'--{name}'].default is False
        for flag, _ in entry.options:
            assert flag in actions
    assert actions['--triplet'].help == 'triplet loss, margin 0.3'
    assert actions['--arcface'].help == 'ArcFace loss (margin 28.6 degrees, scale 64)'
    assert actions['--center'].help == 'center loss (weight 0.0005, centres SGD at lr 0.5)'
    assert actions['--ins_gamma'].default == 32
