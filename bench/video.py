"""Video re-ID measured: one feature per tracklet against one frame's feature, from the same trained network, on
generated MARS-layout data: Rank@1, mAP and extraction time per tracklet.

    python -m bench.video [--seeds 0 1 2] [--temporal avg attention] [--model_dir bench/runs] [--reuse]

Per seed: the MARS demo set (prepare.py --make-demo --layout mars --seed S, then prepared), one run per --temporal
trained as docs/training.md trains it (TRAIN, seed S), then the query tracklets against the gallery tracklets under
MARS's protocol with each feature of FEATURES, all from the same checkpoint with test.py's code (flip-sum, the
precision this machine chooses). Time per tracklet: the wall time of extracting query and gallery (reading and
decoding the frames included) over their tracklets.
"""
import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

TRAIN = ['--preset', 'quick', '--h', '64', '--w', '32']
# What a user can do with the same checkpoint. The first two are what an image-only toolkit offers a user who keeps
# one crop per tracklet; the last is test.py's default on a video layout.
FEATURES = ('middle frame', 'random frame', 'every frame, averaged (--seq_len 1)', 'tracklet (chunks of --seq_len)')


def ensure_mars(data, seed):
    """Generate and prepare the MARS demo set of `seed` at `data` unless its prepared folder exists."""
    import prepare

    if not (Path(data) / 'pytorch' / 'gallery').is_dir():
        prepare.main(['--make-demo', str(data), '--layout', 'mars', '--seed', str(seed)])
        prepare.main(['--download_path', str(data)])


def picked_frames(tracklets, seed=0):
    """Return {FEATURES[0]: the middle frame's index per tracklet, FEATURES[1]: a random frame's (seeded)}."""
    rng = np.random.default_rng(seed)
    return {FEATURES[0]: [t.indices[len(t.indices) // 2] for t in tracklets],
            FEATURES[1]: [t.indices[int(rng.integers(len(t.indices)))] for t in tracklets]}


def frame_features(model, folder, runtime, size, batchsize, indices):
    """Return the features (float32 [len(indices), D]) of the frames `indices` of a prepared split, as test.py
    extracts an image."""
    import torch

    from reid.data.images import ReIDImageFolder
    from reid.data.transforms import eval_transform
    from reid.evaluation.extract import extract_features

    frames = torch.utils.data.Subset(ReIDImageFolder(folder, eval_transform(*size)), indices)
    loader = torch.utils.data.DataLoader(frames, batch_size=batchsize, num_workers=runtime.workers)
    return extract_features(model, loader, runtime.device, amp_dtype=runtime.amp_dtype, desc=Path(folder).name)


def feature_rows(run_dir, data, batchsize=64):
    """Return {feature of FEATURES: ((query features, gallery features), seconds)} of one run on a prepared
    MARS-layout folder, and the (query, gallery) [Tracklet]s."""
    from bench.tricks import test_cli
    from reid.data.prepared import list_reid_tracklets
    from reid.evaluation.extract import tracklet_features
    from reid.models.features import fuse_conv_bn
    from reid.models.loading import load_network
    from reid.runtime import choose_runtime

    model, spec, opts = load_network(run_dir, 'last')
    runtime, _ = choose_runtime(test_cli().build_parser().parse_args([]), 'extract')
    model = fuse_conv_bn(model).to(runtime.device, memory_format=runtime.memory_format)
    size, splits = spec.input_size(), [Path(data) / 'pytorch' / s for s in ('query', 'gallery')]
    tracklets = [list_reid_tracklets(folder) for folder in splits]
    picks = [picked_frames(t) for t in tracklets]

    def extract(name, k):
        if name in picks[k]:
            return frame_features(model, splits[k], runtime, size, batchsize, picks[k][name])
        length = 1 if name == FEATURES[2] else int(opts['seq_len'])
        return tracklet_features(model, splits[k], runtime, size, (1.0,), batchsize, length)[0]

    rows = {}
    for name in FEATURES:
        start = time.perf_counter()
        features = (extract(name, 0), extract(name, 1))
        rows[name] = (features, time.perf_counter() - start)
    return rows, tracklets


def retrieval(features, tracklets):
    """Return (Rank@1, mAP) in % of query x gallery tracklets under MARS's junk rules (id -1, same id and camera)."""
    from reid.evaluation.metrics import compute_cmc_map, rank_at

    labels = [(np.array([t.label for t in ts]), np.array([t.camera for t in ts])) for ts in tracklets]
    result = compute_cmc_map(features[0], *labels[0], features[1], *labels[1])
    return 100 * rank_at(result, 1), 100 * result['mAP']


def run_figures(run_dir, data):
    """Return {feature: (Rank@1, mAP, ms per tracklet)} of one run."""
    rows, tracklets = feature_rows(run_dir, data)
    count = sum(map(len, tracklets))
    return {name: (*retrieval(features, tracklets), 1000 * seconds / count)
            for name, (features, seconds) in rows.items()}


def summary(found, temporals):
    """Markdown rows: per pooling and feature, each figure's mean and range over the seeds."""
    lines = ['| pooling | feature | Rank@1 | mAP | ms per tracklet |', '|---|---|---|---|---|']
    for temporal in temporals:
        for name in FEATURES:
            cells = []
            for i in range(3):
                values = [seed[temporal][name][i] for seed in found]
                cells.append(f'{statistics.fmean(values):.2f} ({min(values):.2f}-{max(values):.2f})'
                             if len(values) > 1 else f'{values[0]:.2f}')
            lines.append(f'| {temporal} | {name} | ' + ' | '.join(cells) + ' |')
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--temporal', nargs='+', default=['avg', 'attention'])
    p.add_argument('--model_dir', default='bench/runs')
    p.add_argument('--reuse', action='store_true', help='measure the runs already trained there (timings again)')
    args = p.parse_args(argv)
    import train
    from reid.cli import print_library_messages
    from reid.runtime import cpu_model, native_cpu_bf16

    print_library_messages()
    found = []
    for seed in args.seeds:
        data = Path(args.model_dir) / f'mars_data_{seed}'
        ensure_mars(data, seed)
        found.append({})
        for temporal in args.temporal:
            name = f'mars_{temporal}_{seed}'
            if not (args.reuse and (Path(args.model_dir) / name / 'net_last.pth').is_file()):
                train.main([*TRAIN, '--temporal', temporal, '--seed', str(seed), '--name', name, '--data_dir',
                            str(data / 'pytorch'), '--model_dir', args.model_dir, '--overwrite'])
            found[-1][temporal] = run_figures(Path(args.model_dir) / name, data)
            print(f'seed {seed}, {temporal}: ' + '; '.join(f'{n} R1 {v[0]:.2f} mAP {v[1]:.2f} {v[2]:.1f} ms'
                                                          for n, v in found[-1][temporal].items()), flush=True)
    print(f'\n{cpu_model()}, {os.cpu_count()} cores, native bf16: {native_cpu_bf16() or "no"}; seeds {args.seeds}')
    print('\n'.join(summary(found, args.temporal)))
    return found


if __name__ == '__main__':
    main()
