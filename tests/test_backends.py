"""Inference backends: test.py --backend onnxruntime / openvino (fp32, bf16, int8) gives torch's features and
metrics on a trained tiny run, exports on first use and reuses, refuses a stale export; what `auto` picks on each
kind of machine; TensorRT without CUDA; a missing package; the files read back by their consumers' own loaders.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io
import torch
import torch.nn.functional as F
from PIL import Image

import export
from conftest import build, library_messages, load_test_cli, train_tiny_run
from reid import backends
from reid.evaluation import extract
from reid.runs import load_checkpoint, load_opts
from reid.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]
T = load_test_cli()
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope='module')
def trained(tiny_prepared, tmp_path_factory):
    """A 2-epoch ResNet-18 run at 64x32 on the tiny set: (model_dir, name)."""
    return train_tiny_run(tiny_prepared, tmp_path_factory.mktemp('backend_runs'), (64, 32), 2)


def copy_run(trained, tmp_path):
    """A private copy of the trained run (tests that export or change files must not share them)."""
    model_dir, name = trained
    shutil.copytree(model_dir / name, tmp_path / 'model' / name)
    return tmp_path / 'model', name


def run_test(model_dir, name, prepared, result, *extra):
    opts = T.build_parser().parse_args(['--name', name, '--model_dir', str(model_dir), '--test_dir', str(prepared),
                                        '--batchsize', '32', '--result', str(result), *extra])
    with library_messages() as lines:
        results = extract.run_test(opts)
    return results, '\n'.join(lines)


def hand_features(model_dir, name, paths):
    """test.py's features of `paths` computed without the toolkit's transforms: PIL's bicubic resize, the
    normalisation written out, the unfused network on the image and its mirror image, L2."""
    opts = load_opts(model_dir / name / 'opts.yaml')
    net = build(opts, opts['nclasses'], pretrained=False)
    net.load_state_dict(load_checkpoint(model_dir / name / 'net_last.pth'))
    net.eval()
    rows = []
    for path in paths:
        with Image.open(path) as img:
            pixels = np.asarray(img.convert('RGB').resize((opts['w'], opts['h']), Image.BICUBIC), dtype=np.float32)
        x = torch.from_numpy(((pixels / 255.0 - MEAN) / STD).astype(np.float32)).permute(2, 0, 1)[None]
        with torch.no_grad():
            f = net(x, return_feature=True) + net(x.flip(3), return_feature=True)
        rows.append(F.normalize(f, dim=1)[0].numpy())
    return np.stack(rows)


def openvino_computes_bf16():
    """True where OpenVINO's CPU plugin has bf16 kernels (avx512_bf16 or AMX); elsewhere its bf16 hint is fp32."""
    import openvino

    return 'BF16' in openvino.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES')


def query_paths(prepared):
    folder = prepared / 'query'
    return [folder / d / f for d in sorted(os.listdir(folder)) for f in sorted(os.listdir(folder / d))]


@pytest.mark.parametrize('backend,precision', [('onnxruntime', 'fp32'), ('openvino', 'fp32'), ('openvino', 'bf16')])
def test_backend_gives_torch_features_and_metrics(trained, tiny_prepared, tmp_path, backend, precision):
    model_dir, name = copy_run(trained, tmp_path)
    ref, _ = run_test(model_dir, name, tiny_prepared, tmp_path / 'torch.mat', '--backend', 'torch', '--cpu_bf16', 'off')
    got, printed = run_test(model_dir, name, tiny_prepared, tmp_path / 'b.mat', '--backend', backend,
                            '--precision', precision)
    assert f'backend {backend} {precision}' in printed and 'exporting on first use' in printed
    mine = scipy.io.loadmat(tmp_path / 'b.mat')
    paths = query_paths(tiny_prepared)
    hand = hand_features(model_dir, name, paths)
    cosines = (mine['query_f'] * hand).sum(1)
    bound = backends.MIN_COSINE[precision]
    assert cosines.min() >= bound, cosines.min()
    if precision == 'fp32':
        np.testing.assert_allclose(mine['query_f'], hand, atol=2e-4)
        assert got['single']['mAP'] == pytest.approx(ref['single']['mAP'], abs=1e-6)
        np.testing.assert_allclose(got['single']['cmc'], ref['single']['cmc'], atol=1e-6)
    else:   # bf16 computes differently (not fp32 in disguise) where the CPU has it, within its bound
        assert np.allclose(mine['query_f'], hand, atol=2e-4) != openvino_computes_bf16()
        assert abs(got['single']['mAP'] - ref['single']['mAP']) < 0.02
    # the export stays in the run folder and is reused: no second export
    artifact = model_dir / name / ('net_last.onnx' if backend == 'onnxruntime' else 'net_last_openvino_model')
    assert artifact.exists()
    stamp = artifact.stat().st_mtime_ns
    _, printed = run_test(model_dir, name, tiny_prepared, tmp_path / 'c.mat', '--backend', backend,
                          '--precision', precision)
    assert 'exporting' not in printed and artifact.stat().st_mtime_ns == stamp


