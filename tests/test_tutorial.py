"""Runs every command of tutorial/README.md, and quickstart.sh, the way a newcomer types them.

For speed the data set is the tiny one and training lasts one epoch: the only edits to the commands are
`--size demo` -> `--size tiny`, `--total_epoch N` -> `--total_epoch 1` and `--query_index 777` -> `7` (the tiny
set has fewer queries). This machine is offline with no ImageNet weights, so a train.py command that needs them
must fail with the clear message; it is then re-run from scratch with a small network so the next steps have a run.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = re.compile(r'^python (\w+\.py)')


def tutorial_commands():
    """Return the lines of the ```bash blocks of tutorial/README.md, in order."""
    text = (REPO / 'tutorial' / 'README.md').read_text()
    blocks = re.findall(r'```bash\n(.*?)```', text, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def fast_version(command):
    command = command.replace('--size demo', '--size tiny').replace('--query_index 777', '--query_index 7')
    return re.sub(r'--total_epoch \d+', '--total_epoch 1', command)


def run(command, cwd, env):
    script = SCRIPT.match(command)
    assert script, f'tutorial command is not `python <script>.py ...`: {command}'
    argv = [sys.executable, str(REPO / script.group(1))] + command.split()[2:]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def offline_env(tmp_path):
    env = dict(os.environ, TORCH_HOME=str(tmp_path / 'torch_home'), MPLBACKEND='Agg', PYTHONUNBUFFERED='1')
    return env


def test_every_tutorial_command_runs(tiny_market, tmp_path, offline_env):
    commands = tutorial_commands()
    assert len(commands) >= 8
    work = tmp_path / 'work'
    work.mkdir()
    shutil.copytree(tiny_market, tmp_path / 'Market')  # the real-data section reads ../Market
    for command in map(fast_version, commands):
        done = run(command, work, offline_env)
        # --preset quick trains from scratch too; any other train.py command here needs ImageNet weights
        if command.startswith('python train.py') and not {'--scratch', 'quick'} & set(command.split()):
            assert done.returncode != 0 and 'ImageNet' in done.stderr + done.stdout, done.stderr[-2000:]
            done = run(command + ' --scratch --backbone resnet18 --h 64 --w 32 --total_epoch 1', work, offline_env)
        assert done.returncode == 0, f'{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}'
        if command.startswith('python test.py') or command.startswith('python evaluate_gpu.py'):
            assert re.search(r'Rank@1:[\d.]+ Rank@5:[\d.]+ Rank@10:[\d.]+ mAP:[\d.]+', done.stdout), done.stdout
    heatmap_mass_is_on_the_person(work, tmp_path / 'boxes')
    for path in ('model/demo/opts.yaml', 'model/demo/net_last.pth', 'model/demo/train.jpg', 'show.png', 'heatmap.png',
                 'results/index.html', 'results/cmc.png',
                 'pytorch_result.mat', 'multi_query.mat', 'init_result.mat', 'model/ft_ResNet50/net_last.pth'):
        assert (work / path).is_file(), path


def heatmap_mass_is_on_the_person(work, boxes_dir):
    """The tutorial's trained run: its heatmaps put more of their mass inside each person's box than the box's
    share of the image. The boxes come from the generator's side file for the same (seed, size), whose images are
    checked to be the tutorial's own. Measured: 1.34x here (tiny set, one epoch; 1.29x untrained), 1.15x when the
    quick preset trained at 64x32 (a 4x2 map). The quick start's own run is tests/test_quickstart_run.py."""
    from reid.api import ReIDRun
    from reid.data import synthetic
    from reid.evaluation.heatmap import person_box_figures

    synthetic.make_dataset(boxes_dir, size='tiny', seed=0, boxes=True)
    for rel in list(synthetic.read_person_boxes(boxes_dir))[::25]:
        assert (boxes_dir / rel).read_bytes() == (work / 'data' / 'demo' / rel).read_bytes(), rel
    f = person_box_figures(ReIDRun(work / 'model' / 'demo', device='cpu', backend='torch'), work / 'data/demo/pytorch', boxes_dir)
    assert f['images'] >= 50 and f['mass'] > 1.25 * f['area'], f


def test_quickstart_script_runs_end_to_end(tmp_path, offline_env):
    copy = tmp_path / 'repo'
    copy.mkdir()
    for path in list(REPO.glob('*.py')) + [REPO / 'quickstart.sh']:
        shutil.copy2(path, copy / path.name)
    shutil.copytree(REPO / 'reid', copy / 'reid', ignore=shutil.ignore_patterns('__pycache__'))
    env = dict(offline_env, SIZE='tiny', EPOCHS='1', PYTHON=sys.executable)
    done = subprocess.run(['bash', str(copy / 'quickstart.sh')], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.count('Rank@1:') >= 3  # test.py, then evaluate_gpu.py single + multi/rerank
    assert (copy / 'show.png').is_file() and (copy / 'model' / 'demo_tiny' / 'net_last.pth').is_file()
