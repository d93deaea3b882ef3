"""Every inference backend on this CPU in one run: extraction img/s of ResNet-50 at 256x128 and of the quick
start's network, the features' cosine to torch fp32, and test.py's mAP of each on the quick start's run.

    python -m bench.backends [--name demo_demo] [--data data/demo] [--repeats 3] [--skip_map]

Torch fp32 and torch bf16 autocast (channels_last, as test.py runs them; bf16 only where the CPU has it natively,
elsewhere it is emulated and slower), onnxruntime fp32, OpenVINO f32, bf16 (where native) and int8 (NNCF, on 300
training images of --data). Each rate is the best of --repeats timed batches of 64 after one warm-up batch;
"vs default" divides by what `test.py` ran before backends existed (torch, --cpu_bf16 auto). The ResNet-50 has
random weights (its speed, not its accuracy); the mAP columns run test.py --backend on the trained run.
"""
import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bench.tricks import ensure_demo, test_cli
from reid.models.loading import load_network
from reid.backends import BACKENDS
from reid.export import FORMATS, CalibrationData, ensure_export, min_cosine, stored_precision, write_export
from reid.models.features import FeatureExtractor, fuse_conv_bn
from reid.runs import RunFolder, save_opts
from reid.runtime import cpu_model, native_cpu_bf16, set_cpu_threads

BATCH = 64


def rows(native):
    """Return the (label, backend, precision) rows this CPU runs: bf16 only where it is native."""
    out = [('torch fp32', 'torch', 'fp32')]
    if native:
        out.append(('torch bf16 (autocast, channels_last)', 'torch', 'bf16'))
    out += [('onnxruntime fp32', 'onnxruntime', 'fp32'), ('OpenVINO f32', 'openvino', 'fp32')]
    if native:
        out.append(('OpenVINO bf16', 'openvino', 'bf16'))
    return out + [('OpenVINO int8 (NNCF)', 'openvino', 'int8')]


def torch_runner(run, precision):
    """Return test.py's torch path as a runner: the fused network, channels_last, autocast at `precision`."""
    model, _, _ = load_network(run.path, 'last')
    net = FeatureExtractor(fuse_conv_bn(model)).eval().to(memory_format=torch.channels_last)

    def run_batch(batch):
        with torch.inference_mode(), torch.autocast('cpu', torch.bfloat16, enabled=precision == 'bf16'):
            x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
            return net(x).float().numpy()
    return run_batch


def runner(run, backend, precision, calibration):
    """Return the runner of `backend` at `precision` for the run (its export written once, reused after)."""
    if backend == 'torch':
        return torch_runner(run, precision)
    fmt = FORMATS[BACKENDS[backend].export_format]
    stored = stored_precision(fmt.name, precision)
    path = fmt.artifact(run, 'last', stored)
    if not path.exists():
        write_export(run, 'last', fmt, stored, path, calibration)
    return fmt.open(ensure_export(run, 'last', fmt.name, stored), precision)


def images_per_second(run_batch, batch, repeats):
    """Return (best img/s over `repeats` timed batches after one warm-up, the features of the batch)."""
    out = run_batch(batch)
    best = float('inf')
    for _ in range(repeats):
        start = time.perf_counter()
        run_batch(batch)
        best = min(best, time.perf_counter() - start)
    return len(batch) / best, np.asarray(out)


def resnet50_run(folder, data):
    """Write a ResNet-50 run at 256x128 with random weights (seed 0: the speed of the usual re-ID network), or
    keep the one an earlier run of this bench wrote, with its exports."""
    from reid.models.heads import build_model
    from reid.spec import NetworkSpec

    if (folder / 'net_last.pth').is_file():
        return RunFolder(folder)

    opts = {'name': folder.name, 'backbone': 'resnet50', 'scratch': True, 'h': 256, 'w': 128, 'nclasses': 751,
            'linear_num': 512, 'droprate': 0.5, 'stride': 2, 'PCB': False, 'data_dir': str(data)}
    torch.manual_seed(0)
    net = build_model(NetworkSpec.from_opts(opts), 751, pretrained=False)
    folder.mkdir(parents=True, exist_ok=True)
    save_opts(opts, folder / 'opts.yaml')
    torch.save(net.state_dict(), folder / 'net_last.pth')
    return RunFolder(folder)


