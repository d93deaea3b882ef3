"""Tests of reid/runtime.py: CPU feature detection, the bf16 / channels_last choices, and that the fast paths keep the
features (bf16 within cosine 0.999 of fp32, channels_last + fused conv-BN equal up to float rounding)."""
from argparse import Namespace

import pytest
import torch

from reid import runtime
from reid.evaluation.extract import extract_features
from reid.models.features import fuse_conv_bn
from conftest import build

SMALL = {'backbone': 'resnet18', 'scratch': True, 'droprate': 0.0}


def test_cpu_flags_and_native_bf16(tmp_path):
    info = tmp_path / 'cpuinfo'
    info.write_text('processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\nbugs\t\t: none\n')
    assert 'avx512_bf16' in runtime.cpu_flags(info) and 'bugs' not in runtime.cpu_flags(info)
    assert runtime.cpu_flags(tmp_path / 'missing') == set()
    assert runtime.native_cpu_bf16({'avx2', 'amx_bf16'}) == 'amx_bf16'
    cpu = torch.device('cpu')
    native = {'avx512_bf16'}
    assert runtime.resolve_cpu_bf16('auto', cpu, 'extract', native) == (True, 'auto: the CPU has avx512_bf16')
    assert runtime.resolve_cpu_bf16('auto', cpu, 'extract', {'avx2'})[0] is False
    assert runtime.resolve_cpu_bf16('off', cpu, 'extract', native)[0] is False
    assert runtime.resolve_cpu_bf16('on', cpu, 'extract', set())[0] is True
    assert runtime.resolve_cpu_bf16('on', torch.device('cuda'), 'extract', set())[0] is False


def test_auto_bf16_is_decided_per_job_by_the_measurement():
    """Training in bf16 cost 0.75-1.32 mAP on the quick start (bar 1.0): fp32 unless --cpu_bf16 on asks; extraction
    kept cosine 0.9999: bf16 where the CPU has it natively."""
    cpu, native = torch.device('cpu'), {'amx_bf16'}
    on, reason = runtime.resolve_cpu_bf16('auto', cpu, 'train', native)
    assert on is False and 'fp32 for training' in reason and '--cpu_bf16 on' in reason
    assert runtime.resolve_cpu_bf16('on', cpu, 'train', set()) == (True, '--cpu_bf16 on')
    assert runtime.resolve_cpu_bf16('auto', cpu, 'extract', native)[0] is True
    assert runtime.AUTO_BF16 == {'train': False, 'extract': True}
    assert runtime.use_channels_last('auto', cpu) and not runtime.use_channels_last('off', cpu)


def test_every_machine_dependent_decision_can_be_forced(monkeypatch):
    """REID_NATIVE_BF16 decides native bf16 either way on any CPU; REID_DEVICE=cpu decides as if CUDA were absent;
    a typo is named. Explicit flags (as the tests pass them) are never overridden."""
    cpu = torch.device('cpu')
    monkeypatch.setenv('REID_NATIVE_BF16', '1')
    assert runtime.native_cpu_bf16() == 'REID_NATIVE_BF16=1'
    assert runtime.resolve_cpu_bf16('auto', cpu) == (True, 'auto: the CPU has REID_NATIVE_BF16=1')
    assert runtime.resolve_cpu_bf16('auto', cpu, 'train')[0] is False
    assert runtime.native_cpu_bf16(set()) is None   # a flag set given explicitly is read as it is
    monkeypatch.setenv('REID_NATIVE_BF16', '0')
    assert runtime.native_cpu_bf16() is None and runtime.resolve_cpu_bf16('auto', cpu)[0] is False
    assert runtime.resolve_cpu_bf16('on', cpu)[0] is True
    monkeypatch.setenv('REID_NATIVE_BF16', 'yes')
    with pytest.raises(ValueError, match='REID_NATIVE_BF16=yes'):
        runtime.native_cpu_bf16()
    monkeypatch.setenv('REID_DEVICE', 'cpu')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)   # a GPU machine, told to act as a CPU one
    assert runtime.select_device('0')[0] == cpu and not runtime.cuda_available()
    monkeypatch.setenv('REID_DEVICE', 'auto')
    assert runtime.cuda_available()
    monkeypatch.setenv('REID_DEVICE', 'gpu')
    with pytest.raises(ValueError, match='REID_DEVICE=gpu'):
        runtime.cuda_available()


def test_the_runtime_is_chosen_from_the_flags_and_recorded(monkeypatch):
    monkeypatch.setenv('REID_NATIVE_BF16', '0')
    flags = Namespace(gpu_ids='0', fp16=False, bf16=False, cpu_bf16='auto', channels_last='off', num_workers=None)
    chosen, _ = runtime.choose_runtime(flags, 'extract')
    record = chosen.record()
    assert (record['device'], record['precision'], record['channels_last'], record['workers']) == \
        ('cpu', 'float32', False, 0)
    assert record['native_bf16'] is None and record['threads'] == runtime.available_cores()
    monkeypatch.setenv('REID_NATIVE_BF16', '1')
    assert runtime.choose_runtime(flags, 'extract')[0].amp_dtype == torch.bfloat16
    assert runtime.choose_runtime(flags, 'train')[0].amp_dtype is None
    asked = Namespace(**{**vars(flags), 'cpu_bf16': 'on'})
    assert runtime.choose_runtime(asked, 'train')[0].amp_dtype == torch.bfloat16
    assert runtime.choose_runtime(Namespace(**{**vars(flags), 'cpu_bf16': 'off'}), 'extract')[0].amp_dtype is None
    with pytest.raises(ValueError, match='--fp16 needs CUDA'):
        runtime.choose_runtime(Namespace(**{**vars(flags), 'fp16': True, 'gpu_ids': '0'}), 'train')
    with pytest.raises(ValueError, match='pick one'):
        runtime.choose_runtime(Namespace(**{**vars(flags), 'fp16': True, 'bf16': True}), 'extract')


