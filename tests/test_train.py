"""Tests of train.py (reid/training/recipe.py, trainer.py, loop.py): the learning-rate schedule, outputs of a
1-epoch run, exact resume.

Training runs use resnet18 from scratch on 32x16 inputs of the tiny synthetic set, in-process, num_workers 0.
"""
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
import yaml

import train
from conftest import build, library_messages, load_repo_module, load_test_cli
from reid.data.images import ReIDImageFolder
from reid.training.loop import lr_factor
from reid.runs import RunFolder, load_checkpoint
from reid.training import recipe, trainer
from reid.evaluation import extract


def tiny_opts(data_dir, model_dir, *extra):
    return recipe.build_parser().parse_args(
        ['--data_dir', str(data_dir), '--model_dir', str(model_dir), '--backbone', 'resnet18', '--scratch',
         '--h', '32', '--w', '16', '--batchsize', '16', '--num_workers', '0', '--lr', '0.01', *extra])


def test_step_decay_at_two_thirds_and_none_for_one_epoch():
    factors = [lr_factor(e * 5, 5, 60) for e in range(60)]
    assert factors[:40] == [1.0] * 40 and factors[40:] == [0.1] * 20
    assert [lr_factor(s, 5, 1) for s in range(5)] == [1.0] * 5
    assert [lr_factor(e, 1, 3) for e in range(3)] == [1.0, 1.0, 0.1]


def test_warm_up_is_linear_from_a_tenth_and_cosine_ends_at_a_hundredth():
    warm = [lr_factor(s, 4, 10, warm_epoch=2) for s in range(10)]
    assert warm[0] == pytest.approx(0.1)
    assert warm[4] == pytest.approx(0.1 + 0.9 * 4 / 8)
    assert warm[8:] == [1.0, 1.0]
    assert all(b > a for a, b in zip(warm[:8], warm[1:9]))
    assert lr_factor(0, 1, 10, cosine=True) == pytest.approx(1.0)
    assert lr_factor(5, 1, 10, cosine=True) == pytest.approx(0.01 + 0.99 * (1 + math.cos(math.pi / 2)) / 2)
    assert lr_factor(10, 1, 10, cosine=True) == pytest.approx(0.01)


def test_val_labels_follow_the_training_folder_indices(tiny_prepared):
    train_set = ReIDImageFolder(tiny_prepared / 'train')
    val_set = ReIDImageFolder(tiny_prepared / 'val', class_to_idx=train_set.class_to_idx)
    for path, label in val_set.samples:
        assert train_set.classes[label] == path.split('/')[-2]


def test_dataset_order_and_labels_match_torchvision_imagefolder(tiny_prepared):
    from torchvision.datasets import ImageFolder
    for split in ('train', 'gallery'):
        ours = ReIDImageFolder(tiny_prepared / split)
        theirs = ImageFolder(str(tiny_prepared / split))
        assert ours.samples == theirs.samples and ours.classes == theirs.classes
    image, label = ReIDImageFolder(tiny_prepared / 'train')[0]
    assert image.mode == 'RGB' and label == 0


def test_bad_flags_fail_with_one_line(tiny_prepared, tmp_path):
    base = ['--data_dir', str(tiny_prepared), '--model_dir', str(tmp_path), '--scratch', '--backbone', 'resnet18']
    with pytest.raises(SystemExit, match='pick one'):
        train.main([*base, '--fp16', '--bf16'])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match='--fp16 needs CUDA'):
            train.main([*base, '--fp16'])
    with pytest.raises(SystemExit, match='--total_epoch 0'):
        train.main(['--data_dir', str(tiny_prepared), '--total_epoch', '0'])
    with pytest.raises(SystemExit, match='folder not found'):
        train.main(['--data_dir', str(tmp_path / 'nowhere'), '--model_dir', str(tmp_path), '--scratch'])


@pytest.mark.precision
def test_one_epoch_run_writes_every_output(tiny_prepared, tmp_path):
    opts = tiny_opts(tiny_prepared, tmp_path, '--name', 'one', '--total_epoch', '1', '--bf16', '--erasing_p',
                     '0.5', '--color_jitter')
    history = trainer.run_training(opts)
    run = tmp_path / 'one'
    assert len(history['train_loss']) == len(history['val_loss']) == 1
    for name in ('opts.yaml', 'net_init.pth', 'net_last.pth', 'resume.pth', 'train.jpg', 'train.py',
                 'model.py', 'reid/data/images.py'):
        assert (run / name).is_file(), name
    assert not list(run.glob('net_0*.pth'))  # snapshots come every 10 epochs only
    saved = yaml.safe_load((run / 'opts.yaml').read_text())
    assert set(vars(opts)) <= set(saved)
    assert saved['nclasses'] == len(ReIDImageFolder(tiny_prepared / 'train').classes)
    assert (saved['h'], saved['w'], saved['bf16'], saved['erasing_p']) == (32, 16, True, 0.5)
    weights = load_checkpoint(run / 'net_last.pth')
    assert weights['classifier.classifier.weight'].shape[0] == saved['nclasses']
    initial = load_checkpoint(run / 'net_init.pth')
    assert not torch.equal(weights['body.conv1.weight'], initial['body.conv1.weight'])


