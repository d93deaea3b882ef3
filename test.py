"""Extract query/gallery features with a trained run, save pytorch_result.mat and print Rank@k / mAP.

    python test.py --name ft_ResNet50 --test_dir ../Market/pytorch                  # net_last.pth
    python test.py --name ft_ResNet50 --test_dir ../Market/pytorch --which_epoch 59 --ms 1,1.1 --multi
    python test.py --name demo --test_dir data/demo/pytorch --which_epoch init      # the untrained network
    python test.py --name ft_ResNet50 --test_dir ../Market/pytorch --calibrate --far 1e-3   # threshold.yaml

The network is rebuilt from model/<name>/opts.yaml. Feature = sum over the image and its horizontal flip (and
each --ms scale), L2-normalised. Ids and cameras come from the prepared folder's images.csv (from the file
names for a folder prepared without it). The result lines are printed and appended to model/<name>/result.txt.
--test_dir may be another dataset than the one trained on (train on Market, test on Duke): only its query/ and
gallery/ are read. On a video layout (MARS, DukeMTMC-VideoReID, iLIDS-VID, PRID-2011) a row is a tracklet: its
frames in chunks of --seq_len through the network, each chunk's feature flip-summed and L2-normalised, the chunks
averaged and L2-normalised again; the .mat also names the tracklets (query_tracklet, gallery_tracklet).
"""
import argparse
import sys
from pathlib import Path

from reid.backends import add_backend_flags
from reid.evaluation.extract import run_calibration, run_test
from reid.evaluation.verification import DEFAULT_FAR, FARS
from reid.cli import DATA_DIR, MODEL_DIR, RESULT_FILE, RUN_NAME, one_line_errors
from reid.runs import RunFolder
from reid.runtime import add_runtime_flags
from reid.spec import add_network_flags


def build_parser():
    p = argparse.ArgumentParser(description='Extract features and evaluate a trained re-ID run.')
    p.add_argument('--which_epoch', default='last', type=str,
                   help="'last', the epochs done of a net_XXX.pth snapshot (10, 20, ...), 'init' (the untrained network) or "
                        "'average' (train.py --wa)")
    p.add_argument('--test_dir', default=DATA_DIR, type=str, help='prepare.py output folder')
    p.add_argument('--name', default=RUN_NAME, type=str, help='run name under --model_dir')
    p.add_argument('--model_dir', default=MODEL_DIR, type=str, help='folder that holds the runs')
    p.add_argument('--batchsize', default=256, type=int)
    p.add_argument('--multi', action='store_true', help='also extract multi-query features (multi_query.mat)')
    p.add_argument('--ms', default='1', type=str,
                   help="scales as area ratios, e.g. '1,1.1' (each image is resized by sqrt(s), as the original)")
    p.add_argument('--result', default=RESULT_FILE, type=str,
                   help='where to write the features (multi_query.mat goes beside it)')
    p.add_argument('--seq_len', default=None, type=int,
                   help="a video layout: frames per chunk of a tracklet (default: the run's --seq_len; 0: the whole "
                        'tracklet at once); an image network embeds frames one by one')
    p.add_argument('--calibrate', action='store_true',
                   help='instead of testing: score the val split (queries) against train (gallery) and write the '
                        'same-identity threshold at --far into model/<name>/threshold.yaml')
    p.add_argument('--far', default=DEFAULT_FAR, type=float,
                   help=f'--calibrate: false-accept rate ({", ".join(f"{far:g}" for far in FARS)})')
    add_runtime_flags(p)
    add_backend_flags(p)
    # The network is rebuilt from opts.yaml; the original's network flags are accepted so its commands work, and
    # checked against opts.yaml so a typo cannot silently test another network.
    add_network_flags(p, checked=True)
    return p


def log_to_tensorboard(opts, results):
    """A run trained with --tensorboard gets the figures in its tb/ too, at the tested epoch."""
    run = RunFolder(Path(opts.model_dir) / opts.name)
    if not run.tensorboard_dir.is_dir():
        return
    from reid.training.tensorboard import log_test_metrics
    last = run.read_opts().get('total_epoch', 0)
    step = int(opts.which_epoch) if opts.which_epoch.isdigit() else 0 if opts.which_epoch == 'init' else last
    try:
        log_test_metrics(run.tensorboard_dir, results, step)
    except ValueError:   # tensorboard not installed here: the figures are in result.txt anyway
        print(f'{run.tensorboard_dir}: tensorboard is not installed, the figures were not added')
        return
    print(f'figures added to {run.tensorboard_dir} (final/*, step {step})')


def main(argv=None):
    opts = build_parser().parse_args(argv)
    with one_line_errors('test.py', f'interrupted; {opts.result} was not written (run the same command again)'):
        if opts.calibrate:
            run_calibration(opts)
        else:
            log_to_tensorboard(opts, run_test(opts))


if __name__ == '__main__':
    main(sys.argv[1:])
