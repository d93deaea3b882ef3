"""Benchmark of training and feature extraction: the straightforward path against the toolkit's default, one run.

    python -m bench.bench_train                      # CPU: ResNet-50 256x128, fwd+bwd at batch 16, inference at 64
    python -m bench.bench_train --iters 5 --backbone resnet18 --h 64 --w 32    # smaller and quicker
    python -m bench.bench_train --cuda_epochs 2      # with CUDA: train.py on a Market-sized generated set too

CPU rows (random images, so only the network is timed):
  straightforward: fp32, contiguous tensors, torch's multi-tensor SGD, unfused BatchNorm, torch.no_grad --
  what the original does;
  default: what train.py / test.py pick on this machine (runtime.py: channels_last, bf16 autocast where the CPU
  has native bf16, the fused SGD update, fused conv-BN and torch.inference_mode for extraction, threads fitted
  to the cores).
Prints img/s of each and the ratios. With CUDA present it also trains train.py on the 'market'-size generated set
(ResNet-50, batch 32, --fp16; not yet run on a GPU) and prints img/s, epoch seconds and
torch.cuda.max_memory_allocated.
"""
import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch

from reid import runtime
from reid.cli import print_library_messages
from reid.models.features import fuse_conv_bn
from reid.models.heads import build_model, cross_entropy_loss
from reid.runtime import autocast
from reid.spec import NetworkSpec


def images_per_second(step, batch, iters, warmup=1):
    """Run `step()` warmup + iters times; return images per second over the timed iterations."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    return batch * iters / (time.perf_counter() - start)


def train_rate(net, images, labels, iters, fmt, amp_dtype, fused):
    """Forward + backward + SGD step of `net` on one fixed batch; img/s. `fused`: torch's fused update."""
    device = torch.device('cpu')
    net = net.train().to(memory_format=fmt)
    images = images.contiguous(memory_format=fmt)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, fused=fused)

    def step():
        with autocast(device, amp_dtype):
            loss = cross_entropy_loss(net(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return images_per_second(step, len(images), iters)


def inference_rate(net, images, iters, fmt, amp_dtype, fast):
    """Feature extraction forward of `net` (eval mode); img/s. `fast`: fused conv-BN + inference_mode."""
    device = torch.device('cpu')
    net = (fuse_conv_bn(net) if fast else net.eval()).to(memory_format=fmt)
    images = images.contiguous(memory_format=fmt)
    grad_mode = torch.inference_mode if fast else torch.no_grad

    def step():
        with grad_mode(), autocast(device, amp_dtype):
            net(images, return_feature=True)
    return images_per_second(step, len(images), iters)


def cpu_bench(args):
    threads = runtime.set_cpu_threads()
    cpu = torch.device('cpu')
    amp = {}
    for job in ('train', 'extract'):   # what --cpu_bf16 decides for each job (reid.runtime.AUTO_BF16)
        bf16, reason = runtime.resolve_cpu_bf16(args.cpu_bf16, cpu, job)
        amp[job] = torch.bfloat16 if bf16 else None
        print(f'{job}: bf16 {bf16} ({reason})')
    fmt = runtime.memory_format(runtime.use_channels_last(args.channels_last, cpu))
    print(f'CPU: {runtime.cpu_model()}, {runtime.available_cores()} cores, {threads} torch threads, capability '
          f'{torch.backends.cpu.get_cpu_capability()}; default = channels_last {fmt == torch.channels_last}')
    torch.manual_seed(0)
    net = build_model(NetworkSpec(backbone=args.backbone), num_classes=751, pretrained=False)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    train_images = torch.randn(args.train_batch, 3, args.h, args.w, generator=g)
    labels = torch.randint(0, 751, (args.train_batch,), generator=g)
    test_images = torch.randn(args.test_batch, 3, args.h, args.w, generator=g)
    rows = []
    for what, run in (
            ('train fwd+bwd', lambda fast: train_rate(net, train_images, labels, args.iters,
                                                      fmt if fast else torch.contiguous_format,
                                                      amp['train'] if fast else None, fast)),
            ('inference', lambda fast: inference_rate(net, test_images, args.iters,
                                                      fmt if fast else torch.contiguous_format,
                                                      amp['extract'] if fast else None, fast))):
        rates = []
        for fast in (False, True):
            net.load_state_dict(state)  # both paths start from the same weights
            net.to(memory_format=torch.contiguous_format)
            rates.append(run(fast))
        rows.append((what, *rates))
        print(f'{what:14s} {args.backbone} {args.h}x{args.w}: straightforward {rates[0]:7.1f} img/s, '
              f'default {rates[1]:7.1f} img/s, ratio {rates[1] / rates[0]:.2f}x', flush=True)
    return rows


def cuda_bench(args):
    """train.py on the generated Market-sized set, ResNet-50 bs32 --fp16 (written for CUDA; not yet run on a GPU)."""
    from reid.data import synthetic
    from reid.data.layouts import plan_splits
    from reid.data.prepared import write_split
    from reid.training.recipe import parse_options
    from reid.training.trainer import run_training
    torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix='bench_train_') as work:
        raw = Path(work) / 'Market'
        synthetic.make_dataset(raw, size='market', seed=0)
        write_split(plan_splits('market', raw), Path(work) / 'pytorch', progress=False)
        opts = parse_options([
            '--name', 'bench', '--model_dir', str(Path(work) / 'model'), '--data_dir', str(Path(work) / 'pytorch'),
            '--train_all', '--batchsize', '32', '--fp16', '--scratch', '--total_epoch', str(args.cuda_epochs)])
        ends = []
        epoch_ends = logging.Handler()   # the epoch lines the trainer logs mark when each epoch ended
        epoch_ends.emit = lambda record: ends.append(time.perf_counter()) if record.getMessage().startswith(
            'epoch ') else None
        logging.getLogger('reid').addHandler(epoch_ends)
        print_library_messages()
        start = time.perf_counter()
        run_training(opts)
        n_images = sum(1 for _ in (Path(work) / 'pytorch' / 'train_all').rglob('*.jpg'))
        seconds = [b - a for a, b in zip([start] + ends[:-1], ends)]
        print(f'CUDA {torch.cuda.get_device_name()}: {n_images} images, epoch seconds '
              f'{", ".join(f"{s:.1f}" for s in seconds)}, last epoch {n_images / seconds[-1]:.0f} img/s, '
              f'max_memory_allocated {torch.cuda.max_memory_allocated() / 2**30:.2f} GB')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--backbone', default='resnet50')
    p.add_argument('--h', default=256, type=int)
    p.add_argument('--w', default=128, type=int)
    p.add_argument('--train_batch', default=16, type=int)
    p.add_argument('--test_batch', default=64, type=int)
    p.add_argument('--iters', default=3, type=int, help='timed iterations per row (after one warm-up)')
    p.add_argument('--cpu_bf16', default='auto', choices=('auto', 'on', 'off'))
    p.add_argument('--channels_last', default='auto', choices=('auto', 'on', 'off'))
    p.add_argument('--cuda_epochs', default=2, type=int, help='epochs of the CUDA run (when CUDA is present)')
    p.add_argument('--skip_cpu', action='store_true')
    args = p.parse_args(argv)
    if not args.skip_cpu:
        cpu_bench(args)
    if torch.cuda.is_available():
        cuda_bench(args)
    else:
        print('CUDA: not available on this machine (the CUDA run has not been executed)')


if __name__ == '__main__':
    main()