@pytest.mark.precision
@pytest.mark.parametrize('precision', ['off', 'on'])
def test_resume_continues_exactly_like_an_uninterrupted_run(tiny_prepared, tmp_path, precision):
    """In fp32 and in bf16 autocast (--cpu_bf16 on; emulated where the CPU lacks it): README promises both. bf16 at
    64x32, where layer4's convolutions map onto 2x1 and so run in fp32 (Runtime.protect_small_maps)."""
    mode = ('--cpu_bf16', precision) + (('--h', '64', '--w', '32') if precision == 'on' else ())
    whole = tiny_opts(tiny_prepared, tmp_path, '--name', 'whole', '--total_epoch', '2', '--erasing_p', '0.5', *mode)
    full = trainer.run_training(whole)

    split = tiny_opts(tiny_prepared, tmp_path, '--name', 'split', '--total_epoch', '2', '--erasing_p', '0.5', *mode)
    first = trainer.run_training(split, stop_after=1)
    assert len(first['train_loss']) == 1
    torch.manual_seed(999)  # whatever happens in between, resume restores the generators
    resumed = trainer.run_training(tiny_opts(tiny_prepared, tmp_path, '--name', 'split', '--resume', *mode[2:]))

    assert resumed == full
    a, b = load_checkpoint(tmp_path / 'whole' / 'net_last.pth'), load_checkpoint(tmp_path / 'split' / 'net_last.pth')
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    state = load_checkpoint(tmp_path / 'split' / 'resume.pth')
    steps_per_epoch = len(ReIDImageFolder(tiny_prepared / 'train')) // 16
    assert state['epoch'] == 2 and state['scheduler']['last_epoch'] == 2 * steps_per_epoch


def test_resume_without_a_run_is_a_clear_error(tiny_prepared, tmp_path):
    with pytest.raises(SystemExit, match='opts.yaml not found'):
        train.main(['--data_dir', str(tiny_prepared), '--model_dir', str(tmp_path), '--name', 'none',
                    '--resume'])


def test_an_existing_run_is_kept_unless_overwrite_and_resume_names_ignored_flags(tiny_prepared, tmp_path):
    args = ('--name', 'kept', '--total_epoch', '1')
    trainer.run_training(tiny_opts(tiny_prepared, tmp_path, *args))
    before = (tmp_path / 'kept' / 'net_last.pth').read_bytes()
    stale = tmp_path / 'kept' / 'net_059.pth'
    stale.write_bytes(b'from a longer run')
    with pytest.raises(SystemExit, match='--resume, pick another --name, or replace it with --overwrite'):
        train.main(['--data_dir', str(tiny_prepared), '--model_dir', str(tmp_path), '--backbone', 'resnet18',
                    '--scratch', '--name', 'kept'])
    assert (tmp_path / 'kept' / 'net_last.pth').read_bytes() == before and stale.exists()

    with library_messages() as lines:
        trainer.run_training(tiny_opts(tiny_prepared, tmp_path, '--name', 'kept', '--resume', '--total_epoch', '5'))
    assert any('ignoring --total_epoch' in line for line in lines)

    trainer.run_training(tiny_opts(tiny_prepared, tmp_path, *args, '--overwrite', '--seed', '1'))
    assert not stale.exists() and (tmp_path / 'kept' / 'net_last.pth').read_bytes() != before


