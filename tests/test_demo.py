"""demo.py: the ranking it draws (junk removed, stable by score) and the picture it writes, headless."""
import numpy as np
import pytest
import scipy.io
from PIL import Image

import demo
from reid.data.prepared import list_reid_images
from test_rerank import dense_rerank_reference
from conftest import hand_transform


def _write_result(path, prepared, seed=0):
    """Random unit features for the real query/gallery listing of a prepared set; returns the arrays."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, key in (('query', 'query'), ('gallery', 'gallery')):
        images = list_reid_images(prepared / split)
        f = rng.standard_normal((len(images), 16)).astype(np.float32)
        out[key + '_f'] = f / np.linalg.norm(f, axis=1, keepdims=True)
        out[key + '_label'] = np.array([[pid for _, pid, _ in images]])
        out[key + '_cam'] = np.array([[cam for _, _, cam in images]])
    scipy.io.savemat(path, out)
    return out


def _brute_force_top(qf, ql, qc, gf, gl, gc, top):
    """Reference: sort (−score, index) pairs with plain Python, skipping junk."""
    scored = sorted((-float(np.dot(qf, g)), j) for j, g in enumerate(gf))
    keep = [j for _, j in scored if not (gl[j] == -1 or (gl[j] == ql and gc[j] == qc))]
    return keep[:top]


def test_ranked_gallery_matches_brute_force_and_drops_junk(tiny_prepared, tmp_path):
    r = _write_result(tmp_path / 'r.mat', tiny_prepared)
    gl, gc = r['gallery_label'][0], r['gallery_cam'][0]
    for i in range(len(r['query_f'])):
        ql, qc = r['query_label'][0, i], r['query_cam'][0, i]
        got = demo.ranked_gallery(-(r['gallery_f'] @ r['query_f'][i]), ql, qc, gl, gc)[:10]
        assert list(got) == _brute_force_top(r['query_f'][i], ql, qc, r['gallery_f'], gl, gc, 10)
        assert not any(gl[j] == -1 or (gl[j] == ql and gc[j] == qc) for j in got)


def test_ties_keep_gallery_order():
    keys = np.zeros(6)
    got = demo.ranked_gallery(keys, 5, 1, np.array([1, 5, 2, -1, 3, 4]), np.array([2, 1, 2, 2, 2, 2]))
    assert list(got) == [0, 2, 4, 5]


@pytest.mark.parametrize('rerank', [False, True])
def test_main_writes_show_png(tiny_prepared, tmp_path, capsys, rerank):
    out = tmp_path / 'show.png'
    argv = ['--query_index', '3', '--test_dir', str(tiny_prepared), '--result', str(tmp_path / 'r.mat'),
            '--output', str(out)] + (['--rerank'] if rerank else [])
    r = _write_result(tmp_path / 'r.mat', tiny_prepared)
    demo.main(argv)
    with Image.open(out) as img:
        assert img.format == 'PNG' and img.width > 3 * img.height
    printed = capsys.readouterr().out.strip().split('\n')
    gallery = list_reid_images(tiny_prepared / 'gallery')
    gl, gc, ql, qc = r['gallery_label'][0], r['gallery_cam'][0], r['query_label'][0, 3], r['query_cam'][0, 3]
    if rerank:  # independent ranking: the dense re-ranking of the paper, then (distance, index) in plain Python
        dist = dense_rerank_reference(r['query_f'], r['gallery_f'], 20, 6, 0.3)[3]
        order = [j for _, j in sorted((float(d), j) for j, d in enumerate(dist))
                 if not (gl[j] == -1 or (gl[j] == ql and gc[j] == qc))][:10]
    else:
        order = _brute_force_top(r['query_f'][3], ql, qc, r['gallery_f'], gl, gc, 10)
    expected = [f'{rank:2d} {"match" if gl[j] == ql else "wrong"} {gallery[j][0]}' for rank, j in enumerate(order, 1)]
    assert printed[1:11] == expected


def test_bad_index_and_mismatched_result_are_named(tiny_prepared, tmp_path):
    _write_result(tmp_path / 'r.mat', tiny_prepared)
    with pytest.raises(SystemExit, match='--query_index 9999'):
        demo.main(['--query_index', '9999', '--test_dir', str(tiny_prepared), '--result', str(tmp_path / 'r.mat')])
    other = tmp_path / 'other'
    (other / 'query').mkdir(parents=True)
    (other / 'gallery').mkdir()
    for split in ('query', 'gallery'):
        first = list_reid_images(tiny_prepared / split)[0][0]
        pid_dir = other / split / first.split('/')[-2]
        pid_dir.mkdir()
        Image.open(first).save(pid_dir / first.split('/')[-1])
    with pytest.raises(SystemExit, match='run test.py on the same --test_dir'):
        demo.main(['--test_dir', str(other), '--result', str(tmp_path / 'r.mat')])


def test_query_image_searches_the_saved_gallery(tiny_prepared, tmp_path, capsys):
    """--query_image: one photo embedded by the run, ranked against the .mat's gallery features (not re-extracted)."""
    import shutil

    import torch

    from test_export import H, W, reference_features, write_run

    net = write_run(tmp_path / 'model' / 'run', pcb=False)
    tf = hand_transform(H, W)
    out = {}
    for split in ('query', 'gallery'):
        images = list_reid_images(tiny_prepared / split)
        batch = torch.stack([tf(Image.open(p).convert('RGB')) for p, _, _ in images])
        out[split + '_f'] = reference_features(net, batch, pcb=False).numpy()
        out[split + '_label'] = np.array([[pid for _, pid, _ in images]])
        out[split + '_cam'] = np.array([[cam for _, _, cam in images]])
    scipy.io.savemat(tmp_path / 'r.mat', out)
    gallery = list_reid_images(tiny_prepared / 'gallery')
    j = next(i for i, (_, pid, _) in enumerate(gallery) if pid > 0)
    photo = tmp_path / 'my photo.jpg'  # any name: the photo need not follow the Market naming
    shutil.copy(gallery[j][0], photo)
    demo.main(['--query_image', str(photo), '--name', 'run', '--model_dir', str(tmp_path / 'model'),
               '--test_dir', str(tiny_prepared), '--result', str(tmp_path / 'r.mat'), '--output',
               str(tmp_path / 'photo.png')])
    lines = [line for line in capsys.readouterr().out.splitlines() if line[:2].strip().isdigit()]
    shown = [line.split()[-1] for line in lines]
    # reference: the photo's feature by hand, every gallery score, a plain sort, id -1 left out
    q = reference_features(net, tf(Image.open(photo).convert('RGB'))[None], pcb=False)[0].numpy()
    scored = sorted((-float(np.dot(q, f)), i) for i, f in enumerate(out['gallery_f']))
    expected = [gallery[i][0] for _, i in scored if gallery[i][1] != -1][:10]
    assert shown == expected and shown[0] == gallery[j][0]
    assert float(lines[0].split()[4]) == pytest.approx(1.0, abs=1e-4)  # the photo is that gallery image
    with Image.open(tmp_path / 'photo.png') as img:
        assert img.width > 3 * img.height
    with pytest.raises(SystemExit, match='--query_image .*nope.jpg: file not found'):
        demo.main(['--query_image', str(tmp_path / 'nope.jpg'), '--name', 'run', '--model_dir',
                   str(tmp_path / 'model'), '--test_dir', str(tiny_prepared), '--result', str(tmp_path / 'r.mat')])


