"""Extract query/gallery features with a trained run, save pytorch_result.mat and print Rank@k / mAP.

    python test.py --name ft_ResNet50 --test_dir ../Market/pytorch                  # net_last.pth
    python test.py --name ft_ResNet50 --test_dir ../Market/pytorch --which_epoch 59 --ms 1,1.1 --multi
    python test.py --name demo --test_dir data/demo/pytorch --which_epoch init      # the untrained network

The network is rebuilt from model/<name>/opts.yaml. Feature = sum over the image and its horizontal flip (and
each --ms scale), L2-normalised. Ids and cameras come from the prepared folder's images.csv (from the file
names for a folder prepared without it). The result lines are printed and appended to model/<name>/result.txt.
--test_dir may be another dataset than the one trained on (train on Market, test on Duke): only its query/ and
gallery/ are read.
"""
import argparse
import math
import sys
from pathlib import Path

import numpy as np
import scipy.io
import torch
from torch.utils.data import DataLoader

from reid.api import checkpoint_path, load_network
from reid.data.images import (ReIDImageFolder, eval_transform, input_size, list_reid_images, prepared_info,
                  require_readable_images)
from reid.training.loop import extract_features
from reid.evaluation.metrics import compute_cmc_map, format_result, pool_multi_query
from reid.models.backbones import fuse_conv_bn
from reid.runtime import memory_format, resolve_cpu_bf16, set_cpu_threads, use_channels_last
from reid.runs import ensure_writable_folder, load_opts, loader_workers, os_error_line, select_device


def build_parser():
    p = argparse.ArgumentParser(description='Extract features and evaluate a trained re-ID run.')
    p.add_argument('--gpu_ids', default='0', type=str, help='GPU id, e.g. 0 (ignored on a CPU-only machine)')
    p.add_argument('--which_epoch', default='last', type=str,
                   help="'last', a 0-based epoch number of a net_XXX.pth, 'init' (the untrained network) or "
                        "'average' (train.py --wa)")
    p.add_argument('--test_dir', default='../Market/pytorch', type=str, help='prepare.py output folder')
    p.add_argument('--name', default='ft_ResNet50', type=str, help='run name under --model_dir')
    p.add_argument('--model_dir', default='model', type=str, help='folder that holds the runs')
    p.add_argument('--batchsize', default=256, type=int)
    p.add_argument('--multi', action='store_true', help='also extract multi-query features (multi_query.mat)')
    p.add_argument('--ms', default='1', type=str,
                   help="scales as area ratios, e.g. '1,1.1' (each image is resized by sqrt(s), as the original)")
    p.add_argument('--fp16', action='store_true', help='float16 inference (CUDA)')
    p.add_argument('--bf16', action='store_true', help='bfloat16 inference (CUDA or CPU)')
    p.add_argument('--cpu_bf16', default='auto', choices=('auto', 'on', 'off'),
                   help='on the CPU: bf16 inference (auto: where the CPU has native bf16, e.g. avx512_bf16 or AMX)')
    p.add_argument('--channels_last', default='auto', choices=('auto', 'on', 'off'),
                   help='run convolutions in the channels_last memory format (auto: on)')
    p.add_argument('--result', default='pytorch_result.mat', type=str,
                   help='where to write the features (multi_query.mat goes beside it)')
    p.add_argument('--num_workers', default=None, type=int,
                   help='data loading processes (default 2 with CUDA, 0 = in the main process on the CPU)')
    # The model is rebuilt from opts.yaml; the original's model flags are accepted so its commands work, and
    # checked against opts.yaml so a typo cannot silently test another network.
    p.add_argument('--PCB', action='store_const', const=True, default=None, help='(from opts.yaml; checked)')
    p.add_argument('--use_dense', action='store_const', const=True, default=None, help='(from opts.yaml; checked)')
    p.add_argument('--ibn', action='store_const', const=True, default=None, help='(from opts.yaml; checked)')
    p.add_argument('--usam', action='store_const', const=True, default=None, help='(from opts.yaml; checked)')
    p.add_argument('--linear_num', default=None, type=int, help='(from opts.yaml; checked)')
    p.add_argument('--stride', default=None, type=int, help='(from opts.yaml; checked)')
    return p


MODEL_FLAGS = ('PCB', 'use_dense', 'ibn', 'usam', 'linear_num', 'stride')


def check_model_flags(opts, train_opts, path):
    """Raise ValueError naming the flag when a model flag given to test.py disagrees with the run's opts.yaml."""
    for flag in MODEL_FLAGS:
        given = getattr(opts, flag)
        if given is not None and given != train_opts.get(flag):
            raise ValueError(f'--{flag} {given}: the run was trained with {flag}={train_opts.get(flag)} '
                             f'({path}); drop the flag, test.py rebuilds the model from opts.yaml')


def saved_epochs(run_dir):
    """Return the --which_epoch values with a checkpoint in `run_dir`: 'last', 'init', 'average', then epochs."""
    names = {p.name[4:-4] for p in Path(run_dir).glob('net_*.pth')}
    return ([n for n in ('last', 'init', 'average') if n in names]
            + sorted((str(int(n)) for n in names if n.isdigit()), key=int))


def existing_checkpoint(run_dir, which_epoch):
    """Return checkpoint_path(run_dir, which_epoch); ValueError listing the epochs saved when it is missing."""
    path = checkpoint_path(run_dir, which_epoch)
    if not path.is_file():
        raise ValueError(f'{path}: checkpoint not found; --which_epoch can be '
                         + (', '.join(saved_epochs(run_dir)) or 'nothing yet (no net_*.pth in this run)'))
    return path