def test_the_machines_choice_is_recorded_apart_and_never_carried_over_by_resume(tiny_prepared, tmp_path,
                                                                                monkeypatch):
    """Started where the machine chose bf16 autocast (a CPU with native bf16, under a policy that picks bf16 for
    training), resumed on a machine without it: the recipe keeps bf16 False (nobody asked for it), the resumed
    session runs fp32, and each session's choice is recorded under `runtime`. An explicit --cpu_bf16 on the resume
    line is honoured, not reported as ignored."""
    from reid import runtime
    monkeypatch.setitem(runtime.AUTO_BF16, 'train', True)
    monkeypatch.setenv('REID_NATIVE_BF16', '1')
    with library_messages() as lines:
        trainer.run_training(tiny_opts(tiny_prepared, tmp_path, '--name', 'moved', '--total_epoch', '3'),
                             stop_after=1)
    assert any('bf16 autocast on the CPU (auto: the CPU has REID_NATIVE_BF16=1)' in line for line in lines)
    saved = yaml.safe_load((tmp_path / 'moved' / 'opts.yaml').read_text())
    assert saved['bf16'] is False and saved['cpu_bf16'] == 'auto' and 'cpu_bf16_reason' not in saved
    assert [(r['precision'], r['from_epoch'], r['device']) for r in saved['runtime']] == [('bfloat16', 0, 'cpu')]

    monkeypatch.setenv('REID_NATIVE_BF16', '0')
    seen = []
    real_epoch = trainer.train_one_epoch

    def recording(model, loader, state, terms, runtime, *args, **kwargs):
        seen.append(runtime.amp_dtype)
        return real_epoch(model, loader, state, terms, runtime, *args, **kwargs)
    monkeypatch.setattr(trainer, 'train_one_epoch', recording)
    with library_messages() as lines:
        trainer.run_training(tiny_opts(tiny_prepared, tmp_path, '--name', 'moved', '--resume'), stop_after=1)
    assert seen == [None] and not any('bf16' in line for line in lines)
    monkeypatch.setenv('REID_NATIVE_BF16', '1')
    with library_messages() as lines:
        trainer.run_training(tiny_opts(tiny_prepared, tmp_path, '--name', 'moved', '--resume', '--cpu_bf16', 'off'))
    assert seen == [None, None] and not any('ignoring' in line for line in lines)
    saved = yaml.safe_load((tmp_path / 'moved' / 'opts.yaml').read_text())
    assert saved['bf16'] is False and saved['cpu_bf16'] == 'auto'   # the recipe, as first asked
    assert [(r['precision'], r['from_epoch']) for r in saved['runtime']] == [('bfloat16', 0), ('float32', 1),
                                                                          ('float32', 2)]
    assert saved['runtime'][2]['precision_reason'] == '--cpu_bf16 off'


def test_a_run_of_the_previous_format_resumes_without_the_machines_bf16(tiny_prepared, tmp_path):
    """opts.yaml of runs written before the runtime had its own entry: `bf16: true` with an 'auto' reason was the
    machine's choice, not a request, and is not read back."""
    trainer.run_training(tiny_opts(tiny_prepared, tmp_path, '--name', 'old', '--total_epoch', '2',
                                   '--cpu_bf16', 'off'), stop_after=1)
    path = tmp_path / 'old' / 'opts.yaml'
    values = yaml.safe_load(path.read_text())
    values.pop('runtime')
    path.write_text(yaml.safe_dump({**values, 'bf16': True, 'cpu_bf16': 'auto', 'channels_last': 'on',
                                    'cpu_bf16_reason': 'auto: the CPU has avx512_bf16'}))
    recipe_read = RunFolder(tmp_path / 'old').recipe()
    assert recipe_read['bf16'] is False and 'cpu_bf16_reason' not in recipe_read
    path.write_text(yaml.safe_dump({**values, 'bf16': True}))   # asked for with --bf16 (no reason recorded then)
    assert RunFolder(tmp_path / 'old').recipe()['bf16'] is True
    # before --lr_warmup, --warm_epoch warmed the learning rate: such a run continues as it started
    assert 'lr_warmup' in values and RunFolder(tmp_path / 'old').recipe()['lr_warmup'] is False
    path.write_text(yaml.safe_dump({k: v for k, v in values.items() if k != 'lr_warmup'}))
    assert RunFolder(tmp_path / 'old').recipe()['lr_warmup'] is True


def assert_map_of_the_result_file(printed_map, mat):
    """The mAP test.py reported equals a plain-loop mAP over the features it wrote (tests/test_metrics.py)."""
    import scipy.io
    from test_metrics import reference_metrics
    r = scipy.io.loadmat(mat)
    score = r['query_f'].astype(np.float64) @ r['gallery_f'].astype(np.float64).T
    want = reference_metrics(score, r['query_label'][0], r['query_cam'][0], r['gallery_label'][0], r['gallery_cam'][0])
    assert abs(printed_map - want['mAP']) < 1e-6, (printed_map, want['mAP'])


ALL_LOSSES = ('--triplet', '--circle', '--arcface', '--cosface', '--sphere', '--contrast', '--lifted', '--instance',
              '--instance_id', '--ins_gamma', '16', '--center', '--label_smoothing', '0.1')


