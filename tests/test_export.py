"""export.py: the ONNX file (run by onnxruntime) and the TorchScript file give test.py's features on real images,
for any batch size, and the JSON beside them says how to feed them."""
import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import export
from conftest import build, hand_transform
from reid.data.prepared import list_reid_images
from reid.runs import save_opts
from reid import export as exporting

H, W = 64, 32


def write_run(run_dir, pcb, seed=0, epoch='last'):
    """A run as train.py leaves it (opts.yaml + net_<epoch>.pth), with random weights and BatchNorm statistics."""
    opts = {'name': run_dir.name, 'backbone': 'resnet18', 'scratch': True, 'PCB': pcb, 'h': H, 'w': W,
            'nclasses': 5, 'linear_num': 64, 'droprate': 0.5, 'stride': 2, 'use_dense': False}
    torch.manual_seed(seed)
    net = build(opts, 5, pretrained=False)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith('running_mean') or name.endswith('running_var'):
                t.copy_(torch.rand(t.shape) * 0.5 + (0.75 if name.endswith('var') else -0.25))
    save_opts(opts, run_dir / 'opts.yaml')
    torch.save(net.state_dict(), run_dir / f'net_{epoch}.pth')
    return net.eval()


def reference_features(net, images, pcb):
    """The original test.py's formula written out: ff = feature(image) + feature(flipped image), divided by its L2
    norm (PCB, here [N, 6, D]: by the norm of each part times sqrt(6))."""
    with torch.no_grad():
        ff = net(images, return_feature=True) + net(images.flip(3), return_feature=True)
    if pcb:
        fnorm = torch.norm(ff, p=2, dim=2, keepdim=True) * 6 ** 0.5
        return ff.div(fnorm).reshape(ff.shape[0], -1)
    return ff.div(torch.norm(ff, p=2, dim=1, keepdim=True))


def real_images(prepared, n):
    tf = hand_transform(H, W)
    return torch.stack([tf(Image.open(p).convert('RGB')) for p, _, _ in list_reid_images(prepared / 'query')[:n]])


@pytest.mark.parametrize('fmt,pcb', [('onnx', False), ('onnx', True), ('torchscript', True)])
def test_export_matches_torch_features(tmp_path, tiny_prepared, capsys, fmt, pcb):
    net = write_run(tmp_path / 'model' / 'run', pcb)
    export.main(['--name', 'run', '--model_dir', str(tmp_path / 'model'), '--format', fmt])
    suffix = '.onnx' if fmt == 'onnx' else '.pt'
    path = tmp_path / 'model' / 'run' / f'net_last{suffix}'
    meta = json.loads(path.with_suffix('.json').read_text())
    assert (meta['h'], meta['w'], meta['run'], meta['format']) == (H, W, 'run', fmt)
    assert meta['mean'] == pytest.approx([0.485, 0.456, 0.406]) and meta['std'] == pytest.approx([0.229, 0.224, 0.225])
    assert meta['feature_size'] == (6 * 512 if pcb else 64)
    assert 'min cosine' in capsys.readouterr().out
    assert not list(path.parent.glob('*.partial*'))  # written to a temporary name, renamed once checked
    assert sorted(p.name for p in path.parent.glob('net_last.*')) == sorted(
        ['net_last.pth', path.name, 'net_last.json', path.name + '.metadata.json'])  # no external weights beside it
    for n in (1, 5):  # a batch size other than the export example's: the batch axis is dynamic
        images = real_images(tiny_prepared, n)
        got = exporting.exported_features(path, fmt, images)
        ref = reference_features(net, images, pcb)
        assert got.shape == (n, meta['feature_size'])
        assert F.cosine_similarity(got.double(), ref.double(), dim=1).min() >= 0.9999


def test_export_errors_are_one_line(tmp_path):
    with pytest.raises(SystemExit, match='opts.yaml not found'):
        export.main(['--name', 'missing', '--model_dir', str(tmp_path)])
    write_run(tmp_path / 'run', pcb=False)
    with pytest.raises(SystemExit, match='net_007.pth: checkpoint not found'):
        export.main(['--name', 'run', '--model_dir', str(tmp_path), '--which_epoch', '7'])


def test_export_holds_the_asked_epochs_weights_and_goes_where_output_says(tmp_path, tiny_prepared):
    """--which_epoch init exports net_init.pth (not net_last.pth beside it); --output puts the file, and its JSON
    beside it, where the user says, leaving the run folder without an export."""
    run_dir = tmp_path / 'model' / 'run'
    last = write_run(run_dir, pcb=False, seed=0)
    init = write_run(run_dir, pcb=False, seed=1, epoch='init')
    out = tmp_path / 'elsewhere' / 'reid.onnx'
    export.main(['--name', 'run', '--model_dir', str(tmp_path / 'model'), '--which_epoch', 'init', '--format',
                 'onnx', '--output', str(out)])
    meta = json.loads((tmp_path / 'elsewhere' / 'reid.json').read_text())
    assert meta['checkpoint'].endswith('net_init.pth')
    assert not list(run_dir.glob('*.onnx')) and not list(run_dir.glob('*.json'))
    images = real_images(tiny_prepared, 4)
    got = exporting.exported_features(out, 'onnx', images)
    cosine = [F.cosine_similarity(got.double(), reference_features(net, images, False).double(), dim=1)
              for net in (init, last)]
    assert cosine[0].min() >= 0.9999 and cosine[1].max() < 0.99   # net_init's features, not net_last's
