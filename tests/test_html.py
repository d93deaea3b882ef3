"""demo.py --html: the static results page, opened by a real browser (headless Chromium) after its folder moved.

Chromium is Debian's `chromium` package (`.ci/run` installs it). Without it the test is skipped on a developer
machine, but fails in CI (CI=true), so the browser check can never silently vanish there.
"""
import html.parser
import os
import shutil
import subprocess

import numpy as np
import pytest
import scipy.io
from PIL import Image

import demo
from reid.data.prepared import list_reid_images


def chromium():
    """Path of a Chromium binary; skip (developer machine) or fail (CI) when there is none."""
    for name in ('chromium', 'chromium-browser', 'google-chrome'):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get('CI', '').lower() in ('1', 'true', 'yes'):
        pytest.fail('CI: chromium is not installed (apt-get install -y chromium); the HTML page must be '
                    'browser-tested in CI')
    pytest.skip('chromium not installed (apt-get install -y chromium): the browser test of demo.py --html is skipped')


def run_chromium(binary, *args):
    # --no-sandbox: CI containers run as root; a throw-away profile keeps runs independent
    cmd = [binary, '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class PageRows(html.parser.HTMLParser):
    """Collect, per <tr class="query">, its attributes, its green/red frame counts and every <img src>; the rows
    of the per-camera tables; the attributes of <body> and of the threshold line."""

    def __init__(self):
        super().__init__()
        self.rows, self.images, self.body, self.threshold = [], [], {}, None
        self.tables, self.table = {'query-cameras': [], 'gallery-cameras': []}, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get('class') or '').split()
        if tag == 'body':
            self.body = a
        elif tag == 'p' and a.get('id') == 'threshold':
            self.threshold = a
        elif tag == 'table':
            self.table = a.get('id')
        elif tag == 'tr' and self.table in self.tables and 'data-cam' in a:
            self.tables[self.table].append(a)
        if tag == 'tr' and 'query' in classes:
            self.rows.append({**a, 'hit': 0, 'miss': 0})
        elif tag == 'figure' and self.rows:
            for c in ('hit', 'miss'):
                self.rows[-1][c] += c in classes
        elif tag == 'img':
            self.images.append(a['src'])


def write_result(path, prepared, seed=0):
    """Features that cluster by id (plus noise), so rankings mix right and wrong matches; returns the arrays."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, 16))
    out = {}
    for split in ('query', 'gallery'):
        images = list_reid_images(prepared / split)
        ids = np.array([pid for _, pid, _ in images])
        f = centres[ids + 1] + 1.2 * rng.standard_normal((len(ids), 16))
        out[split + '_f'] = (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32)
        out[split + '_label'] = ids[None]
        out[split + '_cam'] = np.array([[cam for _, _, cam in images]])
    scipy.io.savemat(path, out)
    return out


def expected_greens(r, top=10):
    """Reference: per query, the same-id images among the top-`top` of a plain sort with junk skipped; and
    Rank@1 over the queries that have a valid match."""
    gl, gc = r['gallery_label'][0], r['gallery_cam'][0]
    counts, firsts = [], []
    for q, ql, qc in zip(r['query_f'], r['query_label'][0], r['query_cam'][0]):
        scored = sorted((-float(np.dot(q, g)), j) for j, g in enumerate(r['gallery_f']))
        keep = [j for _, j in scored if not (gl[j] == -1 or (gl[j] == ql and gc[j] == qc))]
        counts.append(sum(gl[j] == ql for j in keep[:top]))
        if any(gl[j] == ql for j in keep):
            firsts.append(gl[keep[0]] == ql)
    return counts, float(np.mean(firsts))


def brute_force_ranking(r):
    """Reference per query: (index of the first gallery image after junk, Market-1501 AP or NaN), by plain sorts
    and the benchmark's trapezoid rule written out."""
    gl, gc = r['gallery_label'][0], r['gallery_cam'][0]
    out = []
    for q, ql, qc in zip(r['query_f'], r['query_label'][0], r['query_cam'][0]):
        scored = sorted((-float(np.dot(q, g)), j) for j, g in enumerate(r['gallery_f']))
        keep = [j for _, j in scored if not (gl[j] == -1 or (gl[j] == ql and gc[j] == qc))]
        good = [k for k, j in enumerate(keep) if gl[j] == ql]
        ap = float('nan')
        if good:
            ap = 0.0
            for i, k in enumerate(good):
                before = 1.0 if k == 0 else i / k
                ap += (before + (i + 1) / (k + 1)) / 2 / len(good)
        out.append((keep[0] if keep else -1, ap))
    return out


