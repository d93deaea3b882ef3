"""Plumbing shared by train.py and test.py: device choice, atomic checkpoints, opts.yaml, RNG states, curves.

The checkpoint format lives here: `net_*.pth` is a plain model state_dict (as the original writes it) and
`resume.pth` holds everything needed to continue a run (see `training_state` in train.py).
"""
import glob
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


# Written into opts.yaml ('format_version') and resume.pth ('format'): a run written by a newer toolkit is refused.
FORMAT_VERSION = 1
TMP_SUFFIX = '.tmp'


def save_atomic(obj, path):
    """torch.save `obj` to `path` through a temporary file in the same folder, so a crash never leaves half a file.

    Temporary files of `path` left by a killed process are removed first. When the write fails (a full disk),
    the temporary file is removed and ValueError names the file; the previous `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f'{glob.escape(path.name)}.*{TMP_SUFFIX}'):  # from a kill -9 mid-write
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + '.', suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        kept = 'the previous file is unchanged' if path.exists() else 'nothing was written'
        raise ValueError(f'{path}: could not be written ({err.strerror or err}); {kept}') from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path, map_location='cpu'):
    """Return the object saved at `path` (torch.load with weights_only=True).

    ValueError naming the file when it is missing, truncated or corrupt, or holds anything but tensors and plain
    values (a crafted pickle is refused before any of its code can run).
    """
    import pickle

    path = Path(path)
    if not path.is_file():
        raise ValueError(f'{path}: checkpoint not found')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f'{path}: refused, it holds Python objects other than tensors and plain values '
                         '(loading them could run code); only weights saved by this toolkit are loaded') from None
    except Exception as err:  # torch raises RuntimeError, EOFError, ... for a damaged file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f'{path}: not a readable checkpoint, truncated or corrupt ({reason})') from None


def load_weights(model, state, path):
    """Load the state_dict `state` (read from `path`) into `model`; ValueError naming the file when the network
    it was saved from differs (other backbone, layer sizes or number of classes)."""
    if not isinstance(state, dict):
        raise ValueError(f'{path}: not a state_dict of network weights')
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    resized = [k for k in own if k in state and getattr(state[k], 'shape', None) != own[k].shape]
    if missing or unexpected or resized:
        example = (f'{resized[0]} {tuple(getattr(state[resized[0]], "shape", ()))} vs {tuple(own[resized[0]].shape)}'
                   if resized else (missing + unexpected)[0])
        raise ValueError(f'{path}: saved from a different network than its opts.yaml describes ({len(missing)} '
                         f'missing, {len(unexpected)} unexpected, {len(resized)} resized tensors, e.g. {example})')
    model.load_state_dict(state)


def ensure_writable_folder(folder, flag):
    """Create `folder` if needed and check it can be written; ValueError naming `flag` and the path otherwise.

    Called before long work, so a typo in an output path fails at once, not after hours of training.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f'{flag} {folder}: {existing} is a file, not a folder; choose another path')
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f'{flag} {folder}: cannot create this folder ({err.strerror or err})') from None
    if not os.access(folder, os.W_OK):
        raise ValueError(f'{flag} {folder}: folder is not writable; choose another path')


def os_error_line(err):
    """Return one line for an OSError: the file it concerns and the system's reason."""
    reason = err.strerror or str(err)
    return f'{err.filename}: {reason}' if err.filename is not None else reason


def save_opts(opts, path):
    """Write every option of a run (a Namespace or dict of plain values) to a YAML file."""
    values = dict(vars(opts) if not isinstance(opts, dict) else opts)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(values, f, default_flow_style=False, sort_keys=True)


def load_opts(path):
    """Return the dict stored in an opts.yaml; ValueError naming the file when it is missing or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f'{path}: opts.yaml not found (train with --name first, or check --name/--model_dir)')
    try:
        with open(path, encoding='utf-8') as f:
            values = yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f'{path}: not valid YAML ({str(err).splitlines()[0]})') from None
    if not isinstance(values, dict):
        raise ValueError(f'{path}: expected a mapping of option names to values')
    if int(values.get('format_version', 0) or 0) > FORMAT_VERSION:
        raise ValueError(f'{path}: written by a newer version of this toolkit (format {values["format_version"]}, '
                         f'this one reads up to {FORMAT_VERSION}); update the code')
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
    """Copy the commands (the top-level .py files of `src_dir`) and the reid/ package into `dst_dir`, so a run
    keeps the code that produced it."""
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    dst_dir.mkdir(parents=True, exist_ok=True)
    for src in sorted(src_dir.glob('*.py')) + sorted((src_dir / 'reid').rglob('*.py')):
        dst = dst_dir / src.relative_to(src_dir)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
