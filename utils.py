"""Plumbing shared by train.py and test.py: device choice, atomic checkpoints, opts.yaml, RNG states, curves.

The checkpoint format lives here: `net_*.pth` is a plain model state_dict (as the original writes it) and
`resume.pth` holds everything needed to continue a run (see `training_state` in train.py).
"""
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml


def select_device(gpu_ids=''):
    """Return (torch.device, note): the first id of `gpu_ids` ('0' or '0,1') when CUDA exists, else the CPU.

    `note` is None or a sentence the CLI prints (ignored ids on CPU, extra ids unused).
    """
    try:
        ids = [int(s) for s in str(gpu_ids or '').replace(' ', '').split(',') if s.strip() not in ('', '-1')]
    except ValueError:
        raise ValueError(f"--gpu_ids {gpu_ids}: expected GPU numbers such as '0' or '0,1'") from None
    if not torch.cuda.is_available():
        note = f'CUDA is not available: --gpu_ids {gpu_ids} ignored, running on the CPU' if ids else None
        return torch.device('cpu'), note
    if not ids:
        return torch.device('cuda', 0), None
    if ids[0] >= torch.cuda.device_count():
        raise ValueError(f'--gpu_ids {gpu_ids}: only {torch.cuda.device_count()} CUDA device(s) present')
    note = f'--gpu_ids {gpu_ids}: one process uses one GPU, running on cuda:{ids[0]}' if len(ids) > 1 else None
    return torch.device('cuda', ids[0]), note


def loader_workers(requested, device):
    """Return the DataLoader worker count: `requested`, or by default 2 with CUDA and 0 on the CPU, where
    worker processes would compete with the network for the same few cores."""
    if requested is not None:
        return requested
    return 2 if device.type == 'cuda' else 0


def save_atomic(obj, path):
    """torch.save `obj` to `path` through a temporary file in the same folder, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + '.', suffix='.tmp', dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path, map_location='cpu'):
    """Return the object saved at `path` (torch.load with weights_only=True); ValueError naming a missing file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f'{path}: checkpoint not found')
    return torch.load(path, map_location=map_location, weights_only=True)


def save_opts(opts, path):
    """Write every option of a run (a Namespace or dict of plain values) to a YAML file."""
    values = dict(vars(opts) if not isinstance(opts, dict) else opts)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'w') as f:
        yaml.safe_dump(values, f, default_flow_style=False, sort_keys=True)


def load_opts(path):
    """Return the dict stored in an opts.yaml; ValueError naming the file when it is missing or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f'{path}: opts.yaml not found (train with --name first, or check --name/--model_dir)')
    with open(path) as f:
        values = yaml.safe_load(f)
    if not isinstance(values, dict):
        raise ValueError(f'{path}: expected a mapping of option names to values')
    return values


def rng_states():
    """Return the states of python `random`, numpy and torch (CPU and CUDA) as weights_only-loadable values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        'python': random.getstate(),
        'numpy': {'kind': kind, 'keys': torch.from_numpy(keys.astype(np.int64)), 'pos': int(pos),
                  'has_gauss': int(has_gauss), 'cached_gaussian': float(cached)},
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states):
    """Put back the generator states captured by `rng_states`."""
    version, internal, gauss = states['python']
    random.setstate((version, tuple(internal), gauss))
    n = states['numpy']
    np.random.set_state((n['kind'], n['keys'].numpy().astype(np.uint32), n['pos'], n['has_gauss'],
                         n['cached_gaussian']))
    torch.set_rng_state(states['torch'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])


def seed_everything(seed):
    """Seed python `random`, numpy and torch so a run is repeatable."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def draw_curves(history, path):
    """Save the loss and top-1 error curves (train and, when present, val) per epoch as an image.

    `history` maps 'train_loss', 'train_err', 'val_loss', 'val_err' to per-epoch lists (val lists may be empty).
    """
    # Figure without pyplot: no global backend switch, works headless (Agg canvas).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4))
    FigureCanvasAgg(fig)
    for i, (key, title) in enumerate((('loss', 'loss'), ('err', 'top1err'))):
        ax = fig.add_subplot(1, 2, i + 1, title=title)
        for phase, style in (('train', 'bo-'), ('val', 'ro-')):
            values = history.get(f'{phase}_{key}', [])
            if values:
                ax.plot(range(1, len(values) + 1), values, style, label=phase, markersize=3)
        if key == 'loss':
            ax.set_yscale('log')  # a scratch network's first val loss can be 100x the rest
        ax.set_xlabel('epoch')
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def copy_code(src_dir, dst_dir):
    """Copy the top-level .py files of `src_dir` into `dst_dir`, so a run keeps the code that produced it."""
    dst_dir = Path(dst_dir)
    dst_dir.mkdir(parents=True, exist_ok=True)
    for src in sorted(Path(src_dir).glob('*.py')):
        shutil.copy2(src, dst_dir / src.name)