@pytest.mark.precision
def test_every_loss_and_trick_trains_resumes_exactly_and_tests(tiny_prepared, tmp_path, monkeypatch):
    """All metric losses at once (P x K by default) with BNNeck, USAM, fused SGD, weight averaging and DG
    consistency (the tiny train split stands in for DG-Market): each epoch's loss has the terms the recipe asks
    for (DG's strictly after --wa starts, weight 0.1, the average as teacher); the losses' parameters and the
    average are saved in resume.pth and restored; the average's BN statistics are recomputed; the resumed run
    equals an uninterrupted one; test.py evaluates the last and the averaged network."""

    args = ('--total_epoch', '2', '--bnneck', '--usam', '--FSGD', '--wa', '--wa_start', '0', '--DG', '--dg_dir',
            str(tiny_prepared / 'train'), *ALL_LOSSES)
    epochs, real_epoch = [], trainer.train_one_epoch

    def recorded_epoch(*a, **k):
        epochs.append([(t.name, t.weight, getattr(t, 'label_smoothing', None), getattr(t, 'teacher', None))
                       for t in a[3]])
        return real_epoch(*a, **k)
    monkeypatch.setattr(trainer, 'train_one_epoch', recorded_epoch)
    whole = trainer.run_training(tiny_opts(tiny_prepared, tmp_path, '--name', 'whole', *args))
    monkeypatch.setattr(trainer, 'train_one_epoch', real_epoch)
    metric = ['triplet', 'circle', 'arcface', 'cosface', 'sphere', 'contrast', 'lifted', 'instance', 'instance_id',
              'center']
    assert [name for name, *_ in epochs[0]] == ['softmax'] + metric
    assert [name for name, *_ in epochs[1]] == ['softmax'] + metric + ['dg_consistency']
    assert epochs[0][0][1:3] == (1.0, 0.1) and epochs[1][-1][1] == 0.1
    assert type(epochs[1][-1][3]).__name__ == 'AveragedModel'
    trainer.run_training(tiny_opts(tiny_prepared, tmp_path, '--name', 'split', *args), stop_after=1)
    after_one = load_checkpoint(tmp_path / 'split' / 'resume.pth')['losses']
    model_after_one = load_checkpoint(tmp_path / 'split' / 'net_last.pth')
    torch.manual_seed(123)
    resumed = trainer.run_training(tiny_opts(tiny_prepared, tmp_path, '--name', 'split', '--resume'))
    assert resumed == whole
    saved = yaml.safe_load((tmp_path / 'whole' / 'opts.yaml').read_text())
    assert saved['sampler'] == 'pk' and saved['bnneck'] and saved['ins_gamma'] == 16

    a, b = (load_checkpoint(tmp_path / run / 'resume.pth') for run in ('whole', 'split'))
    assert set(a['losses']) == {'arcface.weight', 'cosface.weight', 'sphere.weight', 'center.centers'}
    assert all(torch.equal(a['losses'][k], b['losses'][k]) for k in a['losses'])
    assert all(torch.equal(a['model'][k], b['model'][k]) for k in a['model'])
    assert a['loss_optimizer'] is not None
    assert int(a['averaged']['n_averaged']) == 2
    for key in ('body.conv1.weight', 'classifier.classifier.weight'):  # EMA 0.996 of the two epochs' weights
        step = a['model'][key] - model_after_one[key]   # the second epoch's change, weighted 0.004 in the average
        assert step.abs().max() > 0
        torch.testing.assert_close(a['averaged']['module.' + key] - model_after_one[key], 0.004 * step,
                                   rtol=0.02, atol=1e-8)
    assert all(torch.equal(a['averaged'][k], b['averaged'][k]) for k in a['averaged'])
    average = load_checkpoint(tmp_path / 'whole' / 'net_average.pth')
    assert average.keys() == a['model'].keys() and 'body.usam_1.bn.weight' in average
    # update_bn: the average's BN statistics recomputed over one pass of the training batches (the copy made when
    # averaging began holds the initial ones: 0 batches, unit variance)
    resolved = recipe.resolved_opts(tiny_opts(tiny_prepared, tmp_path, '--name', 'whole', *args))
    steps = trainer.epoch_steps(trainer.datasets(resolved)[0], resolved)
    assert int(average['body.bn1.num_batches_tracked']) == steps
    assert not torch.allclose(average['body.bn1.running_var'], torch.ones(64))
    for key, value in after_one.items():  # every loss parameter is optimised (it moved in epoch 2)
        assert not torch.equal(value, a['losses'][key]), key

    T = load_test_cli()
    results = extract.run_test(T.build_parser().parse_args(
        ['--name', 'whole', '--model_dir', str(tmp_path), '--test_dir', str(tiny_prepared), '--num_workers', '0',
         '--result', str(tmp_path / 'r.mat')]))
    assert_map_of_the_result_file(results['single']['mAP'], tmp_path / 'r.mat')
    averaged = extract.run_test(T.build_parser().parse_args(
        ['--name', 'whole', '--model_dir', str(tmp_path), '--test_dir', str(tiny_prepared), '--num_workers', '0',
         '--which_epoch', 'average', '--result', str(tmp_path / 'a.mat')]))
    assert_map_of_the_result_file(averaged['single']['mAP'], tmp_path / 'a.mat')
    import scipy.io
    assert not np.allclose(scipy.io.loadmat(tmp_path / 'a.mat')['query_f'], scipy.io.loadmat(tmp_path / 'r.mat')['query_f'])


def test_dg_without_its_folder_is_one_clear_error(tiny_prepared, tmp_path):
    with pytest.raises(SystemExit, match='--DG: .*nowhere: folder not found; download DG-Market'):
        train.main(['--data_dir', str(tiny_prepared), '--model_dir', str(tmp_path), '--backbone', 'resnet18',
                    '--scratch', '--DG', '--dg_dir', str(tmp_path / 'nowhere')])


