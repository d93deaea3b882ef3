"""Tests of the evaluate_gpu.py front-end: .mat loading, flags, printed lines and clear errors."""
import re
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io

import evaluate_gpu
from test_metrics import reference_metrics
from test_rerank import dense_rerank_reference

ROOT = Path(__file__).resolve().parents[1]
FIRST_LINE = re.compile(r'^Rank@1:(\S+) Rank@5:(\S+) Rank@10:(\S+) mAP:(\S+)$')
SECOND_LINE = re.compile(r'^mAP\(standard\):(\S+) mINP:(\S+) \(queries: (\d+) evaluated, (\d+) skipped')


def unit_rows(rng, n, dim=16):
    f = rng.standard_normal((n, dim)).astype(np.float32)
    return f / np.linalg.norm(f, axis=1, keepdims=True)


def write_result(path, rng, n_query=20, n_gallery=80, n_ids=6):
    """A pytorch_result.mat as test.py writes it (labels and cameras saved as 1 x N int rows)."""
    gl = rng.integers(0, n_ids + 1, n_gallery)
    gl[:n_gallery // 16] = -1
    gc = rng.integers(1, 16, n_gallery)    # multi-digit cameras
    ql, qc = rng.integers(1, n_ids + 1, n_query), rng.integers(1, 16, n_query)
    data = {'gallery_f': unit_rows(rng, n_gallery), 'gallery_label': gl, 'gallery_cam': gc,
            'query_f': unit_rows(rng, n_query), 'query_label': ql, 'query_cam': qc}
    scipy.io.savemat(str(path), data)
    return data


def first_line_values(line):
    match = FIRST_LINE.match(line)
    assert match, line
    return [float(v) for v in match.groups()]


def test_load_result_returns_flat_arrays(tmp_path):
    data = write_result(tmp_path / 'r.mat', np.random.default_rng(0))
    res = evaluate_gpu.load_result(tmp_path / 'r.mat')
    qf, ql, qc, gf, gl, gc = res
    assert ql.ndim == qc.ndim == gl.ndim == gc.ndim == 1
    np.testing.assert_array_equal(gc, data['gallery_cam'])
    np.testing.assert_array_equal(res.query_label, data['query_label'])
    np.testing.assert_array_equal(res.gallery_label, data['gallery_label'])
    assert res[0] is qf
    assert qf.dtype == np.float32 and gf.shape == data['gallery_f'].shape


def printed_values(first, second):
    """[Rank@1, Rank@5, Rank@10, mAP, mAP(standard), mINP, evaluated, skipped] from the two printed lines."""
    match = SECOND_LINE.match(second)
    assert match, second
    return first_line_values(first) + [float(v) for v in match.groups()]


def brute_force_values(qf, ql, qc, gf, gl, gc):
    """The same eight numbers from the plain-Python reference of test_metrics (float64 cosine scores)."""
    want = reference_metrics((np.asarray(qf, np.float64) @ np.asarray(gf, np.float64).T).tolist(), ql, qc, gl, gc)
    return brute_force_from(want)


def brute_force_from(want):
    cmc = want['cmc']
    return [cmc[min(k, len(cmc)) - 1] for k in (1, 5, 10)] + [want['mAP'], want['mAP_standard'], want['mINP'],
                                                              want['n_valid'], want['n_skipped']]


def test_main_prints_the_metrics_of_the_file(tmp_path, capsys):
    data = write_result(tmp_path / 'r.mat', np.random.default_rng(1))
    evaluate_gpu.main(['--result', str(tmp_path / 'r.mat')])
    lines = capsys.readouterr().out.strip().split('\n')
    assert len(lines) == 2
    want = brute_force_values(data['query_f'], data['query_label'], data['query_cam'], data['gallery_f'],
                              data['gallery_label'], data['gallery_cam'])
    assert printed_values(*lines) == pytest.approx(want, abs=1e-6)
    assert 0 < want[0] < 1  # the case is not trivial: some queries are missed at rank 1


def test_small_gallery_does_not_crash(tmp_path, capsys):
    rng = np.random.default_rng(2)
    scipy.io.savemat(str(tmp_path / 'r.mat'), {
        'query_f': unit_rows(rng, 3), 'query_label': [1, 2, 1], 'query_cam': [1, 1, 2],
        'gallery_f': unit_rows(rng, 4), 'gallery_label': [2, 1, 0, 1], 'gallery_cam': [2, 3, 1, 12]})
    evaluate_gpu.main(['--result', str(tmp_path / 'r.mat')])
    rank1, rank5, rank10, _ = first_line_values(capsys.readouterr().out.split('\n')[0])
    assert rank1 <= rank5 == rank10 == 1.0  # Rank@5 and Rank@10 are Rank@4 on a 4-image gallery


def test_missing_file_and_missing_key_name_the_problem(tmp_path):
    with pytest.raises(SystemExit, match='nope.mat'):
        evaluate_gpu.main(['--result', str(tmp_path / 'nope.mat')])
    scipy.io.savemat(str(tmp_path / 'partial.mat'), {'query_f': np.ones((2, 3)), 'query_label': [1, 2],
                                                     'query_cam': [1, 1]})
    with pytest.raises(ValueError, match=r'partial\.mat.*gallery_f'):   # the library raises, the command exits
        evaluate_gpu.load_result(tmp_path / 'partial.mat')
    with pytest.raises(SystemExit, match=r'^evaluate_gpu.py: .*partial\.mat.*gallery_f'):
        evaluate_gpu.main(['--result', str(tmp_path / 'partial.mat')])


def test_inconsistent_lengths_are_reported(tmp_path):
    rng = np.random.default_rng(3)
    scipy.io.savemat(str(tmp_path / 'bad.mat'), {
        'query_f': unit_rows(rng, 3), 'query_label': [1, 2], 'query_cam': [1, 1, 1],
        'gallery_f': unit_rows(rng, 4), 'gallery_label': [1, 2, 3, 4], 'gallery_cam': [1, 1, 1, 1]})
    with pytest.raises(ValueError, match='query_f'):
        evaluate_gpu.load_result(tmp_path / 'bad.mat')


def test_multi_query_pools_and_counts_fallbacks(tmp_path, capsys):
    rng = np.random.default_rng(4)
    data = write_result(tmp_path / 'r.mat', rng)
    keep = [0, 1, 2, 3, 4, 5]   # multi-query images only for the first six queries' id and camera
    mq_label = np.repeat(data['query_label'][keep], 2)
    mq_cam = np.repeat(data['query_cam'][keep], 2)
    mq_f = unit_rows(rng, 12)
    scipy.io.savemat(str(tmp_path / 'm.mat'), {'mquery_f': mq_f, 'mquery_label': mq_label, 'mquery_cam': mq_cam})
    evaluate_gpu.main(['--result', str(tmp_path / 'r.mat'), '--multi', '--multi_result', str(tmp_path / 'm.mat')])
    out = capsys.readouterr().out
    expected_fallback = sum(1 for q, c in zip(data['query_label'], data['query_cam'])
                            if not np.any((mq_label == q) & (mq_cam == c)))
    assert f'{expected_fallback} of 20 queries had no multi-query image' in out
    lines = out.strip().split('\n')
    assert lines[2].startswith('multi-query')
    # independent pooling: mean of the images with the query's id and camera (its own feature if none)
    pooled = np.array([mq_f[(mq_label == q) & (mq_cam == c)].mean(axis=0) if np.any((mq_label == q) & (mq_cam == c))
                       else f for f, q, c in zip(data['query_f'], data['query_label'], data['query_cam'])])
    args = (data['query_label'], data['query_cam'], data['gallery_f'], data['gallery_label'], data['gallery_cam'])
    multi = brute_force_values(pooled, *args)
    single = brute_force_values(data['query_f'], *args)
    assert printed_values(lines[0], lines[1]) == pytest.approx(single, abs=1e-6)
    assert printed_values(lines[3], lines[4]) == pytest.approx(multi, abs=1e-6)
    assert multi != pytest.approx(single, abs=1e-4)  # scoring the plain queries would fail this test


@pytest.mark.parametrize('k1, k2, lam', [(7, 3, 0.3), (12, 1, 0.1), (20, 6, 0.3)])
def test_rerank_flags_reach_the_re_ranking(tmp_path, capsys, k1, k2, lam):
    """The printed re-ranked metrics equal a brute-force evaluation of the dense re-ranking of the paper with the
    same --k1 --k2 --lambda; a lambda below 1 makes k1 and k2 matter (checked by the values differing). The
    original's values (20, 6, 0.3) are given by a bare --rerank: they are its defaults."""
    data = write_result(tmp_path / 'r.mat', np.random.default_rng(5))
    flags = [] if (k1, k2, lam) == (20, 6, 0.3) else ['--k1', str(k1), '--k2', str(k2), '--lambda', str(lam)]
    args = evaluate_gpu.parse_args(['--rerank', *flags])
    assert args.rerank_params == dict(k1=k1, k2=k2, lambda_value=lam)
    evaluate_gpu.main(['--result', str(tmp_path / 'r.mat'), '--rerank', *flags])
    lines = capsys.readouterr().out.strip().split('\n')
    assert lines[2].startswith(f'single query, re-ranked (k1={k1} k2={k2} lambda={lam:g})')
    labels = (data['query_label'], data['query_cam'], data['gallery_label'], data['gallery_cam'])
    dist = dense_rerank_reference(data['query_f'], data['gallery_f'], k1, k2, lam)
    want = brute_force_from(reference_metrics((-dist).tolist(), *labels))
    assert printed_values(lines[3], lines[4]) == pytest.approx(want, abs=1e-6)
    other = dense_rerank_reference(data['query_f'], data['gallery_f'], 3, 2, lam)
    assert brute_force_from(reference_metrics((-other).tolist(), *labels))[3] != pytest.approx(want[3], abs=1e-4)


def test_bad_flag_values_exit(capsys):
    with pytest.raises(SystemExit):
        evaluate_gpu.parse_args(['--lambda', '1.5'])
    with pytest.raises(SystemExit):
        evaluate_gpu.parse_args(['--k1', '0'])
    assert '--lambda' in capsys.readouterr().err


def test_script_runs_as_a_program(tmp_path):
    write_result(tmp_path / 'r.mat', np.random.default_rng(6))
    done = subprocess.run([sys.executable, str(ROOT / 'evaluate_gpu.py'), '--result', str(tmp_path / 'r.mat')],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert FIRST_LINE.match(done.stdout.split('\n')[0])


def source_draw(labels, seed):
    """VehicleID's draw written out: per id, the image with the smallest uniform key of default_rng(seed) (keys
    over the images in source order) is the gallery image; returns the set of their source indices."""
    key = np.random.default_rng(seed).random(len(labels))
    best = {}
    for i, label in enumerate(labels):
        if label not in best or key[i] < key[best[label]]:
            best[label] = i
    return set(best.values())


def trial_lines(out):
    """(means, stds, third line's values) from the three lines printed for several trials."""
    first, second, third = out.strip().split('\n')[:3]
    means = first_line_values(first)
    match = re.match(r'^std Rank@1:(\S+) Rank@5:(\S+) Rank@10:(\S+) mAP:(\S+) \(over (\d+) trials\)$', second)
    assert match, second
    rest = re.match(r'^mAP\(standard\):(\S+)\+-(\S+) mINP:(\S+)\+-(\S+) \(queries per trial: (\S+) evaluated, '
                    r'(\S+) skipped\)$', third)
    assert rest, third
    return means, [float(v) for v in match.groups()], [float(v) for v in rest.groups()]


def test_trials_redraw_the_gallery_in_source_order_and_print_mean_then_population_std(tmp_path, capsys):
    """--trials N: query and gallery pooled, put back in source order (camera -(k+1) numbers image k, as prepare.py
    writes a layout without cameras), one image per id drawn into the gallery with seeds 0..N-1 (seed 0: the
    file's own split); the first line holds the means, the next the population standard deviations."""
    rng = np.random.default_rng(11)
    labels = np.repeat(np.arange(1, 13), rng.integers(2, 6, 12))          # 12 vehicles, 2-5 images each
    n = len(labels)
    centres = unit_rows(rng, 12)
    f = centres[labels - 1] + 0.9 * unit_rows(rng, n)                     # clustered: ranks vary by draw
    f = (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32)
    cams = -(np.arange(n) + 1)
    gallery = sorted(source_draw(labels.tolist(), 0))
    query = [i for i in range(n) if i not in gallery]
    # the file lists each split in another order than the source's (prepare.py lists by id folder, then name)
    query, gallery = rng.permutation(query), rng.permutation(gallery)
    scipy.io.savemat(tmp_path / 'vid.mat', {'query_f': f[query], 'query_label': labels[query], 'query_cam': cams[query],
                                             'gallery_f': f[gallery], 'gallery_label': labels[gallery],
                                             'gallery_cam': cams[gallery]})
    per_trial = []
    for seed in range(4):
        g = sorted(source_draw(labels.tolist(), seed))
        q = [i for i in range(n) if i not in g]
        per_trial.append(brute_force_values(f[q], labels[q], cams[q], f[g], labels[g], cams[g]))
    own_split = brute_force_values(f[query], labels[query], cams[query], f[gallery], labels[gallery], cams[gallery])
    assert per_trial[0] == pytest.approx(own_split)                      # seed 0 is the file's split
    assert len({tuple(t) for t in per_trial}) == 4                         # the draws differ
    capsys.readouterr()
    evaluate_gpu.main(['--result', str(tmp_path / 'vid.mat'), '--trials', '4'])
    means, stds, rest = trial_lines(capsys.readouterr().out)
    columns = list(zip(*per_trial))   # rank1 rank5 rank10 mAP mAP_standard mINP evaluated skipped
    assert means == pytest.approx([statistics.fmean(c) for c in columns[:4]], abs=1e-6)
    assert stds[:4] == pytest.approx([statistics.pstdev(c) for c in columns[:4]], abs=1e-6) and stds[4] == 4
    assert min(stds[0], stds[3]) > 1e-3                                     # the case is not trivial
    assert stds[3] != pytest.approx(statistics.stdev(columns[3]), abs=1e-5)            # population, not sample
    assert rest == pytest.approx([statistics.fmean(columns[4]), statistics.pstdev(columns[4]),
                                  statistics.fmean(columns[5]), statistics.pstdev(columns[5]),
                                  statistics.fmean(columns[6]), statistics.fmean(columns[7])], abs=1e-6)
    saved = scipy.io.loadmat(tmp_path / 'vid_trials.mat')   # per-trial values beside the first result
    for k, key in enumerate(('rank1', 'rank5', 'rank10', 'mAP', 'mAP_standard', 'mINP')):
        assert saved[key].ravel() == pytest.approx(columns[k]), key
        assert saved['mean_' + key].item() == pytest.approx(statistics.fmean(columns[k])), key
        assert saved['std_' + key].item() == pytest.approx(statistics.pstdev(columns[k])), key


def test_several_result_files_average_every_file(tmp_path, capsys):
    """VIPeR: several --result files (one per split) give the mean of their metrics, then the population std."""
    rng = np.random.default_rng(12)
    files, per_file = [], []
    for k in range(3):
        files.append(str(tmp_path / f'viper{k}.mat'))
        data = write_result(files[-1], rng, n_query=12, n_gallery=30, n_ids=4)
        per_file.append(brute_force_values(data['query_f'], data['query_label'], data['query_cam'],
                                           data['gallery_f'], data['gallery_label'], data['gallery_cam']))
    capsys.readouterr()
    evaluate_gpu.main(['--result', *files])
    means, stds, rest = trial_lines(capsys.readouterr().out)
    columns = list(zip(*per_file))
    assert means == pytest.approx([statistics.fmean(c) for c in columns[:4]], abs=1e-6)
    assert stds == pytest.approx([statistics.pstdev(c) for c in columns[:4]] + [3], abs=1e-6)
    assert min(stds[0], stds[3]) > 1e-3   # the files differ: a mean over copies of one file would fail
    saved = scipy.io.loadmat(tmp_path / 'viper0_trials.mat')
    assert saved['mAP'].ravel() == pytest.approx(columns[3])