def randomised_net():
    torch.manual_seed(0)
    net = build(SMALL, num_classes=5)
    for module in net.modules():  # non-trivial BN statistics, so the fusion has something to fold
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    return net.eval()


def features_of(net, images, **kwargs):
    loader = [(images[i:i + 4], None) for i in range(0, len(images), 4)]
    return extract_features(net, loader, torch.device('cpu'), **kwargs)


def bf16_runtime():
    return runtime.Runtime(torch.device('cpu'), torch.bfloat16, '--cpu_bf16 on', False, 0, None)


def test_bf16_features_stay_within_cosine_0999_of_fp32():
    """As test.py extracts them: the convolutions on tiny maps in fp32 (without, an AMX Xeon gave cosine 0.985)."""
    net = randomised_net()
    images = torch.randn(8, 3, 64, 32, generator=torch.Generator().manual_seed(1))
    fp32 = features_of(net, images)
    assert bf16_runtime().protect_small_maps(net, (64, 32))
    bf16 = features_of(net, images, amp_dtype=torch.bfloat16)
    cosine = (fp32 * bf16).sum(1)  # both L2-normalised
    assert cosine.min() >= 0.999, cosine
    assert not torch.equal(fp32, bf16)  # bf16 really ran


def conv_output_positions(size, convs):
    """h x w after each (kernel, stride, padding) convolution in turn: floor((n + 2p - k) / s) + 1 per side."""
    h, w = size
    out = []
    for k, stride, pad in convs:
        h, w = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        out.append(h * w)
    return out


def test_the_convolutions_on_tiny_maps_are_found_and_run_in_fp32_under_bf16():
    """ResNet-18 at 64x32 (stride 2): by the convolution arithmetic, layer4 maps onto 2x1 (every one of its convs),
    layer3 onto 4x2; those under 4 positions compute in fp32 under CPU bf16 autocast, the others in bf16; the
    weights (state_dict) are untouched; fp32 runs and CUDA-free fp32 runtimes change nothing."""
    net = build({**SMALL, 'stride': 2}, num_classes=5).eval()
    stem = conv_output_positions((64, 32), [(7, 2, 3), (3, 2, 1)])[-1]   # conv1, then the max-pool
    assert stem == 16 * 8
    layer2, layer3, layer4 = conv_output_positions((16, 8), [(3, 2, 1)] * 3)   # each stage's first conv
    assert (layer2, layer3, layer4) == (32, 8, 2)
    expected = [n for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d) and '.layer4.' in f'.{n}']
    assert runtime.convs_on_small_maps(net, (64, 32)) == expected and len(expected) == 5
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert runtime.Runtime(torch.device('cpu'), None, 'fp32', False, 0, None).protect_small_maps(net, (64, 32)) == []
    assert bf16_runtime().protect_small_maps(net, (64, 32)) == expected
    x = torch.randn(2, 256, 4, 2)
    with torch.autocast('cpu', torch.bfloat16):
        assert net.body.layer4[0].conv1(x).dtype == torch.float32
        assert net.body.layer3[0].conv1(torch.randn(2, 128, 8, 4)).dtype == torch.bfloat16
    assert net.state_dict().keys() == before.keys() and all(torch.equal(net.state_dict()[k], before[k]) for k in before)
    assert runtime.convs_on_small_maps(net, (256, 128)) == []


def test_channels_last_and_fused_conv_bn_keep_the_features():
    net = randomised_net()
    images = torch.randn(8, 3, 64, 32, generator=torch.Generator().manual_seed(2))
    plain = features_of(net, images)
    fast = fuse_conv_bn(net).to(memory_format=torch.channels_last)
    assert next(p for p in fast.parameters() if p.dim() == 4).is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(features_of(fast, images), plain, atol=1e-5, rtol=0)


def test_set_cpu_threads_leaves_cores_to_the_workers():
    before = torch.get_num_threads()
    try:
        assert runtime.set_cpu_threads(data_workers=10**6) == 1 == torch.get_num_threads()
        assert runtime.set_cpu_threads() == runtime.available_cores()
    finally:
        torch.set_num_threads(before)


def test_the_gpu_check_says_in_one_line_that_there_is_no_gpu_and_exits_0(tmp_path):
    """bench/gpu_check.sh on a machine without CUDA (or told REID_DEVICE=cpu): one line, exit 0, nothing written;
    the script parses, and it runs each CUDA path the README's GPU figures come from."""
    import os
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / 'bench' / 'gpu_check.sh'
    assert subprocess.run(['bash', '-n', str(script)]).returncode == 0
    for env in ([{}] if not torch.cuda.is_available() else []) + [{'REID_DEVICE': 'cpu'}]:   # a GPU would run it
        done = subprocess.run(['bash', str(script), str(tmp_path / 'work')], capture_output=True, text=True,
                              timeout=120, env={**os.environ, **env})
        assert done.returncode == 0 and done.stderr == '', done.stderr
        assert done.stdout.count('\n') == 1 and 'no CUDA device here' in done.stdout
        assert 'nothing was run' in done.stdout
        assert not (tmp_path / 'work').exists()
    text = script.read_text()
    for path in ('--fp16', '--bf16', '--compile', 'test.py', 'evaluate_gpu.py', '--rerank', 'torch.distributed.run',
                 'export.py', 'max_memory_allocated'):
        assert path in text, path
