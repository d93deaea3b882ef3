"""Training on tracklets (issue 31 item 2): the temporal poolings against hand computations, the frame sampling
against its definition, one augmentation per tracklet, P x K batches counting tracklets, the recipe's choices for
video and image layouts, and DukeMTMC-VideoReID trained, tested and evaluated end to end.

The sets are the generated tiny ones (prepare.py --make-demo), prepared here; networks are ResNet-18 from scratch
at 64 x 32, trained in-process for one epoch.
"""
import math
import os
import re
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io
import torch

import evaluate_gpu
import prepare
from conftest import hand_transform, library_messages, load_test_cli
from reid.data.tracklets import TrackletDataset, frame_positions
from reid.models.heads import build_model
from reid.models.temporal import temporal_pool
from reid.spec import NetworkSpec
from reid.training import recipe, trainer

SIZE = (64, 32)


def prepared_set(root, layout):
    """Generate the tiny set of `layout` under root/raw and prepare it into root/prepared; return that."""
    prepare.main(['--make-demo', str(root / 'raw'), '--layout', layout, '--size', 'tiny'])
    prepare.main(['--dataset', layout, '--download_path', str(root / 'raw'), '--save_path', str(root / 'prepared')])
    return root / 'prepared'


@pytest.fixture(scope='module')
def mars(tmp_path_factory):
    return prepared_set(tmp_path_factory.mktemp('mars'), 'mars')


def walked_tracklets(split_dir):
    """[(label, tracklet name, frame paths)] of a prepared split, walked here: id folders sorted (label = the
    folder's position), tracklet folders sorted inside, frames sorted inside."""
    out = []
    for label, pid in enumerate(sorted(os.listdir(split_dir))):
        for name in sorted(os.listdir(split_dir / pid)):
            folder = split_dir / pid / name
            out.append((label, name, [str(folder / f) for f in sorted(os.listdir(folder))]))
    return out


def options(data_dir, model_dir, *extra):
    return recipe.build_parser().parse_args(
        ['--data_dir', str(data_dir), '--model_dir', str(model_dir), '--backbone', 'resnet18', '--scratch',
         '--h', str(SIZE[0]), '--w', str(SIZE[1]), '--batchsize', '8', '--num_workers', '0', '--lr', '0.01',
         '--total_epoch', '1', *extra])


# ---------------------------------------------------------------------------------------------- temporal pooling
def test_the_poolings_equal_hand_computations():
    frames = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(0))
    x = frames.numpy().astype(np.float64)
    np.testing.assert_allclose(temporal_pool('avg', 8)(frames).numpy(), x.mean(axis=1), atol=1e-6)
    np.testing.assert_allclose(temporal_pool('max', 8)(frames).numpy(), x.max(axis=1), atol=1e-6)
    attention = temporal_pool('attention', 8)
    np.testing.assert_allclose(attention(frames).detach().numpy(), x.mean(axis=1), atol=1e-6)  # starts as avg
    with torch.no_grad():
        attention.score.weight.copy_(torch.linspace(-1, 1, 8)[None])
        attention.score.bias.fill_(0.3)
    w, b = np.linspace(-1, 1, 8), 0.3
    for i in range(3):
        scores = [float(w @ x[i, t]) + b for t in range(5)]
        e = [math.exp(s - max(scores)) for s in scores]
        want = sum(e[t] / sum(e) * x[i, t] for t in range(5))
        np.testing.assert_allclose(attention(frames)[i].detach().numpy(), want, atol=1e-5)
    assert not np.allclose(attention(frames).detach().numpy(), x.mean(axis=1), atol=1e-3)


