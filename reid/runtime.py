"""What this machine chose for a run, apart from what the user asked for: the device, the autocast precision, the
memory format, CPU threads and data-loading workers; decided anew on every run from the machine and the flags.

train.py records the choice in opts.yaml under `runtime` (a reader sees what ran); --resume never reads it back as
a request. Each machine-dependent decision can be forced, so one machine runs every path: REID_NATIVE_BF16=1|0
(decide as if the CPU had / lacked native bf16) and REID_DEVICE=cpu (decide as if CUDA were absent).
"""
import contextlib
import logging
import os
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

# /proc/cpuinfo flags of CPUs that compute bf16 dot products in hardware (AVX512-BF16: Zen 4+, Cooper Lake+;
# AMX: Sapphire Rapids+). Elsewhere bf16 autocast is emulated and slower than fp32.
NATIVE_BF16_FLAGS = ('avx512_bf16', 'amx_bf16')
# 1 or 0: decide as if this CPU had (or lacked) native bf16, so every machine can run both paths (tests, CI).
FORCE_NATIVE_BF16 = 'REID_NATIVE_BF16'
# cpu: decide as if CUDA were absent (the CPU paths on a GPU machine).
FORCE_DEVICE = 'REID_DEVICE'
# What `--cpu_bf16 auto` chooses per job on a CPU with native bf16, by measurement (python -m bench.precision on a
# 2-core EPYC with avx512_bf16, docs/benchmarks.md "bf16 on the CPU"): training the quick start in bf16 cost 1.32 mAP
# points over seeds 0-2 at 64x32 (1.36x as fast) and 0.75 at 128x64 (1.50x), against a bar of 1.0 and a seed spread of
# 2-4 points -> fp32, which also trains the same network on CPUs with and without bf16; extraction in bf16 ran 1.6x as
# fast with features within cosine 0.9999 of fp32's and the same mAP -> bf16.
AUTO_BF16 = {'train': False, 'extract': True}
# What `--backend auto` runs extraction on, per device, by measurement (python -m bench.backends, docs/benchmarks.md
# "Inference backends"): on the CPU, OpenVINO (its fp32 IR, computed in bf16 where the CPU has it natively, as
# --cpu_bf16 auto) extracted ResNet-50 1.32x as fast as torch bf16 on EPYC-bf16 and 1.42x as fast as torch fp32 with
# AVX2 only (emulated), and gave test.py's mAP on the quick start's run (59.98 bf16, 60.01 f32; torch fp32 60.01);
# int8 is faster still but costs 0.34 points, so it is asked for, not chosen. On CUDA torch (an engine is asked for:
# TensorRT takes minutes to build one).
AUTO_BACKEND = {'cpu': 'openvino', 'cuda': 'torch'}


# PyTorch 2.14's oneDNN bf16 convolution is wrong on the tiniest maps, measured (bench/precision.py's kernels): a
# stride-2 3x3 convolution onto a 2x1 map gives features at cosine 0.15-0.36 to fp32's and NaNs, flaky, on a Xeon
# with AMX; its backward breaks the weights where the input map is 2x1 on an EPYC with avx512_bf16. Under CPU bf16
# autocast, convolutions whose output has fewer positions than this run in fp32 (they cost next to nothing).
SMALL_MAP_POSITIONS = 4


def _cpuinfo_value(key, path):
    """Return the value of the first line of `path` (/proc/cpuinfo's format) starting with `key`, or None."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(':', 1)[1]
    except OSError:
        pass
    return None


def cpu_flags(path='/proc/cpuinfo'):
    """Return the set of CPU feature flags of the first 'flags' line of `path` (empty where it is unreadable)."""
    return set((_cpuinfo_value('flags', path) or '').split())


def cpu_model(path='/proc/cpuinfo'):
    """Return the CPU's model name (the first 'model name' line of `path`), or the platform's processor string."""
    name = _cpuinfo_value('model name', path)
    if name is not None:
        return name.strip()
    import platform

    return platform.processor() or 'unknown'


def native_cpu_bf16(flags=None):
    """Return the flag that gives this CPU native bf16 (e.g. 'avx512_bf16'), or None (REID_NATIVE_BF16 forces it)."""
    forced = os.environ.get(FORCE_NATIVE_BF16, '').strip() if flags is None else ''
    if forced in ('0', '1'):
        return f'{FORCE_NATIVE_BF16}=1' if forced == '1' else None
    if forced:
        raise ValueError(f'{FORCE_NATIVE_BF16}={forced}: expected 1 (native bf16) or 0 (none)')
    flags = cpu_flags() if flags is None else flags
    found = [name for name in NATIVE_BF16_FLAGS if name in flags]
    if found:
        return found[0]
    # no /proc/cpuinfo (macOS, some containers): ask PyTorch's dispatcher what it found
    capability = torch.backends.cpu.get_cpu_capability()
    return capability.lower() if ('BF16' in capability or 'AMX' in capability) else None


def cuda_available():
    """True when CUDA can be used and REID_DEVICE does not say cpu."""
    forced = os.environ.get(FORCE_DEVICE, '').strip().lower()
    if forced not in ('', 'cpu', 'auto'):
        raise ValueError(f'{FORCE_DEVICE}={forced}: expected cpu (or auto)')
    return forced != 'cpu' and torch.cuda.is_available()


def pick_device(device=None):
    """Return `device` as a torch.device, or by default CUDA when present (and REID_DEVICE does not say cpu),
    else the CPU: the library's default wherever a caller names no device."""
    if device is not None:
        return torch.device(device)
    return torch.device('cuda' if cuda_available() else 'cpu')