def runtime(device='cpu', amp=None, reason='auto: test'):
    return Runtime(torch.device(device), amp, reason, True, 0, 1)


def flags(**kw):
    return SimpleNamespace(**{'backend': 'auto', 'precision': None, 'fp16': False, 'bf16': False, **kw})


def test_auto_picks_the_measured_backend_and_follows_the_cpu_bf16_choice(monkeypatch):
    from reid.runtime import resolve_cpu_bf16

    for native, expected in (('1', 'bf16'), ('0', 'fp32')):   # both kinds of CPU, forced (REID_NATIVE_BF16)
        monkeypatch.setenv('REID_NATIVE_BF16', native)
        on, reason = resolve_cpu_bf16('auto', torch.device('cpu'), 'extract')
        choice = backends.choose_backend(flags(), runtime(amp=torch.bfloat16 if on else None, reason=reason))
        assert (choice.name, choice.precision) == ('openvino', expected), choice
    assert backends.choose_backend(flags(), runtime('cuda')).name == 'torch'
    several = backends.choose_backend(flags(), runtime(), single_scale=False)
    assert several.name == 'torch' and '--ms' in several.reason
    assert backends.choose_backend(flags(bf16=True), runtime(amp=torch.bfloat16)).name == 'torch'
    assert backends.choose_backend(flags(backend='torch'), runtime()).name == 'torch'
    assert backends.choose_backend(flags(backend='openvino', precision='int8'), runtime()).precision == 'int8'
    # an unsupported combination is one line naming the flags
    with pytest.raises(ValueError, match='--backend onnxruntime --precision bf16'):
        backends.choose_backend(flags(backend='onnxruntime', precision='bf16'), runtime())
    with pytest.raises(ValueError, match='--ms'):
        backends.choose_backend(flags(backend='openvino'), runtime(), single_scale=False)
    with pytest.raises(ValueError, match='whose precision is set by --fp16'):
        backends.choose_backend(flags(backend='torch', precision='fp32'), runtime())


def test_auto_without_the_package_runs_torch_and_a_named_backend_names_the_pip_line(monkeypatch):
    real = backends.importlib.import_module

    def no_openvino(name, *a, **k):
        if name.split('.')[0] == 'openvino':
            raise ImportError(name)
        return real(name, *a, **k)
    monkeypatch.setattr(backends, 'installed', lambda module: module != 'openvino')
    monkeypatch.setattr(backends.importlib, 'import_module', no_openvino)
    choice = backends.choose_backend(flags(), runtime())
    assert choice.name == 'torch' and 'pip install openvino==' in choice.reason
    with pytest.raises(ValueError, match=r'not installed here: pip install openvino==2026\.4\.1 nncf==3\.4\.0'):
        backends.choose_backend(flags(backend='openvino'), runtime())


def test_tensorrt_without_cuda_is_one_line_and_a_failing_exit(trained, tiny_prepared, tmp_path, monkeypatch):
    model_dir, name = copy_run(trained, tmp_path)
    monkeypatch.setenv('REID_DEVICE', 'cpu')   # also on a machine with a GPU
    for main, argv in ((export.main, ['--name', name, '--model_dir', str(model_dir), '--format', 'tensorrt']),
                       (T.main, ['--name', name, '--model_dir', str(model_dir), '--test_dir', str(tiny_prepared),
                                 '--result', str(tmp_path / 'r.mat'), '--backend', 'tensorrt'])):
        with pytest.raises(SystemExit) as err:
            main(argv)
        message = str(err.value.code)
        assert isinstance(err.value.code, str) and '\n' not in message and 'CUDA' in message, message
    assert not list((model_dir / name).glob('*.engine*')) and not (tmp_path / 'r.mat').exists()
    # the same from a shell: a non-zero exit status
    proc = subprocess.run([sys.executable, 'export.py', '--name', name, '--model_dir', str(model_dir), '--format',
                           'tensorrt'], cwd=ROOT, capture_output=True, text=True, env={**os.environ, 'REID_DEVICE': 'cpu'})
    assert proc.returncode != 0 and 'needs CUDA' not in proc.stdout and 'CUDA' in proc.stderr