@pytest.mark.parametrize('kind', ['avg', 'max', 'attention'])
def test_the_tracklet_network_pools_each_frames_feature_then_applies_the_head(kind):
    torch.manual_seed(0)
    net = build_model(NetworkSpec(backbone='resnet18', h=SIZE[0], w=SIZE[1], temporal=kind), 5, pretrained=False)
    if kind == 'attention':
        with torch.no_grad():
            net.temporal.score.weight.normal_(0, 0.5)
    net.eval()
    clips = torch.randn(2, 3, 3, *SIZE)
    with torch.no_grad():
        got = net(clips, return_feature=True)
        per_frame = np.array([[net.pool(net.body(clips[b, t][None])).flatten().numpy() for t in range(3)]
                              for b in range(2)], dtype=np.float64)   # [2, 3, 512], one frame at a time
        if kind == 'avg':
            pooled = per_frame.mean(axis=1)
        elif kind == 'max':
            pooled = per_frame.max(axis=1)
        else:
            scores = per_frame @ net.temporal.score.weight[0].numpy() + float(net.temporal.score.bias)
            weights = np.exp(scores - scores.max(axis=1, keepdims=True))
            pooled = (weights[..., None] / weights.sum(axis=1)[:, None, None] * per_frame).sum(axis=1)
        want = net.classifier(torch.tensor(pooled, dtype=torch.float32), return_feature=True)
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4)
        # images are clips of one frame: the image network of the same weights gives the same features
        image_net = build_model(NetworkSpec(backbone='resnet18', h=SIZE[0], w=SIZE[1]), 5, pretrained=False).eval()
        image_net.load_state_dict(net.state_dict(), strict=kind != 'attention')
        np.testing.assert_allclose(net(clips[:, 0], return_feature=True).numpy(),
                                   image_net(clips[:, 0], return_feature=True).numpy(), atol=1e-5)
    net.train()
    logits, feature = net(clips, return_metric_feature=True)
    assert logits.shape == (2, 5) and feature.shape == (2, 512)


# ----------------------------------------------------------------------------------------------- frame sampling
@pytest.mark.parametrize('count, seq_len, want', [(10, 4, [1, 3, 6, 8]), (8, 4, [1, 3, 5, 7]), (4, 4, [0, 1, 2, 3]),
                                                  (3, 4, [0, 1, 1, 2]), (2, 4, [0, 0, 1, 1]), (5, 1, [2])])
def test_evenly_takes_the_centre_of_each_of_seq_len_equal_segments(count, seq_len, want):
    # centres (k + 1/2) * count / seq_len, floored: worked out by hand in the table
    assert frame_positions(count, seq_len, 'evenly') == want


def test_random_draws_distinct_sorted_frames_uniformly_and_all_takes_every_frame():
    generator = torch.Generator().manual_seed(0)
    draws = [frame_positions(10, 4, 'random', generator) for _ in range(4000)]
    assert all(d == sorted(set(d)) and len(d) == 4 and 0 <= d[0] and d[-1] < 10 for d in draws)
    np.testing.assert_allclose(np.bincount(sum(draws, []), minlength=10) / 4000, 0.4, atol=0.03)  # 4 of 10
    assert len({tuple(d) for d in draws}) == math.comb(10, 4)   # every subset occurs: no fixed choice
    short = [frame_positions(3, 5, 'random', generator) for _ in range(300)]
    assert all(d == sorted(d) and len(d) == 5 and set(d) == {0, 1, 2} for d in short)
    assert len({tuple(d) for d in short}) > 1
    assert frame_positions(6, 4, 'all') == list(range(6))
    with pytest.raises(ValueError, match='--sample'):
        frame_positions(6, 4, 'middle')


