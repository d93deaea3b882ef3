"""A run folder, model/<name>/: its files and their formats, known here only. opts.yaml (the recipe, and under
`runtime` what each session ran on), net_*.pth (a plain model state_dict, as the original writes it: net_last,
net_init, net_average and every 10th epoch's net_XXX), resume.pth (everything needed to continue), train.jpg,
result.txt, tb/ (TensorBoard events, --tensorboard), threshold.yaml (the calibrated "same identity?" score
threshold) and the copy of the code that trained it; atomic writes and weights-only loading.
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


# Written into opts.yaml ('format_version') and resume.pth ('format'): a run written by a newer toolkit is refused.
FORMAT_VERSION = 1
TMP_SUFFIX = '.tmp'
OPTS_FILE, RESUME_FILE, CURVES_FILE, RESULT_FILE = 'opts.yaml', 'resume.pth', 'train.jpg', 'result.txt'
TENSORBOARD_DIR, THRESHOLD_FILE = 'tb', 'threshold.yaml'
NAMED_CHECKPOINTS = ('last', 'init', 'average')   # net_last.pth, net_init.pth, net_average.pth (--wa)
SNAPSHOT_EVERY = 10                               # net_XXX.pth after every 10th epoch, XXX = epochs done
RUNTIME_KEY = 'runtime'                           # opts.yaml: one entry per session, what it ran on
# Keys of runs written before the runtime had its own entry: the machine's choices, not requests.
_OLD_MACHINE_KEYS = ('cpu_bf16_reason',)


def non_finite_entry(obj, prefix=''):
    """Return the dotted name of the first floating tensor in `obj` (nested dicts, lists, tuples) that holds a
    NaN or an infinity, or None when every tensor is finite."""
    if isinstance(obj, torch.Tensor):
        return prefix or '(tensor)' if obj.is_floating_point() and not bool(torch.isfinite(obj).all()) else None
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for key, value in items:
        found = non_finite_entry(value, f'{prefix}.{key}' if prefix else str(key))
        if found:
            return found
    return None


class NonFiniteValues(ValueError):
    """Weights (or optimizer state) with NaN or infinity: never saved; the message names the tensor."""


def save_atomic(obj, path):
    """torch.save `obj` to `path` through a temporary file in the same folder, so a crash never leaves half a file.

    Temporary files of `path` left by a killed process are removed first. When the write fails (a full disk),
    the temporary file is removed and ValueError names the file; the previous `path` is untouched. An `obj`
    with a non-finite tensor is refused (NonFiniteValues naming it) before anything is written.
    """
    path = Path(path)
    broken = non_finite_entry(obj)
    if broken:
        kept = 'the previous file is unchanged' if path.exists() else 'nothing was written'
        raise NonFiniteValues(f'{path}: not written, {broken} holds NaN or infinite values; {kept}')
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


def save_opts(opts, path):
    """Write every option of a run (a Namespace or dict of plain values) to a YAML file."""
    values = dict(vars(opts) if not isinstance(opts, dict) else opts)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(values, f, default_flow_style=False, sort_keys=True)


def read_yaml(path):
    """Return the YAML document in `path` (yaml.safe_load); ValueError naming the file when it is not valid YAML."""
    try:
        with open(path, encoding='utf-8') as f:
            return yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f'{path}: not valid YAML ({str(err).splitlines()[0]})') from None


def load_opts(path):
    """Return the dict stored in an opts.yaml; ValueError naming the file when it is missing or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f'{path}: opts.yaml not found (train with --name first, or check --name/--model_dir)')
    values = read_yaml(path)
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


def _copy_code(src_dir, dst_dir):
    """Copy the commands (the top-level .py files of `src_dir`) and the reid/ package into `dst_dir`, so a run
    keeps the code that produced it."""
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    dst_dir.mkdir(parents=True, exist_ok=True)
    for src in sorted(src_dir.glob('*.py')) + sorted((src_dir / 'reid').rglob('*.py')):
        dst = dst_dir / src.relative_to(src_dir)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