def _runs(flags):
    """[start, stop) of each run of True in a 1-D boolean array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], np.asarray(flags, int), [0]])))
    return list(zip(edges[::2], edges[1::2]))


def _panel_distance(pixels, box, path, frame):
    """Mean absolute difference (0-255) between a panel of show.png and the image at `path` resized by PIL to the
    panel: `box` is the frame's outer (left, right, top, bottom), `frame` the pixels of frame inside it."""
    left, right, top, bottom = (int(v) for v in box)
    inner = (left + frame, top + frame, right - frame, bottom - frame)
    with Image.open(path) as img:
        want = np.asarray(img.convert('RGB').resize((inner[2] - inner[0], inner[3] - inner[1]), Image.BILINEAR), int)
    got = pixels[inner[1]:inner[3], inner[0]:inner[2]]
    return float(np.abs(got - want)[4:-4, 4:-4].mean())   # the edges of the frame's antialiasing left out


def test_show_png_draws_the_query_then_the_ranked_images_framed_by_their_id(tiny_prepared, tmp_path, capsys):
    """The picture itself, read back with PIL: the query's panel is the query image; left to right, ten panels are
    the gallery images of a brute-force ranking (junk left out), each with a green frame (matplotlib's 'green',
    #008000) when its id is the query's and a red one (#ff0000) when not. Each panel is identified as the image
    that, resized by PIL to the panel, differs least from it (every gallery image tried)."""
    i = 4
    r = _write_result(tmp_path / 'r.mat', tiny_prepared)
    queries, gallery = list_reid_images(tiny_prepared / 'query'), list_reid_images(tiny_prepared / 'gallery')
    gl, gc, ql, qc = r['gallery_label'][0], r['gallery_cam'][0], r['query_label'][0, i], r['query_cam'][0, i]
    matches = [j for j in range(len(gl)) if gl[j] == ql and gc[j] != qc]
    junk = [j for j in range(len(gl)) if gl[j] == ql and gc[j] == qc]
    assert len(matches) >= 2 and junk
    # two matches among the first ranks, a junk image (same id and camera) scoring as high as the best
    qf = r['query_f'][i]
    r['gallery_f'][matches[0]] = r['gallery_f'][junk[0]] = qf
    near = qf + 0.15 * np.random.default_rng(1).standard_normal(qf.shape).astype(np.float32)
    r['gallery_f'][matches[1]] = near / np.linalg.norm(near)
    scipy.io.savemat(tmp_path / 'r.mat', r)
    demo.main(['--query_index', str(i), '--test_dir', str(tiny_prepared), '--result', str(tmp_path / 'r.mat'),
               '--output', str(tmp_path / 'show.png')])
    order = _brute_force_top(qf, ql, qc, r['gallery_f'], gl, gc, 10)
    assert {gl[j] == ql for j in order} == {True, False}   # both frame colours are drawn

    pixels = np.asarray(Image.open(tmp_path / 'show.png').convert('RGB'), int)
    green, red = (pixels == (0, 128, 0)).all(2), (pixels == (255, 0, 0)).all(2)
    boxes = []   # a coloured frame's columns form one run; its first run of rows is the frame (then the caption)
    for left, right in _runs((green | red).any(0)):
        top, bottom = _runs((green | red)[:, left:right].any(1))[0]
        boxes.append((left, right, top, bottom))
    assert len(boxes) == 10
    for rank, (box, j) in enumerate(zip(boxes, order)):
        distances = [_panel_distance(pixels, box, path, 3) for path, _, _ in gallery]
        assert int(np.argmin(distances)) == j and distances[j] < 8, (rank, j, int(np.argmin(distances)))
        left, right, top, bottom = box
        n_green, n_red = green[top:bottom, left:right].sum(), red[top:bottom, left:right].sum()
        assert (n_green > 500 and n_red == 0) if gl[j] == ql else (n_red > 500 and n_green == 0), (rank, j)
    # the query's panel: left of the first, a thin black frame (its two sides are the long black columns)
    black = (pixels < 40).all(2)[:, :boxes[0][0]]
    sides = _runs(black.sum(0) > 100)
    assert len(sides) == 2
    left, right = sides[0][0], sides[1][1]
    top, bottom = _runs(black[:, left:right].sum(1) > 100)[0][0], _runs(black[:, left:right].sum(1) > 100)[-1][1]
    distances = [_panel_distance(pixels, (left, right, top, bottom), path, 1) for path, _, _ in queries]
    assert int(np.argmin(distances)) == i and distances[i] < 8
    assert not (green | red)[top:bottom, left:right].any()