def test_stale_export_is_refused_by_name_and_renewed_by_auto(trained, tiny_prepared, tmp_path):
    model_dir, name = copy_run(trained, tmp_path)
    run_dir = model_dir / name
    run_test(model_dir, name, tiny_prepared, tmp_path / 'a.mat', '--backend', 'openvino', '--precision', 'fp32')
    # the checkpoint changes (training resumed): its export is older
    state = load_checkpoint(run_dir / 'net_last.pth')
    torch.save({k: v * 1.5 if v.is_floating_point() else v for k, v in state.items()}, run_dir / 'net_last.pth')
    with pytest.raises(SystemExit) as err:
        T.main(['--name', name, '--model_dir', str(model_dir), '--test_dir', str(tiny_prepared), '--result',
                str(tmp_path / 'b.mat'), '--backend', 'openvino', '--precision', 'fp32'])
    message = str(err.value.code)
    assert '\n' not in message and 'older net_last.pth' in message and 'python export.py' in message, message
    assert not (tmp_path / 'b.mat').exists()
    _, printed = run_test(model_dir, name, tiny_prepared, tmp_path / 'c.mat')   # auto: its own cache, renewed
    assert 'exporting again' in printed and 'backend openvino' in printed
    hand = hand_features(model_dir, name, query_paths(tiny_prepared)[:3])
    assert ((scipy.io.loadmat(tmp_path / 'c.mat')['query_f'][:3] * hand).sum(1) >= 0.999).all()
    # an export of another epoch put under this epoch's name
    shutil.copy(run_dir / 'net_last.pth', run_dir / 'net_000.pth')
    shutil.copytree(run_dir / 'net_last_openvino_model', run_dir / 'net_0_openvino_model')
    with pytest.raises(SystemExit, match='belongs to another epoch'):
        T.main(['--name', name, '--model_dir', str(model_dir), '--test_dir', str(tiny_prepared), '--result',
                str(tmp_path / 'd.mat'), '--backend', 'openvino', '--precision', 'fp32', '--which_epoch', '0'])