def test_milestone_steps_drop_the_lr_at_each_given_epoch():
    assert [lr_factor(e * 3, 3, 120, milestones=(40, 70)) for e in (0, 39, 40, 69, 70, 119)] == \
        pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    assert recipe.milestones('40,70') == (40, 70)
    with pytest.raises(ValueError, match='--steps 40,x'):
        recipe.milestones('40,x')


def test_presets_are_defaults_that_explicit_flags_override():
    bot = recipe.parse_options(['--preset', 'bot'])
    assert (bot.optimizer, bot.lr, bot.warm_epoch, bot.total_epoch, bot.steps) == ('adam', 3.5e-4, 10, 120, '40,70')
    assert (bot.erasing_p, bot.label_smoothing, bot.stride, bot.bnneck, bot.triplet, bot.center) == \
        (0.5, 0.1, 1, True, True, True)
    assert (bot.batchsize // bot.num_instances, bot.num_instances, bot.h, bot.w) == (16, 4, 256, 128)
    assert bot.triplet_mining == 'batch_hard' and bot.sampler == 'pk'
    mine = recipe.parse_options(['--preset', 'bot', '--lr', '0.001', '--total', '30', '--batch', '32'])
    assert (mine.lr, mine.total_epoch, mine.batchsize, mine.optimizer) == (0.001, 30, 32, 'adam')
    seed = recipe.parse_options(['--preset', 'seed'])
    plain = recipe.parse_options([])
    assert all(getattr(seed, k) == v for k, v in recipe.PRESETS['seed'].items())
    resolved = [{k: v for k, v in vars(recipe.resolved_opts(o)).items() if k != 'preset'} for o in (seed, plain)]
    assert resolved[0] == resolved[1]  # the defaults are the original recipe


def test_resolved_options_are_read_only_and_resolution_leaves_the_parsed_ones_alone():
    parsed = recipe.parse_options(['--triplet', '--DG', '--h', '64', '--w', '32'])
    before = dict(vars(parsed))
    resolved = recipe.resolved_opts(parsed)
    assert vars(parsed) == before   # resolving computed a new record, not edits to the parsed flags
    # implied by the flags: P x K batches for a metric loss, the average as DG's teacher, the original's 10-pixel
    # pad at width 128 scaled to 32 (round(2.5) = 2)
    assert (resolved.sampler, resolved.wa, resolved.pad) == ('pk', True, 2)
    for name, value in (('lr', 0.1), ('nclasses', 5), ('sampler', 'random')):
        with pytest.raises(AttributeError, match=f'--{name} cannot change'):
            setattr(resolved, name, value)
    with pytest.raises(AttributeError):
        del resolved.lr
    assert resolved.lr == parsed.lr and not hasattr(resolved, 'nclasses')


def test_quick_preset_is_the_quick_starts_recipe_and_metric_losses_still_get_pk_batches():
    quick = recipe.resolved_opts(recipe.parse_options(['--preset', 'quick']))
    assert (quick.backbone, quick.scratch, quick.h, quick.w, quick.total_epoch) == ('resnet18', True, 128, 64, 10)
    assert (quick.optimizer, quick.lr, quick.cosine, quick.warm_epoch, quick.label_smoothing) == \
        ('adam', 1e-3, True, 0, 0.1)
    assert (quick.bnneck, quick.stride, quick.cache, quick.sampler) == (True, 1, True, 'random')
    with_triplet = recipe.resolved_opts(recipe.parse_options(['--preset', 'quick', '--triplet', '--stride', '2']))
    assert (with_triplet.sampler, with_triplet.stride) == ('pk', 2)
    # quickstart.sh and bench/tricks.py train the same recipe
    repo = Path(__file__).resolve().parents[1]
    script = (repo / 'quickstart.sh').read_text().replace('\\\n', ' ')
    line = next(line.split() for line in script.splitlines() if 'train.py' in line)
    tricks_quick = ['--preset', 'quick', '--train_all']
    assert all(flag in line for flag in tricks_quick), line
    tricks = load_repo_module('bench/tricks.py', 'bench_tricks')
    assert tricks.QUICK == tricks_quick and next(iter(tricks.OPTIONS.values())) == tricks_quick


def test_optimizers_take_torchs_fused_update_on_the_cpu_too():
    net = build({'backbone': 'resnet18', 'scratch': True}, num_classes=5)
    for optimizer in ('sgd', 'adam'):
        opts = recipe.resolved_opts(recipe.parse_options(['--optimizer', optimizer, '--scratch']))
        step, _, _ = trainer.optimizer_and_scheduler(net, {}, opts, steps_per_epoch=3)
        assert step.defaults['fused'] is True and all(p.device.type == 'cpu' for p in net.parameters())


def test_bot_preset_with_adversarial_training_trains_tests_and_records_resolved_values(tiny_prepared, tmp_path):

    argv = ['--preset', 'bot', '--data_dir', str(tiny_prepared), '--model_dir', str(tmp_path), '--name', 'bot',
            '--backbone', 'resnet18', '--scratch', '--h', '32', '--w', '16', '--batchsize', '16', '--num_workers',
            '0', '--total_epoch', '1', '--steps', '1', '--warm_epoch', '1', '--adv', '0.5', '--aiter', '100']
    train.main(argv)
    saved = yaml.safe_load((tmp_path / 'bot' / 'opts.yaml').read_text())
    assert (saved['optimizer'], saved['lr'], saved['steps'], saved['total_epoch'], saved['stride']) == \
        ('adam', 3.5e-4, '1', 1, 1)
    assert (saved['adv'], saved['aiter']) == (0.5, 100)
    state = load_checkpoint(tmp_path / 'bot' / 'resume.pth')
    assert 'exp_avg' in next(iter(state['optimizer']['state'].values()))  # Adam's state
    assert set(state['losses']) == {'center.centers'}
    T = load_test_cli()
    results = extract.run_test(T.build_parser().parse_args(
        ['--name', 'bot', '--model_dir', str(tmp_path), '--test_dir', str(tiny_prepared), '--num_workers', '0',
         '--result', str(tmp_path / 'r.mat')]))
    # what test.py reports is the evaluation of what it saved: the file's features scored again by the plain-loop
    # reference of test_metrics (float64 cosine scores), every metric
    from test_metrics import reference_metrics
    saved = read_result_with_scipy(tmp_path / 'r.mat')
    want = reference_metrics((saved['query_f'] @ saved['gallery_f'].T).tolist(), saved['query_label'],
                             saved['query_cam'], saved['gallery_label'], saved['gallery_cam'])
    got = results['single']
    assert want['n_valid'] > 0 and (got['n_valid'], got['n_skipped']) == (want['n_valid'], want['n_skipped'])
    for key in ('mAP', 'mAP_standard', 'mINP'):
        assert got[key] == pytest.approx(want[key], abs=1e-5), key
    assert list(got['cmc']) == pytest.approx(want['cmc'], abs=1e-6)


# The original's documented train/test commands (its README and tutorial; the copy in shared/seed-README.md
# stops before its commands, so they are listed here), with the abbreviations its users type.
ORIGINAL_TRAIN_COMMANDS = [
    '--gpu_ids 0 --name ft_ResNet50 --train_all --batchsize 32 --data_dir your_data_path',
    '--gpu_ids 0 --name ft_DenseNet121 --use_dense --train_all --batchsize 32 --data_dir your_data_path',
    '--warm_epoch 5 --stride 1 --erasing_p 0.5 --batchsize 8 --lr 0.02 --name warm5_s1_b8_lr2_p0.5',
    '--PCB --batchsize 64 --name PCB-64 --train_all',
    '--name swin --use_swin --total 100 --batch 16 --warm 10 --data ../Market/pytorch --train_all',
    '--name swinv2 --use_swinv2 --train_all --lr 0.02',
    '--name convnext --use_convnext --train_all --lr 0.01',
    '--name efficient --use_efficient --train_all',
    '--name hr --use_hr --train_all',
    '--name ibn --ibn --train_all',
    '--name nas --use_NAS --train_all',
    '--name dino --use_dino --train_all',
    '--name usam --usam --train_all',
    '--name circle --circle --train_all --batchsize 32',
    '--name tri --triplet --train_all --batchsize 32',
    '--name all --arcface --cosface --sphere --contrast --lifted --instance --ins_gamma 32 --train_all',
    '--name ft_ResNet50 --fp16 --train_all',
    '--name ft_ResNet50 --bf16 --train_all',
    '--name ft_ResNet50 --cosine --FSGD --wa --train_all',
    '--name dg --DG --train_all',
    '--name adv --adv 0.1 --aiter 10 --train_all',
    '--name ft_ResNet50 --color_jitter --droprate 0.75 --linear_num 0 --weight_decay 1e-4 --train_all',
]
ORIGINAL_TEST_COMMANDS = [
    '--gpu_ids 0 --name ft_ResNet50 --test_dir your_data_path --batchsize 32 --which_epoch 59',
    '--name PCB-64 --PCB --which_epoch last',
    '--name ft_ResNet50 --multi --ms 1,1.1 --fp16',
    '--name ibn --ibn --usam --use_dense --linear_num 512 --stride 1',
]


@pytest.mark.parametrize('command', ORIGINAL_TRAIN_COMMANDS)
def test_the_original_train_commands_parse_and_resolve(command):
    opts = recipe.resolved_opts(recipe.parse_options(command.split()))
    assert opts.name == command.split('--name ')[1].split()[0]


def test_the_original_test_commands_parse():
    parser = load_test_cli().build_parser()
    for command in ORIGINAL_TEST_COMMANDS:
        parser.parse_args(command.split())


def test_abbreviations_users_type_stay_unambiguous():
    opts = recipe.parse_options(['--total', '100', '--batch', '16', '--warm', '10', '--data', 'd', '--name', 'n',
                                '--wa'])
    assert (opts.total_epoch, opts.batchsize, opts.warm_epoch, opts.data_dir, opts.name, opts.wa) == \
        (100, 16, 10, 'd', 'n', True)
    assert recipe.parse_options(['--use_swin', '--h', '99']).h == 99


# The defaults of the original's train.py (its argparse), which its commands rely on.
ORIGINAL_DEFAULTS = {'gpu_ids': '0', 'name': 'ft_ResNet50', 'data_dir': '../Market/pytorch', 'batchsize': 32,
                     'erasing_p': 0.0, 'lr': 0.05, 'weight_decay': 5e-4, 'total_epoch': 60, 'linear_num': 512,
                     'stride': 2, 'droprate': 0.5, 'warm_epoch': 0, 'ins_gamma': 32, 'adv': 0.0, 'aiter': 10}


def test_the_defaults_are_the_originals():
    """An old command means what it meant: every flag the original has takes the original's default; the backbone
    at x0.1 of --lr as the original's SGD groups."""
    defaults = vars(recipe.build_parser().parse_args([]))
    assert {k: defaults[k] for k in ORIGINAL_DEFAULTS} == ORIGINAL_DEFAULTS
    assert defaults['backbone_lr_mult'] == 0.1 and defaults['wa_start'] == 0.8


def test_snapshots_take_the_originals_names_net_010_after_ten_epochs(tiny_prepared, tmp_path):
    # The original saves save_network(model, name, epoch + 1) when epoch % 10 == 9: net_010.pth after 10 epochs.
    trainer.run_training(tiny_opts(tiny_prepared, tmp_path, '--name', 'ten', '--total_epoch', '10'))
    run = tmp_path / 'ten'
    assert sorted(p.name for p in run.glob('net_0*.pth')) == ['net_010.pth']
    tenth, last = (torch.load(run / n, weights_only=True) for n in ('net_010.pth', 'net_last.pth'))
    assert tenth.keys() == last.keys() and all(torch.equal(tenth[k], last[k]) for k in last)
    assert RunFolder(run).existing_checkpoint('10') == run / 'net_010.pth'


def test_cosine_gives_every_group_the_originals_one_floor():
    # The original: CosineAnnealingLR(optimizer, total_epoch, eta_min=0.01 * lr), stepped once per epoch, over the
    # backbone group (0.1 x lr) and the head group (lr): one floor for both. Reference: torch's own scheduler.
    import warnings
    opts = tiny_opts('d', 'm', '--cosine', '--total_epoch', '6', '--lr', '0.05', '--backbone_lr_mult', '0.1')
    model = build({'backbone': 'resnet18', 'scratch': True}, 5)
    optimizer, _, scheduler = trainer.optimizer_and_scheduler(model, {}, opts, steps_per_epoch=3)
    reference = torch.optim.SGD([{'params': [torch.zeros(1, requires_grad=True)], 'lr': 0.005},
                                 {'params': [torch.zeros(1, requires_grad=True)], 'lr': 0.05}], lr=0.05)
    ref_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(reference, 6, eta_min=0.01 * 0.05)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')   # schedulers stepped without an optimizer step
        for epoch in range(6):
            got = [g['lr'] for g in optimizer.param_groups]
            assert got == pytest.approx([g['lr'] for g in reference.param_groups], rel=1e-9), epoch
            for _ in range(3):
                scheduler.step()
            ref_scheduler.step()
    assert optimizer.param_groups[0]['lr'] == pytest.approx(0.0005 + (0.005 - 0.0005) * (1 + math.cos(math.pi)) / 2)


def test_warm_epoch_scales_the_loss_as_the_original_and_bot_warms_the_learning_rate():
    # The original: warm_up = 0.1; at each step of the first warm_epoch epochs warm_up = min(1, warm_up + 0.9 / W),
    # then loss = loss * warm_up (W = the warm epochs' steps); the learning rate is left alone.
    steps_per_epoch, warm_epoch = 5, 2
    warm_up, expected = 0.1, []
    for step in range(4 * steps_per_epoch):
        if step < warm_epoch * steps_per_epoch:
            warm_up = min(1.0, warm_up + 0.9 / (warm_epoch * steps_per_epoch))
            expected.append(warm_up)
        else:
            expected.append(1.0)
    loss_opts = tiny_opts('d', 'm', '--warm_epoch', str(warm_epoch), '--total_epoch', '4')
    scale = trainer.warm_loss_scale(loss_opts, steps_per_epoch)
    assert [scale(s) for s in range(4 * steps_per_epoch)] == pytest.approx(expected)
    model = build({'backbone': 'resnet18', 'scratch': True}, 5)
    optimizer, _, _ = trainer.optimizer_and_scheduler(model, {}, loss_opts, steps_per_epoch)
    assert [g['lr'] for g in optimizer.param_groups] == pytest.approx([0.001, 0.01])   # not warmed
    bot = recipe.parse_options(['--preset', 'bot', '--total_epoch', '4', '--warm_epoch', '2'])
    assert bot.lr_warmup and trainer.warm_loss_scale(bot, steps_per_epoch) is None
    optimizer, _, _ = trainer.optimizer_and_scheduler(model, {}, bot, steps_per_epoch)
    assert [g['lr'] for g in optimizer.param_groups] == pytest.approx([0.1 * 3.5e-4] * 2)


def test_the_loop_scales_the_loss_and_not_the_weight_decay():
    # One plain SGD step (no momentum) by hand: w - lr * (scale * dL/dw + wd * w).
    from reid.training.loop import train_one_epoch
    from reid.training.state import TrainingState
    from reid.training.terms import SoftmaxTerm
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    images, labels = torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 1])
    start = [p.detach().clone() for p in net.parameters()]
    grads = torch.autograd.grad(F.cross_entropy(net(images), labels), list(net.parameters()))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5, weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    state = TrainingState(net, optimizer, scheduler, nn.ModuleDict())
    state.loss_scale = lambda step: 0.25
    train_one_epoch(net, [(images, labels)], state, [SoftmaxTerm()],
                    SimpleNamespace(device=torch.device('cpu'), amp_dtype=None))
    for p, p0, g in zip(net.parameters(), start, grads):
        torch.testing.assert_close(p.detach(), p0 - 0.5 * (0.25 * g + 0.1 * p0))



