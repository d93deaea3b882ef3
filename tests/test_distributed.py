"""DDP on the CPU with gloo and 2 processes (torch.multiprocessing, torchrun's environment variables):
one step's averaged gradients equal one process's on the same global batch, training runs, the loss falls,
one set of checkpoints, and resume restores every rank's state."""
import os
import socket
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp

from reid.training import distributed
from reid.models.heads import cross_entropy_loss
from conftest import build
from reid.training import recipe, trainer

TINY = {'backbone': 'resnet18', 'scratch': True, 'droprate': 0.0, 'linear_num': 32}


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def in_group(rank, world, port, fn, *args):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR='127.0.0.1',
                      MASTER_PORT=str(port), OMP_NUM_THREADS='1')
    torch.set_num_threads(1)
    try:
        fn(rank, *args)
    finally:
        distributed.shutdown()


def spawn(fn, *args):
    mp.spawn(in_group, args=(2, free_port(), fn) + args, nprocs=2, join=True)


def frozen_bn_net():
    torch.manual_seed(0)
    net = build(TINY, num_classes=5).train()
    for module in net.modules():  # BN statistics frozen: eval-mode BN inside a training-mode network
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
    return net


def global_batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, 32, 16, generator=g), torch.randint(0, 5, (8,), generator=g)


def rank_gradients(rank, out):
    distributed.init_process_group()
    net = frozen_bn_net()
    ddp = distributed.wrap(net, torch.device('cpu'))
    images, labels = global_batch()
    share = list(distributed.ShardedBatches([list(range(8))], rank, 2))[0]
    cross_entropy_loss(ddp(images[share]), labels[share]).backward()
    torch.save({k: p.grad for k, p in net.named_parameters()}, f'{out}/grad{rank}.pt')


def test_averaged_gradients_equal_one_process_on_the_global_batch(tmp_path):
    spawn(rank_gradients, str(tmp_path))
    net = frozen_bn_net()
    images, labels = global_batch()
    cross_entropy_loss(net(images), labels).backward()
    for rank in (0, 1):
        got = torch.load(tmp_path / f'grad{rank}.pt', weights_only=True)
        for name, p in net.named_parameters():
            torch.testing.assert_close(got[name], p.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_sharded_batches_split_each_global_batch():
    batches = [[5, 1, 4, 0], [2, 3, 7, 6]]
    assert list(distributed.ShardedBatches(batches, 0, 2)) == [[5, 1], [2, 3]]
    assert list(distributed.ShardedBatches(batches, 1, 2)) == [[4, 0], [7, 6]]
    with pytest.raises(ValueError, match='divisible'):
        list(distributed.ShardedBatches([[1, 2, 3]], 0, 2))


def rank_training(rank, data_dir, model_dir, resume, stop_after):
    args = ['--data_dir', data_dir, '--model_dir', model_dir, '--backbone', 'resnet18', '--scratch', '--h', '32',
            '--w', '16', '--batchsize', '16', '--num_workers', '0', '--lr', '0.01', '--name', 'ddp',
            '--total_epoch', '3', '--channels_last', 'off', '--tensorboard']
    opts = recipe.build_parser().parse_args(args + (['--resume'] if resume else []))
    history = trainer.run_training(opts, stop_after=stop_after)
    torch.save({'history': history, 'rng': torch.get_rng_state()}, f'{model_dir}/history{rank}_{int(resume)}.pt')


def test_two_process_training_one_set_of_checkpoints_and_resume(tiny_prepared, tmp_path):
    model_dir = tmp_path / 'model'
    spawn(rank_training, str(tiny_prepared), str(model_dir), False, 2)
    run = model_dir / 'ddp'
    assert sorted(p.name for p in run.glob('*.pth')) == ['net_init.pth', 'net_last.pth', 'resume.pth']
    assert sorted(p.name for p in run.glob('*.yaml')) == ['opts.yaml']
    first = [torch.load(model_dir / f'history{r}_0.pt', weights_only=True) for r in (0, 1)]
    losses = first[0]['history']['train_loss']
    assert len(losses) == 2 and losses[1] < losses[0]
    assert first[1]['history']['train_loss'] == losses  # averaged over the ranks: the same on both
    state = torch.load(run / 'resume.pth', weights_only=True)
    assert state['epoch'] == 2 and len(state['rng_per_rank']) == 2
    spawn(rank_training, str(tiny_prepared), str(model_dir), True, None)
    resumed = torch.load(model_dir / 'history0_1.pt', weights_only=True)['history']
    assert resumed['train_loss'][:2] == losses and len(resumed['train_loss']) == 3
    assert torch.load(run / 'resume.pth', weights_only=True)['epoch'] == 3
    # --tensorboard: rank 0 alone writes, one event file per session, every step once
    assert len(list((run / 'tb').glob('events.out.tfevents.*'))) == 2
    from test_tensorboard import scalars
    assert [s for s, _ in scalars(run / 'tb')['train/loss']] == list(range(9))  # 3 epochs of 48 / 16 images


def test_torchrun_with_one_process_joins_a_group_and_trains_as_a_plain_run(tiny_prepared, tmp_path):
    """A one-GPU machine under torchrun still joins the process group (NCCL there, gloo here) and wraps the network
    in DDP: with one process its averaged gradient is the gradient, so the weights equal a plain run's."""
    import subprocess
    import sys
    import yaml
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    args = ['--data_dir', str(tiny_prepared), '--model_dir', str(tmp_path), '--backbone', 'resnet18', '--scratch',
            '--h', '32', '--w', '16', '--batchsize', '8', '--num_workers', '0', '--lr', '0.01', '--total_epoch', '1',
            '--cpu_bf16', 'off']
    done = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '1',
                           '--master_port', str(free_port()), str(repo / 'train.py'), '--name', 'one', *args],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    trainer.run_training(recipe.build_parser().parse_args(['--name', 'plain', *args]))
    a, b = (torch.load(tmp_path / name / 'net_last.pth', weights_only=True) for name in ('one', 'plain'))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sessions = [yaml.safe_load((tmp_path / name / 'opts.yaml').read_text())['runtime'][0] for name in ('one', 'plain')]
    assert [(s['processes'], s['process_group']) for s in sessions] == [(1, 'gloo'), (1, None)]


