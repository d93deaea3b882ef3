"""Where checkpoints become networks: a run folder's opts.yaml and checkpoint (this toolkit's, or the original
repository's with its parameter names) -> the network in eval mode, its spec and its options.
"""
from reid.models import original
from reid.models.heads import build_model
from reid.runs import RunFolder, load_checkpoint
from reid.spec import NetworkSpec

DETAIL_CHARS = 300   # how much of a library's error message a one-line reason quotes


def load_network(run_dir, which_epoch='last'):
    """Return (model in eval mode on the CPU, its NetworkSpec, the run's opts.yaml) of a run: the one place
    checkpoints become networks.

    Reads `opts.yaml` and the checkpoint; a run of the original repository (its parameter names) is converted
    (reid.models.original) so it gives the features the original would.
    """
    run = RunFolder(run_dir)
    opts = run.read_opts()
    if 'nclasses' not in opts:
        raise ValueError(f'{run.opts_file}: no nclasses entry (was it written by train.py?)')
    path = run.checkpoint(which_epoch)
    state = load_checkpoint(path)
    is_original = original.is_original_state_dict(state)
    if is_original:
        spec = original.original_spec(opts, run.opts_file)
        state = original.convert_state_dict(state)
    else:
        spec = NetworkSpec.from_opts(opts)
    model = build_model(spec, int(opts['nclasses']), pretrained=False)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        detail = ' '.join(line.strip() for line in str(e).splitlines()[1:])  # line 0 only names the class
        raise ValueError(f'{path}: does not fit the network of {run.opts_file} ({detail[:DETAIL_CHARS]})') from None
    return model.eval(), spec, opts