def select_device(gpu_ids=''):
    """Return (torch.device, note): the first id of `gpu_ids` ('0' or '0,1') when CUDA exists, else the CPU.

    `note` is None or a sentence the CLI prints (ignored ids on CPU, extra ids unused).
    """
    try:
        ids = [int(s) for s in str(gpu_ids or '').replace(' ', '').split(',') if s.strip() not in ('', '-1')]
    except ValueError:
        raise ValueError(f"--gpu_ids {gpu_ids}: expected GPU numbers such as '0' or '0,1'") from None
    if not cuda_available():
        note = f'CUDA is not available: --gpu_ids {gpu_ids} ignored, running on the CPU' if ids else None
        return torch.device('cpu'), note
    if not ids:
        return torch.device('cuda', 0), None
    if ids[0] >= torch.cuda.device_count():
        raise ValueError(f'--gpu_ids {gpu_ids}: only {torch.cuda.device_count()} CUDA device(s) present')
    note = f'--gpu_ids {gpu_ids}: one process uses one GPU, running on cuda:{ids[0]}' if len(ids) > 1 else None
    return torch.device('cuda', ids[0]), note


def loader_workers(requested, device):
    """Return the DataLoader worker count: `requested`, or by default 2 with CUDA and 0 on the CPU, where
    worker processes would compete with the network for the same few cores."""
    if requested is not None:
        return requested
    return 2 if device.type == 'cuda' else 0


def resolve_cpu_bf16(choice, device, job='extract', flags=None):
    """Return (use bf16 autocast: bool, reason: str) for --cpu_bf16 auto|on|off on `device` for `job` ('train' or
    'extract').

    Only the CPU is concerned (CUDA keeps --fp16/--bf16); 'auto' turns bf16 on where the CPU has it natively and
    the measurement says the job keeps its accuracy (AUTO_BF16).
    """
    if device.type != 'cpu':
        return False, f'{device.type}: --cpu_bf16 does not apply (use --fp16 or --bf16)'
    if choice in ('on', 'off'):
        return choice == 'on', f'--cpu_bf16 {choice}'
    feature = native_cpu_bf16(flags)
    if not feature:
        return False, 'auto: no native bf16 on this CPU (bf16 would be emulated, slower than fp32)'
    if not AUTO_BF16[job]:
        return False, (f'auto: fp32 for {job}ing although the CPU has {feature} (bf16 cost 0.75-1.32 mAP points '
                       'on the quick start; --cpu_bf16 on asks for it)')
    return True, f'auto: the CPU has {feature}'


def use_channels_last(choice, device):
    """Return True when convolutions should run in channels_last: --channels_last on, or auto on CPU and CUDA.

    oneDNN (CPU) and cuDNN (tensor cores) both have their fastest convolutions for NHWC; bench/bench_train.py
    measures it against the default format.
    """
    if choice in ('on', 'off'):
        return choice == 'on'
    return device.type in ('cpu', 'cuda')


def memory_format(channels_last):
    return torch.channels_last if channels_last else torch.contiguous_format


def available_cores():
    """Return the CPU cores this process may use (its affinity mask, e.g. under taskset or a container)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_cpu_threads(data_workers=0, processes=None):
    """Give PyTorch's intra-op pool this process's share of the cores (torchrun's LOCAL_WORLD_SIZE processes
    share them), less its data-loading workers, at least one thread; return the count.

    One inter-op thread: the models here run one op at a time, extra pools only compete for the same cores.
    """
    processes = processes or int(os.environ.get('LOCAL_WORLD_SIZE', os.environ.get('WORLD_SIZE', 1)))
    threads = max(1, available_cores() // max(1, processes) - data_workers)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only allowed before the first parallel work; keep what is there
        pass
    return threads


def autocast(device, amp_dtype):
    """Return the torch.autocast context for `amp_dtype` (torch.float16/bfloat16) or a no-op for None."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


