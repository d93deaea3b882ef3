"""test.py's work: extract the feature of every query and gallery image with a trained run (the feature contract:
flip-summed, L2-normalised), save them as pytorch_result.mat, and evaluate them.
"""
import logging
import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from reid.models.loading import load_network
from reid.cli import MULTI_RESULT_FILE
from reid.data.images import ReIDImageFolder, require_readable_images
from reid.data.prepared import list_reid_images, prepared_info
from reid.data.transforms import eval_transform
from reid.evaluation.metrics import compute_cmc_map, format_result, pool_multi_query
from reid.evaluation.results import save_multi_query, save_result
from reid.models.features import flip_sum_features, fuse_conv_bn, l2_normalize_features
from reid.runs import RunFolder, ensure_writable_folder
from reid.runtime import autocast, choose_runtime, log_small_maps
from reid.spec import check_network_flags

logger = logging.getLogger(__name__)


def embedder(model, device, scales=(1.0,), amp_dtype=None):
    """Return images [N, 3, h, w] -> float32 [N, D] features on the CPU: the network `model` run on `device` with
    flip-sum over `scales` under autocast, or, when `model` is an export's runner (reid.backends), that runner,
    whose network holds the flip-sum and the normalisation itself."""
    if not isinstance(model, torch.nn.Module):
        return lambda images: torch.from_numpy(np.asarray(model(images.numpy()), dtype=np.float32))
    model.eval()

    def embed(images):
        with autocast(device, amp_dtype):
            summed = flip_sum_features(model, images.to(device), scales)
        return l2_normalize_features(summed.float()).cpu()
    return embed


@torch.inference_mode()
def extract_features(model, loader, device, scales=(1.0,), amp_dtype=None, desc='features'):
    """Return the retrieval features of every image in `loader`, in order: float32 [N, D] on the CPU.

    The feature contract: sum over the image and its horizontal flip (and each scale of the original image),
    then L2-normalised (PCB: per part, then concatenated). `model`: a network, or an export's runner (embedder).
    """
    embed = embedder(model, device, scales, amp_dtype)
    return torch.cat([embed(images) for images, _ in tqdm(loader, desc=desc, dynamic_ncols=True)])


def parse_scales(ms):
    """Return the linear resize factors of `--ms` (area ratios, so sqrt of each value)."""
    try:
        values = [float(s) for s in ms.split(',') if s.strip()]
    except ValueError:
        values = []
    if not values or min(values) <= 0:
        raise ValueError(f"--ms {ms}: expected positive numbers separated by commas, e.g. '1,1.1'")
    return [math.sqrt(v) for v in values]


def split_features(model, folder, runtime, size, scales, batchsize):
    """Return (features float32 [N, D], ids [N], cameras [N]) of one prepared split, in ImageFolder order."""
    images = list_reid_images(folder)
    dataset = ReIDImageFolder(folder, eval_transform(*size))
    loader = DataLoader(dataset, batch_size=batchsize, shuffle=False, num_workers=runtime.workers,
                        pin_memory=runtime.device.type == 'cuda')
    features = extract_features(model, loader, runtime.device, scales, runtime.amp_dtype, desc=Path(folder).name)
    if dataset.skipped:  # a substitute's feature would sit under the wrong id: do not save the result
        raise ValueError(f'{len(dataset.skipped)} image(s) became unreadable during the run: '
                         + '; '.join(f'{p} ({r})' for p, r in list(dataset.skipped.items())[:5])
                         + '. Nothing was saved; replace them and run test.py again')
    return features, np.array([p for _, p, _ in images]), np.array([c for _, _, c in images])


def feature_model(opts, run, runtime, scales):
    """Return (the network or an export's runner that extracts the features, the NetworkSpec, the BackendChoice)
    for test.py's --backend/--precision: torch runs the checkpoint; another backend its export, written into the
    run folder on first use (backend_runner)."""
    from reid.backends import BackendChoice, choose_backend, torch_precision
    from reid.export import backend_runner

    choice = choose_backend(opts, runtime, list(scales) == [1.0])
    model, spec, _ = load_network(run.path, opts.which_epoch)  # this toolkit's runs and the original's
    auto = (getattr(opts, 'backend', 'auto') or 'auto') == 'auto'
    choice, runner = backend_runner(run, opts.which_epoch, choice, auto)
    if runner is None and choice.precision != torch_precision(runtime):   # an export failed: torch as chosen
        choice = BackendChoice('torch', torch_precision(runtime), choice.reason)
    logger.info(choice.describe())
    if runner is not None:
        return runner, spec, choice
    return fuse_conv_bn(model).to(runtime.device, memory_format=runtime.memory_format), spec, choice