class _BodyAndHead(nn.Module):
    """A small stand-in for a re-ID network as the optimizer sees it: a backbone `body` and new layers after it."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.classifier = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 5))


def read_result_with_scipy(path):
    """A result file read with scipy alone: float64 features, flat label and camera rows."""
    import scipy.io
    data = scipy.io.loadmat(path)
    return {k: np.asarray(data[k], np.float64) if k.endswith('_f') else np.asarray(data[k]).ravel()
            for k in ('query_f', 'query_label', 'query_cam', 'gallery_f', 'gallery_label', 'gallery_cam')}


def _random_grads(model, seed, scale):
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = scale * torch.randn(p.shape, generator=g, dtype=p.dtype)


def test_the_seed_recipe_steps_as_the_originals_nesterov_sgd():
    # The original: optim.SGD([{backbone, lr 0.1 * opt.lr}, {classifier, lr opt.lr}], weight_decay=5e-4,
    # momentum=0.9, nesterov=True), lr 0.05. torch's SGD by its definition, written out: d = g + wd * p;
    # buf = d (first step), else 0.9 * buf + d; p -= lr * (d + 0.9 * buf). Three steps, in float64.
    opts = recipe.resolved_opts(recipe.parse_options(['--preset', 'seed']))
    model = _BodyAndHead().double()
    optimizer, _, _ = trainer.optimizer_and_scheduler(model, {}, opts, steps_per_epoch=3)
    lr = {name: 0.005 if name.startswith('body.') else 0.05 for name, _ in model.named_parameters()}
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    bufs = {}
    for step in range(3):
        _random_grads(model, step, 1e-3)
        for name, p in model.named_parameters():
            d = p.grad + 5e-4 * params[name]
            bufs[name] = d if step == 0 else 0.9 * bufs[name] + d
            params[name] = params[name] - lr[name] * (d + 0.9 * bufs[name])
        optimizer.step()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), params[name], rtol=1e-12, atol=1e-14, msg=name)


def test_the_bot_recipe_steps_as_adam_with_l2_weight_decay_at_one_lr():
    # Bag of Tricks: Adam (betas 0.9, 0.999, eps 1e-8), lr 3.5e-4 for every layer (the warm-up, tested above, is
    # left out here), weight decay 5e-4 added to the gradient. torch's Adam by its definition, written out:
    # g' = g + wd * p; m = 0.9 m + 0.1 g'; v = 0.999 v + 0.001 g'^2; p -= lr * (m / (1 - 0.9^t)) /
    # (sqrt(v / (1 - 0.999^t)) + eps). Gradients of the size of the decay, so that the decay moves the step.
    opts = recipe.resolved_opts(recipe.parse_options(['--preset', 'bot', '--warm_epoch', '0']))
    model = _BodyAndHead().double()
    optimizer, _, _ = trainer.optimizer_and_scheduler(model, {}, opts, steps_per_epoch=3)
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    m = {name: torch.zeros_like(p) for name, p in params.items()}
    v = {name: torch.zeros_like(p) for name, p in params.items()}
    for t in (1, 2, 3):
        _random_grads(model, t, 1e-4)
        for name, p in model.named_parameters():
            g = p.grad + 5e-4 * params[name]
            m[name] = 0.9 * m[name] + 0.1 * g
            v[name] = 0.999 * v[name] + 0.001 * g * g
            step = (m[name] / (1 - 0.9 ** t)) / ((v[name] / (1 - 0.999 ** t)).sqrt() + 1e-8)
            params[name] = params[name] - 3.5e-4 * step
        optimizer.step()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), params[name], rtol=1e-12, atol=1e-14, msg=name)
