"""Speed settings chosen from the machine at run time: bf16 autocast where the CPU computes bf16 natively,
the channels_last memory format, CPU thread counts.

train.py and test.py call these and record what they chose in opts.yaml; none of them changes results beyond
float rounding (bf16 features stay within cosine 0.999 of fp32, tests/test_speed.py).
"""
import os
from pathlib import Path

import torch

# /proc/cpuinfo flags of CPUs that compute bf16 dot products in hardware (AVX512-BF16: Zen 4+, Cooper Lake+;
# AMX: Sapphire Rapids+). Elsewhere bf16 autocast is emulated and slower than fp32.
NATIVE_BF16_FLAGS = ('avx512_bf16', 'amx_bf16')


def cpu_flags(path='/proc/cpuinfo'):
    """Return the set of CPU feature flags of the first 'flags' line of `path` (empty where it is unreadable)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith('flags'):
                return set(line.split(':', 1)[1].split())
    except OSError:
        pass
    return set()


def native_cpu_bf16(flags=None):
    """Return the flag that gives this CPU native bf16 (e.g. 'avx512_bf16'), or None."""
    flags = cpu_flags() if flags is None else flags
    found = [name for name in NATIVE_BF16_FLAGS if name in flags]
    if found:
        return found[0]
    # no /proc/cpuinfo (macOS, some containers): ask PyTorch's dispatcher what it found
    capability = torch.backends.cpu.get_cpu_capability()
    return capability.lower() if ('BF16' in capability or 'AMX' in capability) else None


def resolve_cpu_bf16(choice, device, flags=None):
    """Return (use bf16 autocast: bool, reason: str) for --cpu_bf16 auto|on|off on `device`.

    Only the CPU is concerned (CUDA keeps --fp16/--bf16); 'auto' turns bf16 on where the CPU has it natively.
    """
    if device.type != 'cpu':
        return False, f'{device.type}: --cpu_bf16 does not apply (use --fp16 or --bf16)'
    if choice in ('on', 'off'):
        return choice == 'on', f'--cpu_bf16 {choice}'
    feature = native_cpu_bf16(flags)
    if feature:
        return True, f'auto: the CPU has {feature}'
    return False, 'auto: no native bf16 on this CPU (bf16 would be emulated, slower than fp32)'


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