def expected_camera_rows(r):
    """Reference rows of the two camera tables, counted query by query."""
    ql, qc = r['query_label'][0], r['query_cam'][0]
    gl, gc = r['gallery_label'][0], r['gallery_cam'][0]
    ranking = brute_force_ranking(r)
    queries = {}
    for (first, ap), pid, cam in zip(ranking, ql, qc):
        row = queries.setdefault(int(cam), {'queries': 0, 'hits': [], 'aps': []})
        row['queries'] += 1
        if not np.isnan(ap):
            row['hits'].append(float(gl[first] == pid))
            row['aps'].append(ap)
    wrong_cams = [int(gc[first]) for (first, ap), pid in zip(ranking, ql) if not np.isnan(ap) and gl[first] != pid]
    gallery = {}
    for cam in set(gc.tolist()):
        top1 = sum(1 for first, ap in ranking if not np.isnan(ap) and gc[first] == cam)
        wrong = wrong_cams.count(cam)
        gallery[cam] = (int((gc == cam).sum()), top1, wrong, wrong / len(wrong_cams))
    return queries, gallery


def test_html_page_in_a_real_browser(tiny_prepared, tmp_path, capsys):
    binary = chromium()
    r = write_result(tmp_path / 'r.mat', tiny_prepared)
    demo.main(['--html', str(tmp_path / 'page'), '--test_dir', str(tiny_prepared), '--result', str(tmp_path / 'r.mat')])
    assert 'index.html' in capsys.readouterr().out
    moved = tmp_path / 'elsewhere' / 'results'
    shutil.move(tmp_path / 'page', moved)  # the page must not depend on where it was written

    dom = PageRows()
    page = run_chromium(binary, '--dump-dom', (moved / 'index.html').as_uri())
    dom.feed(page)
    n_query = len(r['query_label'][0])
    assert len(dom.rows) == n_query
    greens, rank1 = expected_greens(r)
    assert sum(greens) > 0 and sum(10 - g for g in greens) > 0  # the data has both colours
    assert {int(row['data-query']): row['hit'] for row in dom.rows} == dict(enumerate(greens))
    assert all(row['hit'] + row['miss'] == 10 for row in dom.rows)
    aps = [float(row['data-ap']) for row in dom.rows]
    valid = [a for a in aps if not np.isnan(a)]
    assert valid == sorted(valid) and aps[:len(valid)] == valid  # worst first, no-match queries last
    # the summary metrics come before the first query row
    assert page.index(f'Rank@1: <b>{100 * rank1:.2f}%</b>') < page.index('<tr class="query"')
    assert all(not src.startswith(('/', 'file:')) and (moved / src).is_file() for src in dom.images)
    assert len(dom.images) >= n_query + 10

    # every picture loaded (the page counts the broken ones), the three summary pictures among them
    assert dom.body['data-broken'] == '0' and int(dom.body['data-images']) == len(dom.images)
    assert {'cmc.png', 'ap_histogram.png', 'scores.png'} <= set(dom.images)
    # the camera tables, against a count query by query
    queries, gallery = expected_camera_rows(r)
    got = {int(row['data-cam']): row for row in dom.tables['query-cameras']}
    assert sorted(got) == sorted(queries)
    for cam, want in queries.items():
        assert int(got[cam]['data-queries']) == want['queries']
        assert int(got[cam]['data-evaluated']) == len(want['aps'])
        assert float(got[cam]['data-rank1']) == pytest.approx(np.mean(want['hits']), abs=1e-6)
        assert float(got[cam]['data-map']) == pytest.approx(np.mean(want['aps']), abs=1e-6)
    got = {int(row['data-cam']): row for row in dom.tables['gallery-cameras']}
    assert sorted(got) == sorted(gallery)
    for cam, (images, top1, wrong, share) in gallery.items():
        row = got[cam]
        assert (int(row['data-images']), int(row['data-top1']), int(row['data-wrong'])) == (images, top1, wrong)
        assert float(row['data-share']) == pytest.approx(share, abs=1e-6)
    assert sum(int(row['data-wrong']) for row in got.values()) > 0  # the data has wrong first hits

    # the camera filter, opened through a link (#camera=N)
    cam = int(r['query_cam'][0][0])
    filtered = PageRows()
    filtered.feed(run_chromium(binary, '--dump-dom', (moved / 'index.html').as_uri() + f'#camera={cam}'))
    visible = [row for row in filtered.rows if 'display: none' not in (row.get('style') or '')]
    assert len(visible) == int((r['query_cam'][0] == cam).sum()) < n_query
    assert all(row['data-cam'] == str(cam) for row in visible)

    shot = tmp_path / 'shot.png'
    # 1200 x 1500: the pictures, the camera tables and the first rows (README's docs/img/page.png)
    run_chromium(binary, f'--screenshot={shot}', '--window-size=1200,1500', (moved / 'index.html').as_uri())
    with Image.open(shot) as img:
        pixels = np.asarray(img.convert('RGB')).reshape(-1, 3)
    colours = {tuple(p) for p in pixels[::7]}
    assert len(colours) > 500  # thumbnails drawn, not a blank or text-only page
    green = ((pixels[:, 1] > 130) & (pixels[:, 0] < 60) & (pixels[:, 2] < 90)).sum()
    red = ((pixels[:, 0] > 180) & (pixels[:, 1] < 70) & (pixels[:, 2] < 70)).sum()
    assert green > 500 and red > 500
    # HTML_SCREENSHOT=docs/img/page.png keeps README's picture of the page: this screenshot at half size
    with Image.open(shot) as img:
        img.convert('RGB').resize((img.width // 2, img.height // 2), Image.LANCZOS).quantize(256).save(
            os.environ.get('HTML_SCREENSHOT', tmp_path / 'kept.png'), optimize=True)


def histogram_pixels(folder):
    with Image.open(folder / 'scores.png') as img:
        return np.asarray(img.convert('RGB'))


def test_html_threshold_on_the_score_histograms(tiny_prepared, tmp_path):
    """write_report(threshold=t): the page gives the shares of same-id pairs accepted (score > t) and of
    different-id pairs rejected, counted pair by pair here; the histogram picture gains the line."""
    from reid.evaluation import metrics
    from reid.evaluation.report import PageOptions, write_report

    r = write_result(tmp_path / 'r.mat', tiny_prepared, seed=2)
    query, gallery = (list_reid_images(tiny_prepared / s) for s in ('query', 'gallery'))
    dist = -(r['query_f'] @ r['gallery_f'].T)
    summary = metrics.compute_cmc_map_from_dist(dist, r['query_label'][0], r['query_cam'][0],
                                                r['gallery_label'][0], r['gallery_cam'][0])
    write_report(tmp_path / 'plain', dist, query, gallery, summary)
    write_report(tmp_path / 'with', dist, query, gallery, summary, PageOptions(threshold=0.3))
    dom = PageRows()
    dom.feed((tmp_path / 'with' / 'index.html').read_text())
    same, accepted, different, rejected = 0, 0, 0, 0
    gl, gc = r['gallery_label'][0], r['gallery_cam'][0]
    for i, (ql, qc) in enumerate(zip(r['query_label'][0], r['query_cam'][0])):
        for j in range(len(gl)):
            if gl[j] == -1 or (gl[j] == ql and gc[j] == qc):
                continue
            score = float(np.dot(r['query_f'][i], r['gallery_f'][j]))
            if gl[j] == ql:
                same, accepted = same + 1, accepted + (score > 0.3)
            else:
                different, rejected = different + 1, rejected + (score <= 0.3)
    assert 0 < accepted < same and 0 < rejected < different  # the threshold cuts both histograms
    assert float(dom.threshold['data-accept']) == pytest.approx(accepted / same, abs=1e-6)
    assert float(dom.threshold['data-reject']) == pytest.approx(rejected / different, abs=1e-6)
    plain = PageRows()
    plain.feed((tmp_path / 'plain' / 'index.html').read_text())
    assert plain.threshold is None
    assert (histogram_pixels(tmp_path / 'plain') != histogram_pixels(tmp_path / 'with')).any(axis=2).sum() > 100


def test_html_heatmap_toggle(tiny_prepared, tmp_path):
    """--html --heatmap: every thumbnail has a heatmap version; #heatmaps switches every row to them, and they load."""
    binary = chromium()
    from test_export import write_run

    (tmp_path / 'model' / 'run').mkdir(parents=True)
    write_run(tmp_path / 'model' / 'run', pcb=False)
    write_result(tmp_path / 'r.mat', tiny_prepared)
    demo.main(['--html', str(tmp_path / 'page'), '--heatmap', '--name', 'run', '--model_dir', str(tmp_path / 'model'),
               '--test_dir', str(tiny_prepared), '--result', str(tmp_path / 'r.mat')])
    plain, heat = PageRows(), PageRows()
    plain.feed(run_chromium(binary, '--dump-dom', (tmp_path / 'page' / 'index.html').as_uri()))
    heat.feed(run_chromium(binary, '--dump-dom', (tmp_path / 'page' / 'index.html').as_uri() + '#heatmaps'))
    thumbs = [src for src in plain.images if src.startswith('thumbs/')]
    switched = [src for src in heat.images if src.startswith('thumbs/')]
    assert thumbs and all(not src.startswith('thumbs/h') for src in thumbs)
    assert switched == [src.replace('thumbs/', 'thumbs/h') for src in thumbs]
    assert heat.body['data-broken'] == '0'


def test_html_rerank_rows_follow_the_reranked_distances(tiny_prepared, tmp_path):
    """--rerank: each row's green frames are the same-id images among the top-10 of the re-ranked distances,
    computed by test_rerank's dense reference (Zhong et al. 2017 step by step, k1 20, k2 6, lambda 0.3), not by the
    re-ranker; the rows differ from the plain ranking's, so a page ranked without re-ranking fails."""
    from test_rerank import dense_rerank_reference

    r = write_result(tmp_path / 'r.mat', tiny_prepared, seed=1)
    demo.main(['--html', str(tmp_path / 'page'), '--rerank', '--test_dir', str(tiny_prepared), '--result',
               str(tmp_path / 'r.mat')])
    dom = PageRows()
    dom.feed((tmp_path / 'page' / 'index.html').read_text())
    dist = dense_rerank_reference(r['query_f'], r['gallery_f'], 20, 6, 0.3)
    assert dict(enumerate(expected_greens(r)[0])) != {int(row['data-query']): row['hit'] for row in dom.rows}
    gl, gc = r['gallery_label'][0], r['gallery_cam'][0]
    expected = {}
    for i, (ql, qc) in enumerate(zip(r['query_label'][0], r['query_cam'][0])):
        order = sorted(range(len(gl)), key=lambda j: (dist[i, j], j))
        keep = [j for j in order if not (gl[j] == -1 or (gl[j] == ql and gc[j] == qc))][:10]
        expected[i] = sum(gl[j] == ql for j in keep)
    assert {int(row['data-query']): row['hit'] for row in dom.rows} == expected


def test_demo_html_draws_the_runs_calibrated_threshold(tiny_prepared, tmp_path):
    """demo.py --html finds the threshold test.py --calibrate wrote into the run (--name) and the page shows it;
    without one, the page has no threshold line."""
    from reid.runs import RunFolder

    write_result(tmp_path / 'r.mat', tiny_prepared, seed=2)
    run = RunFolder(tmp_path / 'model' / 'calibrated')
    run.path.mkdir(parents=True)
    run.write_threshold({'far': 0.001, 'threshold': 0.3, 'tar': 0.5, 'auc': 0.9, 'calibrated_on': 'val x train',
                         'pairs': 10, 'accept': 'score > threshold'})
    pages = {}
    for name in ('calibrated', 'nothing'):
        demo.main(['--html', str(tmp_path / name), '--test_dir', str(tiny_prepared), '--result',
                   str(tmp_path / 'r.mat'), '--name', name, '--model_dir', str(tmp_path / 'model')])
        pages[name] = PageRows()
        pages[name].feed((tmp_path / name / 'index.html').read_text())
    assert float(pages['calibrated'].threshold['data-threshold']) == 0.3
    assert pages['nothing'].threshold is None