class RunFolder:
    """model/<name>: the one place that knows a run's file names, opts.yaml's layout and resume.pth's keys."""

    def __init__(self, path):
        self.path = Path(path)
        self.opts_file, self.resume_file = self.path / OPTS_FILE, self.path / RESUME_FILE
        self.curves_file, self.result_file = self.path / CURVES_FILE, self.path / RESULT_FILE
        self.tensorboard_dir, self.threshold_file = self.path / TENSORBOARD_DIR, self.path / THRESHOLD_FILE

    def __repr__(self):
        return f'RunFolder({str(self.path)!r})'

    def exists(self):
        """True when a run was started here (its opts.yaml exists)."""
        return self.opts_file.exists()

    def checkpoint(self, which_epoch='last'):
        """Return the checkpoint file `--which_epoch` names: net_last.pth, net_init.pth, net_average.pth (--wa) or
        net_XXX.pth, the weights after XXX epochs (net_010.pth after the tenth, as the original names them).

        Runs saved before snapshots took the original's names hold net_009.pth for the same weights: asked for
        10, such a run answers with its net_009.pth.
        """
        if which_epoch in NAMED_CHECKPOINTS:
            return self.path / f'net_{which_epoch}.pth'
        if not str(which_epoch).isdigit():
            raise ValueError(f"--which_epoch {which_epoch}: expected 'last', 'init', 'average' or an epoch number")
        path = self.path / f'net_{int(which_epoch):03d}.pth'
        earlier_name = self.path / f'net_{int(which_epoch) - 1:03d}.pth'
        if not path.exists() and int(which_epoch) % SNAPSHOT_EVERY == 0 and earlier_name.exists():
            return earlier_name
        return path

    def export_file(self, which_epoch, suffix):
        """Return export.py's default output for `--which_epoch` (net_last.onnx, net_9.pt, ...)."""
        return self.path / f'net_{which_epoch}{suffix}'

    @staticmethod
    def snapshot_due(epoch):
        """True when the weights at the end of 0-based `epoch` are kept, as net_<epoch + 1>.pth."""
        return epoch % SNAPSHOT_EVERY == SNAPSHOT_EVERY - 1

    def saved_epochs(self):
        """Return the --which_epoch values with a checkpoint here: 'last', 'init', 'average', then the epochs."""
        names = {p.name[4:-4] for p in self.path.glob('net_*.pth')}
        return ([n for n in NAMED_CHECKPOINTS if n in names]
                + sorted((str(int(n)) for n in names if n.isdigit()), key=int))

    def existing_checkpoint(self, which_epoch='last'):
        """Return checkpoint(which_epoch); ValueError listing the epochs saved when it is missing."""
        path = self.checkpoint(which_epoch)
        if not path.is_file():
            raise ValueError(f'{path}: checkpoint not found; --which_epoch can be '
                             + (', '.join(self.saved_epochs()) or 'nothing yet (no net_*.pth in this run)'))
        return path

    def read_opts(self):
        """Return the whole opts.yaml (recipe, nclasses, runtime entries); ValueError naming the file."""
        return load_opts(self.opts_file)

    def recipe(self):
        """Return opts.yaml without what the machines chose: the options to continue the run with.

        Runs written before the runtime had its own entry recorded the choice of bf16 autocast in `bf16`;
        where their `cpu_bf16_reason` shows the machine chose it ('auto: ...'), it was no request.
        """
        values = self.read_opts()
        values.pop(RUNTIME_KEY, None)
        reason = str(values.get('cpu_bf16_reason', ''))
        if reason.startswith('auto') and values.get('bf16'):
            values['bf16'] = False
        for key in _OLD_MACHINE_KEYS:
            values.pop(key, None)
        values.setdefault('lr_warmup', True)   # runs from before --lr_warmup warmed the learning rate up
        return values

    def runtimes(self):
        """Return the runtime entries of opts.yaml, one per session (start, then each --resume)."""
        return list(self.read_opts().get(RUNTIME_KEY) or [])

    def write_opts(self, recipe, runtimes=()):
        """Write opts.yaml: the recipe's keys, and the sessions' runtime entries under `runtime`."""
        values = {k: v for k, v in dict(recipe).items() if k != RUNTIME_KEY}
        save_opts({**values, RUNTIME_KEY: list(runtimes)}, self.opts_file)

    def add_runtime(self, entry):
        """Append one session's runtime entry to opts.yaml (--resume: what the resumed session runs on)."""
        values = self.read_opts()
        save_opts({**values, RUNTIME_KEY: list(values.get(RUNTIME_KEY) or []) + [entry]}, self.opts_file)

    def start(self, recipe, runtime_entry, code_dir):
        """Begin a new run here: the folder made writable, net_*.pth of a replaced run removed (they must not mix
        with this run's), opts.yaml written, the code copied (the commands and the reid package of `code_dir`)."""
        ensure_writable_folder(self.path, '--model_dir/--name')
        for stale in self.path.glob('net_*.pth'):
            stale.unlink()
        self.write_opts(dict(recipe, format_version=FORMAT_VERSION), [runtime_entry])
        _copy_code(code_dir, self.path)

    def write_threshold(self, entry):
        """Write threshold.yaml atomically: the same-identity threshold of this run (verification.threshold_entry:
        far, threshold, tar, auc, calibrated_on, pairs, accept)."""
        self.read_threshold(entry=entry)  # refuse to write what could not be read back
        tmp = self.threshold_file.with_name(self.threshold_file.name + TMP_SUFFIX)
        with open(tmp, 'w', encoding='utf-8') as f:
            yaml.safe_dump(dict(entry), f, sort_keys=False)
        os.replace(tmp, self.threshold_file)
        return self.threshold_file

    def read_threshold(self, entry=None):
        """Return threshold.yaml as a dict with float 'far' (in (0, 1)) and 'threshold'; ValueError naming the file
        when it is missing or malformed (`entry`: check that dict instead of reading the file)."""
        path = self.threshold_file
        if entry is None:
            if not path.is_file():
                raise ValueError(f'{path}: no calibrated threshold (run test.py --calibrate, or evaluate_gpu.py '
                                 '--verify --save_threshold)')
            entry = read_yaml(path)
        if not isinstance(entry, dict):
            raise ValueError(f'{path}: expected a mapping with far and threshold')
        try:
            far, threshold = float(entry['far']), float(entry['threshold'])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f'{path}: needs numeric far and threshold entries ({type(err).__name__}: {err})') from None
        if not 0 < far < 1 or not np.isfinite(threshold):
            raise ValueError(f'{path}: far {far} must lie in (0, 1) and threshold {threshold} be finite')
        return {**entry, 'far': far, 'threshold': threshold}

    def save(self, obj, name):
        """Write `obj` to the file `name` here atomically (save_atomic); return its path."""
        save_atomic(obj, self.path / name)
        return self.path / name

    def save_weights(self, state_dict, which_epoch):
        """Write a model state_dict as the checkpoint `which_epoch` names (checkpoint())."""
        save_atomic(state_dict, self.checkpoint(which_epoch))

    def read_resume_state(self, classes=None):
        """Return resume.pth (on the CPU), checked: ValueError naming the file when it is not one, was written by
        a newer toolkit, or for other ids than `classes` (the training id folders)."""
        path = self.resume_file
        # CPU first: RNG states must stay CPU tensors; load_state_dict moves the rest to the model's device.
        state = load_checkpoint(path, map_location='cpu')
        if not isinstance(state, dict) or 'model' not in state or 'epoch' not in state:
            raise ValueError(f'{path}: not a resume.pth written by train.py')
        if int(state.get('format', 0) or 0) > FORMAT_VERSION:
            raise ValueError(f'{path}: written by a newer version of this toolkit (format {state["format"]}); '
                             'update the code')
        saved = state.get('classes')
        if saved is not None and classes is not None and list(saved) != list(classes):
            extra, lost = sorted(set(classes) - set(saved)), sorted(set(saved) - set(classes))
            raise ValueError(f'{path}: the run was trained on {len(saved)} ids, --data_dir now has {len(classes)} '
                             f'(new: {extra[:5]}, missing: {lost[:5]}); resume with the original --data_dir '
                             f'or start a new --name')
        return state

    def completed_epochs(self):
        """Return the epochs resume.pth holds, or None when it cannot be read."""
        try:
            return int(load_checkpoint(self.resume_file)['epoch'])
        except (ValueError, KeyError, TypeError):
            return None
