"""The calibrated same-identity threshold downstream: test.py --calibrate writes it from the val and train splits,
api.ReIDRun.same_identity applies it, demo.py --query_image judges each hit by it."""
import numpy as np
import pytest
import torch
from PIL import Image

import demo
import test as T
from reid.api import ReIDRun
from reid.data.prepared import list_reid_images
from reid.runs import RunFolder
from test_export import H, W, reference_features, write_run
from test_verification import brute_force
from conftest import hand_transform


def split_features(net, folder):
    tf = hand_transform(H, W)
    images = list_reid_images(folder)
    batch = torch.stack([tf(Image.open(p).convert('RGB')) for p, _, _ in images])
    return (reference_features(net, batch, pcb=False).numpy(), np.array([i for _, i, _ in images]),
            np.array([c for _, _, c in images]))


def test_calibrate_writes_the_val_train_threshold(tiny_prepared, tmp_path, capsys):
    net = write_run(tmp_path / 'model' / 'run', pcb=False)
    T.main(['--name', 'run', '--model_dir', str(tmp_path / 'model'), '--test_dir', str(tiny_prepared),
            '--calibrate', '--far', '0.01', '--batchsize', '8', '--cpu_bf16', 'off'])
    (vf, vl, vc), (tf, tl, tc) = (split_features(net, tiny_prepared / s) for s in ('val', 'train'))
    thresholds, tar, _, auc, n_pos, n_neg = brute_force(vf, vl, vc, tf, tl, tc, (1e-1, 1e-2, 1e-3, 1e-4))
    saved = RunFolder(tmp_path / 'model' / 'run').read_threshold()
    assert saved['far'] == 0.01
    assert saved['threshold'] == pytest.approx(thresholds[1], abs=1e-4)
    assert saved['pairs'] == {'same_id': n_pos, 'different_id': n_neg}
    assert 'val (queries) x train (gallery)' in saved['calibrated_on']
    assert 'TAR@FAR=1e-02:' in capsys.readouterr().out


def test_same_identity_applies_the_threshold(tiny_prepared, tmp_path):
    net = write_run(tmp_path / 'run', pcb=False)
    images = [p for p, _, _ in list_reid_images(tiny_prepared / 'gallery')][:2]
    run = ReIDRun(tmp_path / 'run', device='cpu', backend='torch')   # fp32: scores exact to 1e-3
    with pytest.raises(ValueError, match='threshold.yaml: no calibrated threshold'):
        run.same_identity(images[0], images[1])
    tf = hand_transform(H, W)
    f = reference_features(net, torch.stack([tf(Image.open(p).convert('RGB')) for p in images]), pcb=False)
    score = float(f[0] @ f[1])
    for threshold, same in ((score - 1e-3, True), (score + 1e-3, False)):
        RunFolder(tmp_path / 'run').write_threshold({'far': 0.001, 'threshold': threshold})
        got, decision = run.same_identity(images[0], images[1])
        assert got == pytest.approx(score, abs=1e-5) and decision is same
    assert run.same_identity(f[0], f[0])[1] is True   # features work as well as images


def test_demo_query_image_judges_each_hit(tiny_prepared, tmp_path, capsys):
    import scipy.io

    net = write_run(tmp_path / 'model' / 'run', pcb=False)
    rng = np.random.default_rng(0)
    saved = {}
    for split in ('query', 'gallery'):   # the saved features need not come from the run: random unit rows
        images = list_reid_images(tiny_prepared / split)
        f = rng.standard_normal((len(images), 64)).astype(np.float32)
        saved.update({split + '_f': f / np.linalg.norm(f, axis=1, keepdims=True),
                      split + '_label': np.array([i for _, i, _ in images]),
                      split + '_cam': np.array([c for _, _, c in images])})
    scipy.io.savemat(tmp_path / 'r.mat', saved)
    gf, gl = saved['gallery_f'], saved['gallery_label']
    photo = list_reid_images(tiny_prepared / 'query')[0][0]
    argv = ['--query_image', str(photo), '--name', 'run', '--model_dir', str(tmp_path / 'model'),
            '--test_dir', str(tiny_prepared), '--result', str(tmp_path / 'r.mat'), '--output', str(tmp_path / 'p.png')]
    demo.main(argv)
    assert 'no calibrated threshold' in capsys.readouterr().out
    tf = hand_transform(H, W)
    q = reference_features(net, tf(Image.open(photo).convert('RGB'))[None], pcb=False)[0].numpy()
    scores = np.sort(gf[gl != -1] @ q)[::-1]
    threshold = float((scores[2] + scores[3]) / 2)   # the first three hits pass, the rest do not
    RunFolder(tmp_path / 'model' / 'run').write_threshold({'far': 0.01, 'threshold': threshold})
    demo.main(argv)
    hits = [line.split() for line in capsys.readouterr().out.splitlines() if line[:2].strip().isdigit()]
    assert [h[5] for h in hits] == ['same'] * 3 + ['different'] * (len(hits) - 3)