@dataclass(frozen=True)
class Runtime:
    """What a run executes on: chosen by choose_runtime, recorded by record()."""
    device: torch.device
    amp_dtype: Optional[torch.dtype]
    precision_reason: str
    channels_last: bool
    workers: int
    threads: Optional[int]

    @property
    def memory_format(self):
        return memory_format(self.channels_last)

    def autocast(self):
        return autocast(self.device, self.amp_dtype)

    def protect_small_maps(self, model, size):
        """Under CPU bf16 autocast, make the convolutions of `model` with tiny output maps for (h, w) = `size`
        inputs (convs_on_small_maps) compute in fp32; return their names (empty when nothing changed)."""
        if self.device.type != 'cpu' or self.amp_dtype != torch.bfloat16:
            return []
        names = convs_on_small_maps(model, size, self.device)
        for name in names:
            conv = model.get_submodule(name)
            conv.forward = types.MethodType(_fp32_forward, conv)   # per instance: state_dict keys unchanged
        return names

    def record(self):
        """Return the choice as plain values for opts.yaml's `runtime` entry, with what the machine is."""
        out = {'device': str(self.device), 'precision': str(self.amp_dtype or torch.float32).replace('torch.', ''),
               'precision_reason': self.precision_reason, 'channels_last': self.channels_last,
               'workers': self.workers, 'threads': self.threads, 'torch': str(torch.__version__)}
        if self.device.type == 'cuda':
            out['gpu'] = torch.cuda.get_device_name(self.device)
        else:
            out.update(cpu=cpu_model(), cores=available_cores(), native_bf16=native_cpu_bf16())
        return out


def add_runtime_flags(parser):
    """Add the flags that steer the runtime (device, precision, memory format, workers) to `parser`."""
    g = parser.add_argument_group('runtime', 'how this machine runs the job (recorded, never part of the recipe)')
    g.add_argument('--gpu_ids', default='0', type=str, help='GPU id, e.g. 0 (ignored on a CPU-only machine)')
    g.add_argument('--fp16', action='store_true', help='float16 mixed precision (CUDA)')
    g.add_argument('--bf16', action='store_true', help='bfloat16 mixed precision (CUDA or CPU)')
    g.add_argument('--cpu_bf16', default='auto', choices=('auto', 'on', 'off'),
                   help='on the CPU: bf16 autocast (auto: for extraction where the CPU has native bf16, e.g. '
                        'avx512_bf16 or AMX; training stays fp32, where bf16 cost accuracy)')
    g.add_argument('--channels_last', default='auto', choices=('auto', 'on', 'off'),
                   help='run convolutions in the channels_last memory format (auto: on)')
    g.add_argument('--num_workers', default=None, type=int,
                   help='data loading processes (default 2 with CUDA, 0 = in the main process on the CPU)')
    return g


def convs_on_small_maps(model, size, device='cpu'):
    """Return the names of the Conv2d layers of `model` whose output map for one (h, w) = `size` image has fewer
    than SMALL_MAP_POSITIONS positions (found by one fp32 forward in eval mode; the model's mode is restored)."""
    found, hooks = [], []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            hooks.append(module.register_forward_hook(
                lambda m, i, out, name=name: found.append(name)
                if out.shape[-2] * out.shape[-1] < SMALL_MAP_POSITIONS else None))
    was_training = model.training
    try:
        with torch.no_grad(), autocast(torch.device(device), None):
            model.eval()(torch.zeros(1, 3, *size, device=device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return found


def log_small_maps(names):
    """Say which convolutions protect_small_maps keeps in fp32 (nothing when there are none)."""
    if names:
        logging.getLogger(__name__).info(f'bf16 autocast: {len(names)} convolution(s) with output maps under {SMALL_MAP_POSITIONS} positions run '
            f'in fp32 (PyTorch\'s oneDNN bf16 kernel is wrong on them): {", ".join(names[:4])}'
            + (', ...' if len(names) > 4 else ''))


def _fp32_forward(self, x):
    with torch.autocast('cpu', enabled=False):
        return type(self).forward(self, x.float())


def choose_runtime(opts, job, local_rank=None):
    """Return (the Runtime, a note or None) for flags `opts` (gpu_ids, fp16, bf16, cpu_bf16, channels_last,
    num_workers) and `job` ('train' or 'extract') on this machine, and set PyTorch's CPU threads to match.
    `local_rank`: the GPU of this torchrun process.

    ValueError naming the flag for --fp16 with --bf16, or --fp16 without CUDA.
    """
    if opts.fp16 and opts.bf16:
        raise ValueError('--fp16 and --bf16: pick one')
    device, note = select_device(opts.gpu_ids)
    if local_rank is not None and device.type == 'cuda':
        device = torch.device('cuda', local_rank)
    if opts.fp16 and device.type != 'cuda':
        raise ValueError('--fp16 needs CUDA; use --bf16 for mixed precision on the CPU')
    workers = loader_workers(opts.num_workers, device)
    threads = set_cpu_threads(workers) if device.type == 'cpu' else None
    if opts.fp16 or opts.bf16:
        amp, reason = (torch.float16, '--fp16') if opts.fp16 else (torch.bfloat16, '--bf16')
    else:
        on, reason = resolve_cpu_bf16(opts.cpu_bf16, device, job)
        amp = torch.bfloat16 if on else None
    runtime = Runtime(device, amp, reason, use_channels_last(opts.channels_last, device), workers, threads)
    return runtime, note
