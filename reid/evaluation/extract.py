"""test.py's work: extract the feature of every query and gallery image with a trained run (the feature contract:
flip-summed, L2-normalised), save them as pytorch_result.mat, and evaluate them.

A video layout's folder gives one feature per tracklet: its frames in consecutive chunks of --seq_len (the run's;
one frame for an image network), each chunk through the network as one clip, flip-summed and L2-normalised like
an image; the chunks' features averaged and L2-normalised again. Normalising each chunk first makes every chunk
count the same whatever its feature's norm (a short last chunk, a blurred one); the last L2 keeps the contract
that a feature has unit norm, so a cosine score is a dot product for every evaluation.
"""
import logging
import math
from argparse import Namespace
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from reid.models.loading import load_network
from reid.cli import MULTI_RESULT_FILE
from reid.data.images import ReIDImageFolder, require_readable_images
from reid.data.prepared import list_reid_images, list_reid_tracklets, prepared_info
from reid.data.tracklets import DEFAULT_SEQ_LEN, tracklet_chunks, video_layout
from reid.data.transforms import eval_transform
from reid.evaluation.metrics import compute_cmc_map, format_result, pool_multi_query
from reid.evaluation.results import TrackletRows, save_multi_query, save_result
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
    dataset = ReIDImageFolder(folder, eval_transform(*size), substitute=False)
    loader = DataLoader(dataset, batch_size=batchsize, shuffle=False, num_workers=runtime.workers,
                        pin_memory=runtime.device.type == 'cuda')
    features = extract_features(model, loader, runtime.device, scales, runtime.amp_dtype, desc=Path(folder).name)
    return features, np.array([p for _, p, _ in images]), np.array([c for _, _, c in images])


class ChunkFrames(torch.utils.data.Dataset):
    """The test's chunks of tracklets as a dataset: item i is chunk i's frames [t, 3, h, w] (of `frames`, a
    ReIDImageFolder with the evaluation transform), and its position."""

    def __init__(self, frames, chunks):
        self.frames, self.chunks = frames, chunks

    def __len__(self):
        return len(self.chunks)

    def __getitem__(self, index):
        return torch.stack([self.frames[i][0] for i in self.chunks[index]]), index