def test_exports_are_read_by_their_consumers_own_loaders(trained, tmp_path):
    import onnxruntime
    import openvino

    model_dir, name = copy_run(trained, tmp_path)
    run_dir = model_dir / name
    for fmt in ('onnx', 'openvino'):
        export.main(['--name', name, '--model_dir', str(model_dir), '--format', fmt])
    sha = hashlib.sha256((run_dir / 'net_last.pth').read_bytes()).hexdigest()
    images = np.random.default_rng(0).standard_normal((5, 3, 64, 32)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(run_dir / 'net_last.onnx'), providers=['CPUExecutionProvider'])
    assert [i.name for i in session.get_inputs()] == ['images']
    by_ort = session.run(None, {'images': images})[0]
    compiled = openvino.Core().compile_model(str(run_dir / 'net_last_openvino_model' / 'net_last.xml'), 'CPU',
                                             {'INFERENCE_PRECISION_HINT': 'f32'})
    by_ov = compiled(images)[0]
    assert by_ort.shape == by_ov.shape == (5, 512)
    np.testing.assert_allclose(np.linalg.norm(by_ov, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(by_ov, by_ort, atol=1e-4)
    for meta_file, sidecars in ((run_dir / 'net_last.json', [run_dir / 'net_last.onnx.metadata.json']),
                                (run_dir / 'net_last_openvino_model' / 'net_last.json',
                                 [run_dir / 'net_last_openvino_model' / 'net_last.xml.metadata.json',
                                  run_dir / 'net_last_openvino_model' / 'manifest.json'])):
        meta = json.loads(meta_file.read_text())
        assert (meta['h'], meta['w'], meta['interpolation'], meta['feature_size']) == (64, 32, 'bicubic', 512)
        assert meta['mean'] == pytest.approx(MEAN) and meta['std'] == pytest.approx(STD)
        for sidecar in sidecars:   # BoxMOT's keys (boxmot/reid/core/artifacts.py)
            box = json.loads(sidecar.read_text())
            assert box['source_sha256'] == sha and box['img_size'] == [64, 32] and box['preprocess'] == 'resize'
            assert box['schema_version'] == 1 and box['num_classes'] == load_opts(run_dir / 'opts.yaml')['nclasses']


def test_int8_export_calibrates_measures_and_changes_nothing_at_home(trained, tiny_prepared, tmp_path):
    model_dir, name = copy_run(trained, tmp_path)
    home = tmp_path / 'home'
    home.mkdir()
    env = {**os.environ, 'HOME': str(home), 'PYTHONWARNINGS': 'ignore'}
    env.pop('CI', None)   # telemetry stays off in CI anyway: the check is for a user's machine
    proc = subprocess.run([sys.executable, 'export.py', '--name', name, '--model_dir', str(model_dir), '--format',
                           'openvino', '--precision', 'int8', '--calib_dir', str(tiny_prepared), '--calib_images', '40'],
                          cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    fp32 = [line for line in lines if line.startswith('fp32: Rank@1')]
    int8 = [line for line in lines if line.startswith('int8: Rank@1')]
    assert len(fp32) == 1 and len(int8) == 1 and '12 val queries x 48 train images' in int8[0], proc.stdout
    folder = model_dir / name / 'net_last_int8_openvino_model'
    assert (folder / 'net_last.xml').is_file() and (folder / 'net_last.bin').is_file()
    fp32_bin = model_dir / name / 'net_last_openvino_model' / 'net_last.bin'
    assert (folder / 'net_last.bin').stat().st_size < 0.5 * fp32_bin.stat().st_size   # int8 weights
    assert not (home / 'intel').exists(), sorted(p.name for p in home.rglob('*'))   # no telemetry client id


def test_int8_is_refused_in_one_line_when_there_is_nothing_to_measure(trained, tiny_prepared, tmp_path):
    model_dir, name = copy_run(trained, tmp_path)
    no_val = tmp_path / 'no_val'
    shutil.copytree(tiny_prepared / 'train', no_val / 'train')
    with pytest.raises(SystemExit) as err:
        export.main(['--name', name, '--model_dir', str(model_dir), '--format', 'openvino', '--precision', 'int8',
                     '--calib_dir', str(no_val)])
    assert 'nothing to measure' in str(err.value.code) and '\n' not in str(err.value.code)
    assert not list((model_dir / name).glob('*openvino*'))


def test_api_and_demo_take_the_backend(trained, tiny_prepared, tmp_path, capsys):
    from reid.api import ReIDRun

    model_dir, name = copy_run(trained, tmp_path)
    paths = query_paths(tiny_prepared)[:4]
    run = ReIDRun(model_dir / name, backend='onnxruntime')
    assert (run.backend.name, run.backend.precision) == ('onnxruntime', 'fp32')
    np.testing.assert_allclose(run.features(paths).numpy(), hand_features(model_dir, name, paths), atol=2e-4)
    calls, export_runner = [], run.runner
    run.runner = lambda batch: calls.append(batch.shape) or export_runner(batch)
    run.features(paths)
    assert calls == [(len(paths), 3, *run.size)]   # the features came from the export, not from torch
    assert ReIDRun(model_dir / name, backend='torch').runner is None
    import demo

    run_test(model_dir, name, tiny_prepared, tmp_path / 'r.mat', '--backend', 'torch')
    capsys.readouterr()
    demo.main(['--query_image', str(paths[0]), '--name', name, '--model_dir', str(model_dir), '--test_dir',
               str(tiny_prepared), '--result', str(tmp_path / 'r.mat'), '--output', str(tmp_path / 'show.png'),
               '--backend', 'openvino', '--precision', 'fp32'])
    out = capsys.readouterr().out
    assert 'embedded with backend openvino fp32' in out and ' 1 id ' in out


def test_an_export_that_drifts_from_torch_is_not_kept(trained, tmp_path, monkeypatch):
    """A runtime that computes slightly different features (cosine about 0.995, what a wrong resize or a lossy
    conversion gives) fails the export's check: nothing is written, the message names the bound."""
    import dataclasses

    from reid import export as exporting

    real = exporting.FORMATS['onnx']

    def drifting(path, precision='fp32'):
        run = real.open(path, precision)
        noise = np.random.default_rng(0).standard_normal(512).astype(np.float32) * 0.1 / np.sqrt(512)
        return lambda batch: run(batch) + noise
    monkeypatch.setitem(exporting.FORMATS, 'onnx', dataclasses.replace(real, open=drifting))
    model_dir, name = copy_run(trained, tmp_path)
    with pytest.raises(SystemExit, match=r'differ from torch .* < 0\.9999\); not written'):
        export.main(['--name', name, '--model_dir', str(model_dir), '--format', 'onnx'])
    assert sorted(p.name for p in (model_dir / name).glob('net_last*')) == ['net_last.pth']
