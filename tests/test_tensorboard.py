"""train.py --tensorboard: the event files read back (tensorboard's own reader) hold, per step, the loss, error,
learning rate and img/s the run used; per epoch the history's figures; final figures; a resume adds no
duplicate steps. Also the epoch line's whole-run ETA (test_train checks that no flag writes no tb/)."""
import re

import pytest

from reid.training import recipe, trainer
from reid.training.loop import lr_factor
from conftest import library_messages
from test_train import tiny_opts


def scalars(log_dir):
    """{tag: [(step, value)]} of every scalar in the event files under log_dir."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={'scalars': 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()['scalars']}


def seconds_of(text):
    """Seconds of a duration as the epoch line prints it ('45s', '3m05s', '2h07m')."""
    h, m, sec = re.fullmatch(r'(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?', text).groups()
    return 3600 * int(h or 0) + 60 * int(m or 0) + int(sec or 0)


def test_tensorboard_events_read_back_and_a_resume_continues_them(tiny_prepared, tmp_path, monkeypatch):
    pytest.importorskip('tensorboard')
    left = []
    eta = trainer.run_eta
    monkeypatch.setattr(trainer, 'run_eta', lambda seconds, epochs_left: left.append(epochs_left) or eta(seconds,
                                                                                                       epochs_left))
    opts = tiny_opts(tiny_prepared, tmp_path, '--name', 'tb', '--total_epoch', '3', '--cosine')
    with library_messages() as lines:
        trainer.run_training(opts, stop_after=1)
        assert not (tmp_path / 'tb' / 'tb').exists()  # nothing without the flag
        resumed = tiny_opts(tiny_prepared, tmp_path, '--name', 'tb', '--total_epoch', '3', '--tensorboard',
                            '--resume')
        trainer.run_training(resumed, stop_after=1)   # the flag can join at a resume
        history = trainer.run_training(resumed)
    tags = scalars(tmp_path / 'tb' / 'tb')
    resolved = recipe.resolved_opts(opts)
    steps = trainer.epoch_steps(trainer.datasets(resolved)[0], resolved)
    assert {'train/loss', 'train/lr', 'train/top1_err', 'train/img_per_s', 'epoch/val_loss', 'epoch/val_err'} <= set(tags)
    assert [s for s, _ in tags['train/loss']] == list(range(steps, 3 * steps))  # each step once, over 2 sessions
    for step, lr in tags['train/lr']:  # the lr the step used: the schedule, independently computed
        assert lr == pytest.approx(0.01 * lr_factor(step, steps, 3, cosine=True), rel=1e-5)
    assert all(0 <= e <= 1 for _, e in tags['train/top1_err']) and all(v > 0 for _, v in tags['train/img_per_s'])
    for key in ('train_loss', 'train_err', 'val_loss', 'val_err'):
        assert tags[f'epoch/{key}'] == [(e + 1, pytest.approx(v, rel=1e-6)) for e, v in enumerate(history[key])][1:]
        assert tags[f'final/{key}'] == [(3, pytest.approx(history[key][-1], rel=1e-6))]
    # the epoch line: the whole run's ETA, this session's mean epoch (one here) times the epochs left
    epochs = [line for line in lines if line.startswith('epoch ')]
    seconds = [float(re.search(r'\| (\d+)s \| run ETA', line).group(1)) for line in epochs]  # '{:.0f}s'
    etas = [seconds_of(re.search(r'run ETA (\S+)$', line).group(1)) for line in epochs]
    assert len(etas) == 3 and etas[2] == 0 and left == [2, 1, 0]  # epochs left in the run, not in the session
    assert abs(etas[0] - 2 * seconds[0]) <= 1.5 and abs(etas[1] - seconds[1]) <= 1
    epoch_means = [sum(v for s, v in tags['train/loss'] if e * steps <= s < (e + 1) * steps) / steps for e in (1, 2)]
    assert epoch_means == pytest.approx(history['train_loss'][1:], rel=1e-4)  # equal batches: the mean of step losses


def test_durations_read_as_the_epoch_line_prints_them():
    assert [trainer.duration_text(s) for s in (0.4, 59, 61, 3599, 3600, 7620)] == ['0s', '59s', '1m01s', '59m59s',
                                                                                     '1h00m', '2h07m']
    assert trainer.run_eta([10, 20], 4) == 60 and trainer.run_eta([], 3) == 0
    assert [seconds_of(t) for t in ('0s', '1m01s', '2h07m')] == [0, 61, 7620]


def test_test_py_adds_the_retrieval_figures_to_a_run_with_tensorboard(tiny_prepared, tmp_path, capsys):
    """test.py on a run trained with --tensorboard: final/Rank@k, mAP, mINP at the tested epoch, equal to what it
    printed into result.txt; a run without tb/ gets none."""
    pytest.importorskip('tensorboard')
    from conftest import load_test_cli
    test_cli = load_test_cli()
    for name, flags in (('board', ['--tensorboard']), ('plain', [])):
        trainer.run_training(tiny_opts(tiny_prepared, tmp_path, '--name', name, '--total_epoch', '2', *flags))
        test_cli.main(['--name', name, '--model_dir', str(tmp_path), '--test_dir', str(tiny_prepared),
                       '--num_workers', '0', '--result', str(tmp_path / f'{name}.mat')])
    assert not (tmp_path / 'plain' / 'tb').exists()
    printed = (tmp_path / 'board' / 'result.txt').read_text()
    figures = dict(re.findall(r'(Rank@\d+|mAP|mINP):([0-9.]+)', printed))
    tags = scalars(tmp_path / 'board' / 'tb')
    for key in ('Rank@1', 'Rank@5', 'Rank@10', 'mAP', 'mINP'):
        assert tags[f'final/{key}'] == [(2, pytest.approx(float(figures[key]), abs=1e-6))]
    assert 'figures added to' in capsys.readouterr().out