def equal_length_batches(chunks, batchsize):
    """Return batches (lists of chunk positions) of chunks of one length, about `batchsize` frames each."""
    by_length = defaultdict(list)
    for position, chunk in enumerate(chunks):
        by_length[len(chunk)].append(position)
    per_batch = {length: max(1, batchsize // length) for length in by_length}
    return [members[i:i + per_batch[length]] for length, members in sorted(by_length.items())
            for i in range(0, len(members), per_batch[length])]


@torch.inference_mode()
def tracklet_features(model, folder, runtime, size, scales, batchsize, length):
    """Return the TrackletRows (features float32 [N, D], ids [N], cameras [N]; .names) of one prepared video split,
    one row per tracklet in list_reid_tracklets order (see the module's docstring).

    `length`: frames per chunk (tracklet_chunks; 0: the whole tracklet as one chunk); above 1 `model` must be a
    tracklet network (reid.models.temporal), at 1 any network or an export's runner (frame by frame).
    """
    from reid.models.temporal import ClipsOfFrames

    tracklets = list_reid_tracklets(folder)
    frames = ReIDImageFolder(folder, eval_transform(*size), substitute=False)
    owner, chunks = [], []
    for k, t in enumerate(tracklets):
        for chunk in tracklet_chunks(len(t.indices), length):
            owner.append(k)
            chunks.append([t.indices[p] for p in chunk])
    loader = DataLoader(ChunkFrames(frames, chunks), batch_sampler=equal_length_batches(chunks, batchsize),
                        num_workers=runtime.workers, pin_memory=runtime.device.type == 'cuda')
    sums, embed = None, {}
    for clips, positions in tqdm(loader, desc=f'{Path(folder).name} (tracklets)', dynamic_ncols=True):
        t = clips.shape[1]
        if t not in embed:   # the network fed frames of clips of t frames (ClipsOfFrames: flip-sum works as is)
            embed[t] = embedder(model if t == 1 else ClipsOfFrames(model, t), runtime.device, scales, runtime.amp_dtype)
        chunk_f = embed[t](clips.flatten(0, 1))
        if sums is None:
            sums = torch.zeros(len(tracklets), chunk_f.shape[1])
        sums.index_add_(0, torch.as_tensor([owner[i] for i in positions.tolist()]), chunk_f)
    counts = torch.bincount(torch.as_tensor(owner), minlength=len(tracklets)).unsqueeze(1)
    features = l2_normalize_features(sums / counts)
    return TrackletRows(features, np.array([t.label for t in tracklets]), np.array([t.camera for t in tracklets]),
                        [t.name for t in tracklets])


def chunk_length(opts, run_opts):
    """Return the frames per chunk of test.py on tracklets: --seq_len when given (0: the whole tracklet), else
    the run's; 1 for an image network (frames embedded one by one); ValueError naming the flag otherwise."""
    given = getattr(opts, 'seq_len', None)
    if given is not None and given < 0:
        raise ValueError(f'--seq_len {given}: must be 0 (the whole tracklet) or more')
    if not run_opts.get('temporal'):
        if given not in (None, 1):
            raise ValueError(f'--seq_len {given}: the run was trained on images (no --temporal), so it embeds '
                             'frames one by one; drop --seq_len')
        return 1
    return int(run_opts.get('seq_len') or DEFAULT_SEQ_LEN) if given is None else given


def tracklet_backend(opts, length):
    """Return `opts` with the backend a tracklet network's chunks need: an export embeds single images, so chunks
    of several frames run the checkpoint (--backend auto becomes torch); ValueError for another backend named."""
    requested = getattr(opts, 'backend', 'auto') or 'auto'
    if length == 1 or requested == 'torch':
        return opts
    if requested != 'auto':
        raise ValueError(f'--backend {requested}: an export embeds single images, but this tracklet network pools '
                         f'chunks of {length or "all"} frames; use --backend torch (or --seq_len 1)')
    logger.info(f'tracklets in chunks of {length or "all"} frames: the checkpoint computes them (--backend auto -> '
                'torch; an export embeds single images)')
    return Namespace(**{**vars(opts), 'backend': 'torch'})


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
    length, opts = tracklet_chunking(opts, test_dir, run.read_opts())   # a video layout: tracklets as in run_test
    model, spec, _ = feature_model(opts, run, runtime, scales)
    features = split_reader(model, test_dir, runtime, spec.input_size(), scales, opts.batchsize, length)
    val, train = features('val'), features('train')
    report = verification.verification_report(*val, *train)
    source = f'{test_dir} val (queries) x train (gallery), {opts.which_epoch}'
    path = run.write_threshold(verification.threshold_entry(report, opts.far, source))
    logger.info(verification.format_verification(report))
    logger.info(f'threshold at FAR {opts.far:g}: {path}')
    return report


def split_reader(model, test_dir, runtime, size, scales, batchsize, length=None):
    """Return split name -> (features, ids, cameras): per tracklet with chunks of `length` frames (TrackletRows of
    tracklet_features) when `length` is set (a video layout's folder), else per image (split_features)."""
    def read(split):
        if length is None:
            return split_features(model, test_dir / split, runtime, size, scales, batchsize)
        return tracklet_features(model, test_dir / split, runtime, size, scales, batchsize, length)
    return read


def tracklet_chunking(opts, test_dir, run_opts):
    """Return (frames per chunk, or None for an image layout's folder; `opts` with the backend that computes
    them); ValueError for --seq_len on an image layout's folder, or --multi on a video layout's."""
    if video_layout(test_dir) is None:
        if getattr(opts, 'seq_len', None) is not None:
            raise ValueError(f'--seq_len {opts.seq_len}: {test_dir} is not a video layout (no tracklets)')
        return None, opts
    if getattr(opts, 'multi', False):   # Market's multi-query images of a query's id and camera: a tracklet is that
        raise ValueError(f'--multi: {test_dir} is a video layout, with no multi-query split: each query is already '
                         'a tracklet (several frames of one person, pooled); drop --multi')
    length = chunk_length(opts, run_opts)
    return length, tracklet_backend(opts, length)


def protocol_hint(test_dir, result_path):
    """The line that says how the layout's protocol averages several draws or splits (None when it does not)."""
    trials = prepared_info(test_dir).get('trials')
    if trials == 'gallery':
        return (f'(one gallery draw; the protocol averages several: python evaluate_gpu.py --result '
                f'{result_path} --trials 10)')
    if trials == 'split':
        return (f'(one split; the protocol averages 10: prepare, train and test each --split K, then python '
                f'evaluate_gpu.py --result {result_path} <the other splits\' files>)')
    return None


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
    length, opts = tracklet_chunking(opts, test_dir, run.read_opts())
    require_readable_images([p for split in splits for p, _, _ in list_reid_images(test_dir / split)])
    ensure_writable_folder(result_path.parent, '--result')
    if result_path.is_dir():
        raise ValueError(f'--result {result_path}: is a folder; give a file name such as pytorch_result.mat')
    model, spec, choice = feature_model(opts, run, runtime, scales)
    size = spec.input_size()   # what the run was trained at, whatever the test folder's layout
    if choice.name == 'torch':
        smallest = tuple(max(1, int(side * min(scales))) for side in size)
        log_small_maps(runtime.protect_small_maps(model, smallest))

    features = split_reader(model, test_dir, runtime, size, scales, opts.batchsize, length)
    gallery, query = features('gallery'), features('query')
    save_result(result_path, query, gallery)
    # multi_query.mat is written before anything evaluates, so evaluate_gpu.py can read it too.
    if opts.multi:
        multi = features('multi-query')
        save_multi_query(result_path.with_name(MULTI_RESULT_FILE), multi)

    results = {'single': compute_cmc_map(*query, *gallery)}
    tracklets = '' if length is None else f', tracklets in chunks of {length or "all"} frame(s)'
    lines = [f'{opts.name} ({checkpoint.name}, scales {opts.ms}, {choice.name} {choice.precision}{tracklets})',
             format_result(results['single'])]
    if opts.multi:
        pooled, _ = pool_multi_query(*query, *multi)
        results['multi'] = compute_cmc_map(pooled, *query[1:], *gallery)
        lines.append('multi:' + format_result(results['multi']).splitlines()[0])
    if results['single']['n_valid'] == 0:
        lines.append(f'no query has a match in the gallery of {test_dir} (same id, another camera): the metrics '
                     'are undefined; check that query/ and gallery/ come from the same test set')
    lines += [hint for hint in [protocol_hint(test_dir, result_path)] if hint]
    text = '\n'.join(lines)
    logger.info(text)
    with open(run.result_file, 'a') as f:
        f.write(text + '\n')
    return results
