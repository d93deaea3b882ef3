"""Tests of runs.py: opts.yaml round trip, atomic checkpoints, RNG state capture, curves, device choice."""
import io
import os
import random
from argparse import Namespace

import numpy as np
import pytest
import torch
import yaml

from reid import runs
from reid import runtime
from reid.training import curves


def test_opts_yaml_round_trip_keeps_every_value(tmp_path):
    opts = Namespace(name='run', lr=0.05, PCB=False, stride=1, h=None, gpu_ids='0,1', erasing_p=0.5)
    runs.save_opts(opts, tmp_path / 'run' / 'opts.yaml')
    loaded = runs.load_opts(tmp_path / 'run' / 'opts.yaml')
    assert loaded == vars(opts)
    with open(tmp_path / 'run' / 'opts.yaml') as f:  # plain YAML any reader understands
        assert yaml.safe_load(f)['gpu_ids'] == '0,1'


def test_load_opts_names_a_missing_or_bad_file(tmp_path):
    with pytest.raises(ValueError, match='opts.yaml'):
        runs.load_opts(tmp_path / 'opts.yaml')
    (tmp_path / 'opts.yaml').write_text('- just\n- a list\n')
    with pytest.raises(ValueError, match='mapping'):
        runs.load_opts(tmp_path / 'opts.yaml')


def test_atomic_save_round_trips_and_leaves_no_temporary_file(tmp_path):
    state = {'w': torch.arange(6.0).view(2, 3), 'epoch': 3, 'history': {'loss': [1.0, 0.5]}}
    runs.save_atomic(state, tmp_path / 'ck' / 'resume.pth')
    runs.save_atomic(state, tmp_path / 'ck' / 'resume.pth')  # replacing an existing file works too
    assert [p.name for p in (tmp_path / 'ck').iterdir()] == ['resume.pth']
    loaded = runs.load_checkpoint(tmp_path / 'ck' / 'resume.pth')
    assert torch.equal(loaded['w'], state['w']) and loaded['history'] == state['history']
    with pytest.raises(ValueError, match='not found'):
        runs.load_checkpoint(tmp_path / 'missing.pth')


@pytest.mark.parametrize('failure', [KeyboardInterrupt, RuntimeError, OSError])
def test_a_write_interrupted_midway_keeps_the_previous_file(tmp_path, monkeypatch, failure):
    """torch.save writes part of the new file, then fails (Ctrl-C, an error, a full disk): the old file survives,
    whole, and no temporary file is left. A plain torch.save(obj, path) fails this test."""
    path = tmp_path / 'net_last.pth'
    runs.save_atomic({'w': torch.ones(4)}, path)
    before = path.read_bytes()
    real_save = torch.save

    def save_half_then_fail(obj, f, *args, **kwargs):
        handle = open(f, 'wb') if isinstance(f, (str, bytes, os.PathLike)) else f
        buf = io.BytesIO()
        real_save(obj, buf)
        handle.write(buf.getvalue()[:len(buf.getvalue()) // 2])
        handle.flush()
        raise failure('interrupted midway')
    monkeypatch.setattr(torch, 'save', save_half_then_fail)
    with pytest.raises((failure, ValueError)):
        runs.save_atomic({'w': torch.zeros(4)}, path)
    monkeypatch.setattr(torch, 'save', real_save)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ['net_last.pth']
    assert torch.equal(runs.load_checkpoint(path)['w'], torch.ones(4))


def test_rng_states_survive_a_weights_only_checkpoint(tmp_path):
    runs.seed_everything(5)
    runs.save_atomic({'rng': runs.rng_states()}, tmp_path / 'rng.pth')
    first = (random.random(), np.random.rand(), torch.rand(3))
    runs.seed_everything(123)  # move every generator somewhere else
    runs.restore_rng_states(runs.load_checkpoint(tmp_path / 'rng.pth')['rng'])
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == again[0] and first[1] == again[1] and torch.equal(first[2], again[2])


def test_draw_curves_writes_an_image(tmp_path):
    from PIL import Image
    curves.draw_curves({'train_loss': [3.0, 2.0, 1.5], 'train_err': [0.9, 0.7, 0.5],
                         'val_loss': [], 'val_err': []}, tmp_path / 'train.jpg')
    with Image.open(tmp_path / 'train.jpg') as img:
        assert img.format == 'JPEG' and img.width > 100


def test_cpu_only_machine_ignores_gpu_ids_with_a_note(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    device, note = runtime.select_device('0')
    assert device == torch.device('cpu') and '--gpu_ids 0' in note
    assert runtime.select_device('') == (torch.device('cpu'), None)
    with pytest.raises(ValueError, match="--gpu_ids a: expected GPU numbers"):
        runtime.select_device('a')


def test_loader_workers_default_depends_on_the_device():
    assert runtime.loader_workers(None, torch.device('cpu')) == 0
    assert runtime.loader_workers(None, torch.device('cuda', 0)) == 2
    assert runtime.loader_workers(3, torch.device('cpu')) == 3
