"""Use a trained run from Python: load it once, turn images into features, search a gallery (exact or faiss).

    from api import ReIDRun, search
    run = ReIDRun('model/demo')                     # opts.yaml + net_last.pth (this toolkit's or the original's)
    gallery = run.features(['a.jpg', 'b.jpg'])      # paths, PIL images or a normalised [N, 3, h, w] batch
    scores, index = search(run.features(['q.jpg']), gallery, k=10)
"""
from pathlib import Path

import torch

import original
from model import build_model, fuse_conv_bn, flip_sum_features, l2_normalize_features
from utils import load_checkpoint, load_opts

SEARCH_BLOCK = 65536  # gallery rows per block of the exact search: bounded memory for any gallery


class FeatureExtractor(torch.nn.Module):
    """A network wrapped to the feature contract: images [N, 3, h, w] (normalised) -> flip-summed, L2-normalised
    features [N, D] (PCB: D = parts x 2048), exactly what test.py saves. This is what export.py writes."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return l2_normalize_features(flip_sum_features(self.model, images))


def checkpoint_path(run_dir, which_epoch):
    """Return the checkpoint file `--which_epoch` names: net_last.pth, net_init.pth or net_XXX.pth."""
    if which_epoch in ('last', 'init'):
        return Path(run_dir) / f'net_{which_epoch}.pth'
    if not str(which_epoch).isdigit():
        raise ValueError(f"--which_epoch {which_epoch}: expected 'last', 'init' or an epoch number")
    return Path(run_dir) / f'net_{int(which_epoch):03d}.pth'


def image_size(opts):
    """Return the (h, w) a run was trained at (opts.yaml `h`/`w`; else 256x128, PCB 384x192, as the original)."""
    pcb = bool(opts.get('PCB'))
    return int(opts.get('h') or (384 if pcb else 256)), int(opts.get('w') or (192 if pcb else 128))


def load_network(run_dir, which_epoch='last'):
    """Return (model in eval mode on the CPU, model options) of a run: the one place checkpoints become networks.

    Reads `opts.yaml` and the checkpoint; a run of the original repository (its parameter names) is converted
    (original.py) so it gives the features the original would.
    """
    run_dir = Path(run_dir)
    opts_path = run_dir / 'opts.yaml'
    opts = load_opts(opts_path)
    if 'nclasses' not in opts:
        raise ValueError(f'{opts_path}: no nclasses entry (was it written by train.py?)')
    state = load_checkpoint(checkpoint_path(run_dir, which_epoch))
    is_original = original.is_original_state_dict(state)
    if is_original:
        opts = original.convert_opts(opts, opts_path)
        state = original.convert_state_dict(state)
    model = build_model(opts, int(opts['nclasses']), pretrained=False)
    if is_original:
        original.adapt_model(model, opts)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ValueError(f'{checkpoint_path(run_dir, which_epoch)}: does not fit the network of {opts_path} '
                         f'({first})') from None
    return model.eval(), opts