def test_the_captions_show_each_rankings_own_figure(tiny_prepared, tmp_path, monkeypatch):
    """Under each shown image: the cosine score (plain), the k-reciprocal distance (--rerank), and GNN's score,
    positive as the original prints it (--rerank gnn; its blocks rank by minus the score) — each equal to its dense
    reference for the image shown."""
    from test_gnn_rerank import dense_gnn_reference

    r = _write_result(tmp_path / 'r.mat', tiny_prepared)
    captions = {}
    monkeypatch.setattr(demo, 'draw_ranking', lambda query, shown, path, heats=None: captions.update({path: shown}))
    gallery = [path for path, _, _ in list_reid_images(tiny_prepared / 'gallery')]
    references = {'plain': ('score', r['gallery_f'] @ r['query_f'][3]),
                  'k_reciprocal': ('dist', dense_rerank_reference(r['query_f'], r['gallery_f'], 20, 6, 0.3)[3]),
                  'gnn': ('score', dense_gnn_reference(r['query_f'], r['gallery_f'], 26, 7, 0.3)[3])}
    for method, (word, figures) in references.items():
        out = str(tmp_path / f'{method}.png')
        demo.main(['--query_index', '3', '--test_dir', str(tiny_prepared), '--result', str(tmp_path / 'r.mat'),
                   '--output', out] + ([] if method == 'plain' else ['--rerank', method]))
        for path, _, caption in captions[out]:
            shown_word, value = caption.split('\n')[1].split()
            assert shown_word == word and float(value) == pytest.approx(figures[gallery.index(path)], abs=1e-3)
    assert min(float(c.split()[-1]) for _, _, c in captions[str(tmp_path / 'gnn.png')]) > 0