def test_an_item_is_the_tracklets_frames_drawn_as_asked(mars):
    walked = walked_tracklets(mars / 'train')
    transform = hand_transform(*SIZE)

    def frame(path):
        from PIL import Image
        with Image.open(path) as img:
            return transform(img)
    evenly = TrackletDataset(mars / 'train', transform, seq_len=3, sample='evenly')
    every = TrackletDataset(mars / 'train', transform, sample='all')
    drawn = TrackletDataset(mars / 'train', transform, seq_len=3, sample='random')
    assert len(evenly) == len(walked) and evenly.targets == [label for label, _, _ in walked]
    for k in (0, 7, len(walked) - 1):
        label, _, paths = walked[k]
        clip, target = evenly[k]
        n = len(paths)
        want = torch.stack([frame(paths[(2 * j + 1) * n // 6]) for j in range(3)])
        assert target == label and torch.equal(clip, want)
        assert torch.equal(every[k][0], torch.stack([frame(p) for p in paths]))
        clip = drawn[k][0]
        positions = [next(i for i, p in enumerate(paths) if torch.equal(c, frame(p))) for c in clip]
        assert len(clip) == 3 and positions == sorted(set(positions))


def test_every_frame_of_a_tracklet_gets_the_same_augmentation(tmp_path):
    """A tracklet of identical frames stays identical through random crop, flip, jitter and erasing; tracklets
    differ from each other (the draws change per item)."""
    from PIL import Image
    from reid.data.transforms import train_transform

    folder = tmp_path / 'train' / '0001' / 'T1'
    folder.mkdir(parents=True)
    picture = np.zeros((64, 32, 3), np.uint8)
    picture[:40, :10] = (250, 30, 30)   # asymmetric: a flip shows
    picture[40:, 12:] = (20, 200, 90)
    rows = ['split,path,id,label,camera,tracklet']
    for f in range(4):
        Image.fromarray(picture).save(folder / f'F{f}.png')
        rows.append(f'train,train/0001/T1/F{f}.png,0001,1,1,T1')
    (tmp_path / 'images.csv').write_text('\n'.join(rows) + '\n')
    data = TrackletDataset(tmp_path / 'train', train_transform(64, 32, pad=10, erasing_p=1.0, color_jitter=True),
                           seq_len=4, sample='evenly')
    torch.manual_seed(0)
    clips = [data[0][0] for _ in range(6)]
    assert all(torch.equal(clip[0], clip[t]) for clip in clips for t in range(1, 4))
    assert len({clip[0].sum().item() for clip in clips}) > 1


# ---------------------------------------------------------------------------------------- P x K over tracklets
def test_pk_batches_count_tracklets_p_ids_of_k_tracklets_each(mars):
    walked = walked_tracklets(mars / 'train')
    first_frames = [paths[len(paths) // 2] for _, _, paths in walked]   # evenly with seq_len 1: the middle frame
    data = TrackletDataset(mars / 'train', hand_transform(*SIZE), seq_len=1, sample='evenly')
    opts = SimpleNamespace(seed=0, sampler='pk', batchsize=8, num_instances=2)
    steps = trainer.epoch_steps(data, opts)
    loader = trainer.train_loader(data, opts, 0, steps, SimpleNamespace(workers=0, device=torch.device('cpu')))
    per_id = {}
    for label, _, _ in walked:
        per_id[label] = per_id.get(label, 0) + 1
    seen = set()
    for batch, (clips, labels) in zip(loader.batch_sampler, loader):
        assert clips.shape == (8, 1, 3, *SIZE) and all(0 <= i < len(walked) for i in batch)
        assert labels.tolist() == [walked[i][0] for i in batch]
        groups = [batch[j:j + 2] for j in range(0, 8, 2)]
        assert len({walked[g[0]][0] for g in groups}) == 4                      # P = 4 different ids
        for g in groups:
            assert walked[g[0]][0] == walked[g[1]][0]                           # K = 2 of one id
            assert g[0] != g[1] or per_id[walked[g[0]][0]] < 2                   # distinct tracklets when it has 2
        from PIL import Image
        with Image.open(first_frames[batch[0]]) as img:
            assert torch.equal(clips[0, 0], hand_transform(*SIZE)(img))
        seen.update(batch)
    assert steps == len(loader) > 0 and len(seen) > len(per_id)   # more tracklets than ids: tracklets are drawn


# ----------------------------------------------------------------------------------------------------- recipe
def test_a_video_layout_resolves_the_tracklet_options_and_an_image_layout_refuses_them(mars, tiny_prepared, tmp_path):
    o = recipe.resolved_opts(options(mars, tmp_path))
    assert (o.temporal, o.seq_len, o.sample) == ('avg', 4, 'random')
    with library_messages() as lines:
        o = recipe.resolved_opts(options(mars, tmp_path, '--cache', '--temporal', 'max', '--seq_len', '6'))
    assert (o.temporal, o.seq_len, o.cache) == ('max', 6, False) and any('--cache' in line for line in lines)
    for flag, value in (('--temporal', 'avg'), ('--seq_len', '8'), ('--sample', 'evenly')):
        with pytest.raises(ValueError, match=f'^{flag} {value}: tracklet training needs .* video layout'):
            recipe.resolved_opts(options(tiny_prepared, tmp_path, flag, value))
    assert recipe.resolved_opts(options(tiny_prepared, tmp_path)).temporal is None   # image layouts unchanged
    with pytest.raises(ValueError, match='--PCB'):
        recipe.resolved_opts(options(mars, tmp_path, '--PCB'))
    with pytest.raises(ValueError, match='--seq_len 0: must be at least 1'):
        recipe.resolved_opts(options(mars, tmp_path, '--seq_len', '0'))
    with pytest.raises(SystemExit):   # 'all' is for testing: tracklets differ in length
        options(mars, tmp_path, '--sample', 'all')


# ------------------------------------------------------------------------------------------ DukeV end to end
def brute_force_metrics(mat):
    """(Rank@1, mAP) of a result file by plain sorts: junk = id -1 or the query's id and camera; Market's AP."""
    gl, gc = mat['gallery_label'][0], mat['gallery_cam'][0]
    firsts, aps = [], []
    for q, ql, qc in zip(mat['query_f'], mat['query_label'][0], mat['query_cam'][0]):
        order = sorted(range(len(gl)), key=lambda j: (-float(np.dot(q, mat['gallery_f'][j])), j))
        keep = [j for j in order if not (gl[j] == -1 or (gl[j] == ql and gc[j] == qc))]
        good = [k for k, j in enumerate(keep) if gl[j] == ql]
        if good:
            firsts.append(float(good[0] == 0))
            aps.append(sum(((1.0 if k == 0 else i / k) + (i + 1) / (k + 1)) / 2 for i, k in enumerate(good))
                       / len(good))
    return float(np.mean(firsts)), float(np.mean(aps))


def test_dukev_trains_tests_and_evaluates_on_tracklets(tmp_path, capsys):
    data = prepared_set(tmp_path, 'dukev')
    opts = options(data, tmp_path / 'runs', '--name', 'dukev', '--temporal', 'max', '--triplet', '--seq_len', '3')
    trainer.run_training(opts)
    bar = capsys.readouterr().err   # the progress bar counts tracklets, not images
    assert re.search(r'tracklet_s=[\d.]+', bar) and 'img_s=' not in bar, bar[-500:]
    saved = (tmp_path / 'runs' / 'dukev' / 'opts.yaml').read_text()
    assert re.search(r'^temporal: max$', saved, re.M) and re.search(r'^seq_len: 3$', saved, re.M)
    assert re.search(r'^sample: random$', saved, re.M) and re.search(r'^sampler: pk$', saved, re.M)
    capsys.readouterr()
    result = tmp_path / 'dukev.mat'
    load_test_cli().main(['--name', 'dukev', '--model_dir', str(tmp_path / 'runs'), '--test_dir', str(data),
                          '--num_workers', '0', '--result', str(result)])
    assert 'tracklets in chunks of 3 frame(s)' in capsys.readouterr().out
    mat = scipy.io.loadmat(result)
    for split in ('query', 'gallery'):
        walked = walked_tracklets(data / split)
        names = [str(c[0]) for c in mat[f'{split}_tracklet'].reshape(-1)]
        assert names == [name for _, name, _ in walked] and mat[f'{split}_f'].shape == (len(walked), 512)
        # DukeV's frames are <id>_C<camera>_F...: the id and camera of each row, read from its first frame
        heads = [re.match(r'(\d+)_C(\d+)_', os.path.basename(paths[0])).groups() for _, _, paths in walked]
        assert mat[f'{split}_label'][0].tolist() == [int(pid) for pid, _ in heads]
        assert mat[f'{split}_cam'][0].tolist() == [int(cam) for _, cam in heads]
    reports = evaluate_gpu.main(['--result', str(result)])
    rank1, mean_ap = brute_force_metrics(mat)
    assert reports[0][1]['mAP'] == pytest.approx(mean_ap, abs=1e-5)
    assert reports[0][1]['cmc'][0] == pytest.approx(rank1, abs=1e-6)