def parse_scales(ms):
    """Return the linear resize factors of `--ms` (area ratios, so sqrt of each value)."""
    try:
        values = [float(s) for s in ms.split(',') if s.strip()]
    except ValueError:
        values = []
    if not values or min(values) <= 0:
        raise ValueError(f"--ms {ms}: expected positive numbers separated by commas, e.g. '1,1.1'")
    return [math.sqrt(v) for v in values]


def split_features(model, folder, opts, device, size, scales, amp_dtype):
    """Return (features float32 [N, D], ids [N], cameras [N]) of one prepared split, in ImageFolder order."""
    images = list_reid_images(folder)
    dataset = ReIDImageFolder(folder, eval_transform(*size))
    loader = DataLoader(dataset, batch_size=opts.batchsize,
                        shuffle=False, num_workers=loader_workers(opts.num_workers, device),
                        pin_memory=device.type == 'cuda')
    features = extract_features(model, loader, device, scales, amp_dtype, desc=Path(folder).name)
    if dataset.skipped:  # a substitute's feature would sit under the wrong id: do not save the result
        raise ValueError(f'{len(dataset.skipped)} image(s) became unreadable during the run: '
                         + '; '.join(f'{p} ({r})' for p, r in list(dataset.skipped.items())[:5])
                         + '. Nothing was saved; replace them and run test.py again')
    return features, np.array([p for _, p, _ in images]), np.array([c for _, _, c in images])


def run_test(opts, log=print):
    """Extract features as `opts` says, write the .mat file(s), evaluate; return the metrics dict(s)."""
    run_dir = Path(opts.model_dir) / opts.name
    train_opts = load_opts(run_dir / 'opts.yaml')
    check_model_flags(opts, train_opts, run_dir / 'opts.yaml')
    if opts.fp16 and opts.bf16:
        raise ValueError('--fp16 and --bf16: pick one')
    device, note = select_device(opts.gpu_ids)
    if note:
        log(note)
    if opts.fp16 and device.type != 'cuda':
        raise ValueError('--fp16 needs CUDA; use --bf16 on the CPU')
    if device.type == 'cpu':
        set_cpu_threads(loader_workers(opts.num_workers, device))
    cpu_bf16, _ = resolve_cpu_bf16(opts.cpu_bf16, device)
    amp_dtype = torch.float16 if opts.fp16 else torch.bfloat16 if opts.bf16 or cpu_bf16 else None
    scales = parse_scales(opts.ms)

    existing_checkpoint(run_dir, opts.which_epoch)
    test_dir, result_path = Path(opts.test_dir), Path(opts.result)
    splits = ['gallery', 'query'] + (['multi-query'] if opts.multi else [])
    # Everything that can be wrong with the input or the output path is found before any feature is computed.
    require_readable_images([p for split in splits for p, _, _ in list_reid_images(test_dir / split)])
    ensure_writable_folder(result_path.parent, '--result')
    if result_path.is_dir():
        raise ValueError(f'--result {result_path}: is a folder; give a file name such as pytorch_result.mat')
    model, train_opts = load_network(run_dir, opts.which_epoch)  # this toolkit's runs and the original's
    model = fuse_conv_bn(model).to(device, memory_format=memory_format(use_channels_last(opts.channels_last, device)))
    pcb = bool(train_opts.get('PCB'))
    size = input_size(test_dir, train_opts.get('h'), train_opts.get('w'), pcb)   # the run's size wins
    gf, gl, gc = split_features(model, test_dir / 'gallery', opts, device, size, scales, amp_dtype)
    qf, ql, qc = split_features(model, test_dir / 'query', opts, device, size, scales, amp_dtype)
    scipy.io.savemat(result_path, {'gallery_f': gf.numpy(), 'gallery_label': gl, 'gallery_cam': gc,
                                   'query_f': qf.numpy(), 'query_label': ql, 'query_cam': qc})
    # multi_query.mat is written before anything evaluates, so evaluate_gpu.py can read it too.
    if opts.multi:
        mf, ml, mc = split_features(model, test_dir / 'multi-query', opts, device, size, scales, amp_dtype)
        scipy.io.savemat(result_path.with_name('multi_query.mat'),
                         {'mquery_f': mf.numpy(), 'mquery_label': ml, 'mquery_cam': mc})

    results = {'single': compute_cmc_map(qf, ql, qc, gf, gl, gc)}
    lines = [f'{opts.name} ({checkpoint_path(run_dir, opts.which_epoch).name}, scales {opts.ms})',
             format_result(results['single'])]
    if opts.multi:
        pooled, _ = pool_multi_query(qf, ql, qc, mf, ml, mc)
        results['multi'] = compute_cmc_map(pooled, ql, qc, gf, gl, gc)
        lines.append('multi:' + format_result(results['multi']).splitlines()[0])
    if results['single']['n_valid'] == 0:
        lines.append(f'no query has a match in the gallery of {test_dir} (same id, another camera): the metrics '
                     'are undefined; check that query/ and gallery/ come from the same test set')
    if prepared_info(test_dir).get('trials') == 'gallery':
        lines.append(f'(one gallery draw; the protocol averages several: python evaluate_gpu.py --result '
                     f'{result_path} --trials 10)')
    text = '\n'.join(lines)
    log(text)
    with open(run_dir / 'result.txt', 'a') as f:
        f.write(text + '\n')
    return results


def main(argv=None):
    opts = build_parser().parse_args(argv)
    try:
        run_test(opts)
    except ValueError as e:
        raise SystemExit(f'test.py: {e}') from None
    except OSError as e:
        raise SystemExit(f'test.py: {os_error_line(e)}') from None
    except KeyboardInterrupt:
        raise SystemExit(f'test.py: interrupted; {opts.result} was not written (run the same command again)') from None


if __name__ == '__main__':
    main(sys.argv[1:])