LOSSES_WITH_PARAMETERS = ('arcface', 'cosface', 'sphere', 'center')


def loss_step_objects(seed):
    """The network (frozen BN) and every loss that has parameters, their optimizers and terms, as train.py
    builds them; the losses initialised from `seed`."""
    from reid.training import losses, terms
    net = frozen_bn_net()
    torch.manual_seed(seed)
    built = losses.build_losses({name: True for name in LOSSES_WITH_PARAMETERS}, 5, net.feature_dim)
    optimizer = torch.optim.SGD(list(net.parameters()) + losses.shared_loss_parameters(built), lr=0.1)
    step_terms = [terms.SoftmaxTerm()] + [terms.MetricTerm(n, m) for n, m in built.items()]
    return net, built, optimizer, losses.loss_optimizer(built), step_terms


def rank_loss_step(rank, out):
    from reid.training.loop import train_one_epoch   # the loop train.py runs
    from reid.training.state import TrainingState
    distributed.init_process_group()
    net, built, optimizer, loss_opt, step_terms = loss_step_objects(seed=100 + rank)  # different on each rank
    distributed.broadcast_parameters(built)   # as the trainer does: rank 0's
    images, labels = global_batch()
    share = list(distributed.ShardedBatches([list(range(8))], rank, 2))[0]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    state = TrainingState(net, optimizer, scheduler, built, loss_opt)
    train_one_epoch(distributed.wrap(net, torch.device('cpu')), [(images[share], labels[share])], state, step_terms,
                    SimpleNamespace(device=torch.device('cpu'), amp_dtype=None))
    torch.save(built.state_dict(), f'{out}/losses{rank}.pt')


def test_the_losses_parameters_are_the_same_on_every_rank_after_a_step(tmp_path):
    """ArcFace / CosFace / SphereFace class weights and the centres: every rank holds the same values after a
    step, the update of the gradient averaged over the ranks (computed here one share at a time)."""
    spawn(rank_loss_step, str(tmp_path))
    got = [torch.load(tmp_path / f'losses{rank}.pt', weights_only=True) for rank in (0, 1)]
    images, labels = global_batch()
    start = loss_step_objects(seed=100)[1].state_dict()
    shares = [[0, 1, 2, 3], [4, 5, 6, 7]]
    grads = []
    for share in shares:   # each rank's local gradient of the summed terms, by hand
        net, built, _, _, step_terms = loss_step_objects(seed=100)
        logits, feature = net.train()(images[share], return_metric_feature=True)   # as the loop: train mode
        total = sum(t.weight * t.value(_batch(net, images[share], labels[share], logits, feature))
                    for t in step_terms)
        total.backward()
        grads.append({n: p.grad.clone() for n, p in built.named_parameters()})
    for name in start:
        lr, weight = (0.5, 0.0005) if name.startswith('center') else (0.1, 1.0)
        expected = start[name] - lr * (grads[0][name] + grads[1][name]) / 2 / weight
        for rank in (0, 1):
            torch.testing.assert_close(got[rank][name], expected, atol=1e-6, rtol=1e-5, msg=f'rank {rank} {name}')
        assert not torch.equal(expected, start[name])


def _batch(net, images, labels, logits, feature):
    from reid.training.terms import Batch
    return Batch(net, images, labels, 0, logits, feature)