def run_calibration(opts):
    """test.py --calibrate: val images as queries against the train images as gallery (every valid pair, junk as
    in the ranking), the verification lines printed and the threshold at --far written to threshold.yaml.

    The ids were seen in training, so the network separates them better than unseen ones: the false-accept
    rate on new people tends to exceed --far; calibrate on a held-out result (evaluate_gpu.py --verify
    --save_threshold) where one exists.
    """
    from reid.evaluation import verification

    verification.check_far(opts.far)
    run = RunFolder(Path(opts.model_dir) / opts.name)
    check_network_flags(opts, run.read_opts(), run.opts_file)
    runtime, note = choose_runtime(opts, 'extract')
    if note:
        logger.info(note)
    run.existing_checkpoint(opts.which_epoch)
    test_dir = Path(opts.test_dir)
    for split in ('val', 'train'):
        if not list_reid_images(test_dir / split):
            raise ValueError(f'{test_dir / split}: no images; --calibrate needs the val and train splits prepare.py '
                             'writes')
    require_readable_images([p for split in ('val', 'train') for p, _, _ in list_reid_images(test_dir / split)])
    scales = parse_scales(opts.ms)
    model, spec, _ = feature_model(opts, run, runtime, scales)
    val, train = (split_features(model, test_dir / split, runtime, spec.input_size(), scales, opts.batchsize)
                  for split in ('val', 'train'))
    report = verification.verification_report(*val, *train)
    source = f'{test_dir} val (queries) x train (gallery), {opts.which_epoch}'
    path = run.write_threshold(verification.threshold_entry(report, opts.far, source))
    logger.info(verification.format_verification(report))
    logger.info(f'threshold at FAR {opts.far:g}: {path}')
    return report


def run_test(opts):
    """Extract features as `opts` (test.py's flags) says, write the .mat file(s), evaluate; return the metrics."""
    run = RunFolder(Path(opts.model_dir) / opts.name)
    check_network_flags(opts, run.read_opts(), run.opts_file)
    runtime, note = choose_runtime(opts, 'extract')
    if note:
        logger.info(note)
    scales = parse_scales(opts.ms)

    checkpoint = run.existing_checkpoint(opts.which_epoch)
    test_dir, result_path = Path(opts.test_dir), Path(opts.result)
    splits = ['gallery', 'query'] + (['multi-query'] if opts.multi else [])
    # Everything that can be wrong with the input or the output path is found before any feature is computed.
    require_readable_images([p for split in splits for p, _, _ in list_reid_images(test_dir / split)])
    ensure_writable_folder(result_path.parent, '--result')
    if result_path.is_dir():
        raise ValueError(f'--result {result_path}: is a folder; give a file name such as pytorch_result.mat')
    model, spec, choice = feature_model(opts, run, runtime, scales)
    size = spec.input_size()   # what the run was trained at, whatever the test folder's layout
    if choice.name == 'torch':
        smallest = tuple(max(1, int(side * min(scales))) for side in size)
        log_small_maps(runtime.protect_small_maps(model, smallest))

    def features(split):
        return split_features(model, test_dir / split, runtime, size, scales, opts.batchsize)
    gallery, query = features('gallery'), features('query')
    save_result(result_path, query, gallery)
    # multi_query.mat is written before anything evaluates, so evaluate_gpu.py can read it too.
    if opts.multi:
        multi = features('multi-query')
        save_multi_query(result_path.with_name(MULTI_RESULT_FILE), multi)

    results = {'single': compute_cmc_map(*query, *gallery)}
    lines = [f'{opts.name} ({checkpoint.name}, scales {opts.ms}, {choice.name} {choice.precision})', format_result(results['single'])]
    if opts.multi:
        pooled, _ = pool_multi_query(*query, *multi)
        results['multi'] = compute_cmc_map(pooled, *query[1:], *gallery)
        lines.append('multi:' + format_result(results['multi']).splitlines()[0])
    if results['single']['n_valid'] == 0:
        lines.append(f'no query has a match in the gallery of {test_dir} (same id, another camera): the metrics '
                     'are undefined; check that query/ and gallery/ come from the same test set')
    if prepared_info(test_dir).get('trials') == 'gallery':
        lines.append(f'(one gallery draw; the protocol averages several: python evaluate_gpu.py --result '
                     f'{result_path} --trials 10)')
    text = '\n'.join(lines)
    logger.info(text)
    with open(run.result_file, 'a') as f:
        f.write(text + '\n')
    return results