def speed_table(title, run, size, data, repeats, native):
    """Print one network's img/s per backend, its ratio to the default, the cosine to torch fp32."""
    from reid.export import load_batches, spread
    from reid.data.prepared import list_reid_images

    paths = spread([p for p, _, _ in list_reid_images(Path(data) / 'gallery')], BATCH)
    batch = load_batches(paths, size, BATCH)[0]
    calibration = CalibrationData(Path(data))
    default = 'bf16' if native else 'fp32'
    results = {}
    for label, backend, precision in rows(native):
        results[label] = images_per_second(runner(run, backend, precision, calibration), batch, repeats)
    base = results['torch bf16 (autocast, channels_last)' if native else 'torch fp32']
    print(f'\n{title}: batch {BATCH} at {size[0]}x{size[1]}, best of {repeats}', flush=True)
    print(f'| backend | img/s | vs default (torch {default}) | min cosine to torch fp32 |')
    print('|---|---|---|---|')
    for label, (rate, features) in results.items():
        print(f'| {label} | {rate:.1f} | {rate / base[0]:.2f}x | '
              f'{min_cosine(features, results["torch fp32"][1]):.5f} |', flush=True)
    return results


def map_table(args, native):
    """Print test.py's metrics and seconds with each backend on the trained run --name."""
    T = test_cli()
    print(f'\ntest.py on {args.name} ({args.data}/pytorch): the same run, each backend', flush=True)
    print('| backend | Rank@1 | mAP | test.py seconds (extraction of query + gallery, export excluded) |')
    print('|---|---|---|---|')
    for label, backend, precision in rows(native):
        flags = ['--backend', backend] + (['--precision', precision] if backend != 'torch' else
                                          ['--cpu_bf16', 'on' if precision == 'bf16' else 'off'])
        argv = ['--name', args.name, '--model_dir', args.model_dir, '--test_dir', f'{args.data}/pytorch',
                '--result', f'{args.model_dir}/{args.name}/bench_{backend}_{precision}.mat', *flags]
        T.run_test(T.build_parser().parse_args(argv))   # exports on first use
        start = time.perf_counter()
        result = T.run_test(T.build_parser().parse_args(argv))['single']
        print(f'| {label} | {100 * result["cmc"][0]:.2f} | {100 * result["mAP"]:.2f} | '
              f'{time.perf_counter() - start:.1f} |', flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--name', default='demo_demo', help="the quick start's run (bash quickstart.sh)")
    p.add_argument('--model_dir', default='model')
    p.add_argument('--data', default='data/demo')
    p.add_argument('--repeats', default=3, type=int)
    p.add_argument('--skip_map', action='store_true', help='only the speed tables')
    args = p.parse_args(argv)
    ensure_demo(args.data)
    threads = set_cpu_threads()
    native = native_cpu_bf16()
    print(f'CPU: {cpu_model()}, {threads} threads, native bf16: {native or "none"}; torch {torch.__version__}',
          flush=True)
    r50 = resnet50_run(Path('bench/runs/backends_resnet50'), Path(args.data) / 'pytorch')
    speed_table('ResNet-50 (random weights)', r50, (256, 128), f'{args.data}/pytorch', args.repeats, native)
    run = RunFolder(Path(args.model_dir) / args.name)
    if not run.checkpoint('last').is_file():
        raise SystemExit(f'{run.path}: no trained run (bash quickstart.sh makes demo_demo)')
    _, spec, _ = load_network(run.path, 'last')
    speed_table(f"the quick start's network ({args.name})", run, spec.input_size(), f'{args.data}/pytorch',
                args.repeats, native)
    if not args.skip_map:
        map_table(args, native)


if __name__ == '__main__':
    main()
