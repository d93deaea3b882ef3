"""Tests of reid/evaluation/metrics.py against brute-force references written from the definitions with plain
Python loops.

Scores come from quantised features (dot products exact in float32) or are given as distance matrices, so the
reference and the engine see the same numbers and any tie must be broken the same way (by gallery order).
"""
import re

import numpy as np
import pytest
import torch

from reid.evaluation import blocks, metrics
from reid.data.images import parse_market_name


def reference_metrics(score, ql, qc, gl, gc):
    """CMC, Market AP, standard AP and mINP by the book: one query at a time, plain loops, higher score first."""
    n_gallery = len(gl)
    first_hits, market, standard, inp = [], [], [], []
    for q in range(len(ql)):
        order = sorted(range(n_gallery), key=lambda g: (-score[q][g], g))
        ranked = [g for g in order if not (gl[g] == -1 or (gl[g] == ql[q] and gc[g] == qc[q]))]
        is_match = [gl[g] == ql[q] for g in ranked]
        n_good = sum(is_match)
        if n_good == 0:
            continue
        hits, ap_market, ap_standard, last = 0, 0.0, 0.0, 0
        for rank, match in enumerate(is_match, start=1):
            if match:
                hits += 1
                now = hits / rank
                before = (hits - 1) / (rank - 1) if rank > 1 else 1.0
                ap_market += (before + now) / 2 / n_good
                ap_standard += now / n_good
                last = rank
        first_hits.append(is_match.index(True) + 1)
        market.append(ap_market)
        standard.append(ap_standard)
        inp.append(n_good / last)
    n_valid = len(first_hits)
    cmc = [sum(1 for f in first_hits if f <= k) / n_valid if n_valid else float('nan')
           for k in range(1, n_gallery + 1)]
    mean = (lambda v: sum(v) / len(v)) if n_valid else (lambda v: float('nan'))
    return {'cmc': cmc, 'mAP': mean(market), 'mAP_standard': mean(standard), 'mINP': mean(inp),
            'n_valid': n_valid, 'n_skipped': len(ql) - n_valid}


def assert_same_metrics(got, want):
    assert got['n_valid'] == want['n_valid'] and got['n_skipped'] == want['n_skipped']
    assert len(got['cmc']) == len(want['cmc'])
    np.testing.assert_allclose(got['cmc'], want['cmc'], rtol=0, atol=1e-12)
    for key in ('mAP', 'mAP_standard', 'mINP'):
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-9, err_msg=key)


def quantised_features(rng, n, dim=6, levels=2):
    """Unit-norm-ish features with entries k/4: dot products are exact, many scores tie."""
    return (rng.integers(-levels, levels + 1, (n, dim)) / 4).astype(np.float32)


def exact_scores(qf, gf):
    return (qf.astype(np.float64) @ gf.astype(np.float64).T).tolist()


def labelled_set(rng, n, n_ids, n_cams, junk=0.0, distractors=0.0):
    labels = rng.integers(1, n_ids + 1, n)
    roll = rng.random(n)
    labels[roll < junk] = -1
    labels[(roll >= junk) & (roll < junk + distractors)] = 0
    return labels, rng.integers(1, n_cams + 1, n)


@pytest.mark.parametrize('seed', range(4))
def test_random_quantised_features_match_reference(seed):
    rng = np.random.default_rng(seed)
    gl, gc = labelled_set(rng, 150, 12, 6, junk=0.1, distractors=0.15)
    ql, qc = labelled_set(rng, 40, 14, 6)  # ids 13 and 14 are absent from the gallery: skipped
    qf, gf = quantised_features(rng, 40), quantised_features(rng, 150)
    got = metrics.compute_cmc_map(qf, ql, qc, gf, gl, gc, device='cpu')
    assert_same_metrics(got, reference_metrics(exact_scores(qf, gf), ql, qc, gl, gc))


@pytest.mark.parametrize('block', [1, 3, 16, None])
def test_block_size_does_not_change_results(block, monkeypatch):
    rng = np.random.default_rng(10)
    gl, gc = labelled_set(rng, 90, 8, 3, junk=0.1, distractors=0.1)
    ql, qc = labelled_set(rng, 25, 8, 3)
    qf, gf = quantised_features(rng, 25), quantised_features(rng, 90)
    if block:   # `block` query rows of scores per block
        monkeypatch.setattr(blocks, 'SCORES', block * len(gf))
    got = metrics.compute_cmc_map(qf, ql, qc, gf, gl, gc, device='cpu')
    assert_same_metrics(got, reference_metrics(exact_scores(qf, gf), ql, qc, gl, gc))


def test_deep_matches_and_ties_on_a_large_gallery():
    """Hardest matches from rank ~10 to the end of a 5000-image gallery, with many exact ties."""
    rng = np.random.default_rng(11)
    n_gallery = 5000
    gl, gc = labelled_set(rng, n_gallery, 40, 6, junk=0.05, distractors=0.1)
    ql, qc = labelled_set(rng, 30, 40, 6)
    dist = rng.random((30, n_gallery)).astype(np.float32)
    depth = [10, 40, 300, 2000, 4500]  # push each query's matches to at most this rank (roughly)
    for q in range(30):
        match = gl == ql[q]
        dist[q, match] = rng.random(match.sum()) * depth[q % len(depth)] / n_gallery
    dist = np.round(dist, 3)  # plenty of exact ties as well
    got = metrics.compute_cmc_map_from_dist(dist, ql, qc, gl, gc, device='cpu')
    assert_same_metrics(got, reference_metrics((-dist.astype(np.float64)).tolist(), ql, qc, gl, gc))


@pytest.mark.parametrize('cuts', [[30], [0, 7, 8, 30], [1, 2, 3, 29, 30]])
def test_streamed_blocks_match_reference(cuts):
    """Uneven blocks (empty ones too), each split again into 2-row pieces, give the brute-force metrics."""
    rng = np.random.default_rng(12)
    gl, gc = labelled_set(rng, 400, 20, 6, junk=0.05, distractors=0.1)
    ql, qc = labelled_set(rng, 30, 22, 6)
    dist = np.round(rng.random((30, 400)), 2).astype(np.float32)  # many ties
    edges = [0] + cuts
    blocks = ((a, b, torch.from_numpy(dist[a:b])) for a, b in zip(edges[:-1], edges[1:]))
    got = metrics.compute_cmc_map_from_blocks(blocks, ql, qc, gl, gc, device='cpu', block=2)
    assert_same_metrics(got, reference_metrics((-dist.astype(np.float64)).tolist(), ql, qc, gl, gc))


def test_streamed_blocks_must_cover_the_queries_in_order():
    ql, qc, gl, gc = np.ones(4, int), np.ones(4, int), np.ones(5, int), np.full(5, 2)
    dist = np.zeros((4, 5), np.float32)
    with pytest.raises(ValueError, match='cover 3 of 4'):
        metrics.compute_cmc_map_from_blocks([(0, 3, dist[:3])], ql, qc, gl, gc, device='cpu')
    with pytest.raises(ValueError, match='do not continue'):
        metrics.compute_cmc_map_from_blocks([(0, 2, dist[:2]), (3, 4, dist[3:])], ql, qc, gl, gc, device='cpu')


def test_all_ties_keep_gallery_order():
    ql, qc = np.array([1, 1]), np.array([1, 2])
    gl, gc = np.array([0, 1, 1, -1, 1, 0]), np.array([2, 1, 2, 2, 3, 3])
    dist = np.zeros((2, 6))
    got = metrics.compute_cmc_map_from_dist(dist, ql, qc, gl, gc, device='cpu')
    assert_same_metrics(got, reference_metrics(np.zeros((2, 6)).tolist(), ql, qc, gl, gc))
    # camera 1: valid order 0, 2, 4, 5; camera 2: valid order 0, 1, 4, 5 -> both match at ranks 2 and 3
    assert list(got['cmc'][:2]) == [0.0, 1.0]
    assert got['mAP_standard'] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_hand_made_ranking_known_values():
    """Relevance 1 0 1 0 0 1 (after junk removal): values worked out by hand."""
    gl = np.array([5, 0, -1, 5, 7, 5, 7, 5])   # index 2 is junk (-1), index 5 is junk (same id and camera)
    gc = np.array([2, 2, 2, 3, 1, 1, 4, 2])
    dist = np.arange(8, dtype=np.float32)[None, :]
    res = metrics.compute_cmc_map_from_dist(dist, [5], [1], gl, gc, device='cpu')
    # ranked valid items: 0 (hit), 1, 3 (hit), 4, 6, 7 (hit)
    assert res['mAP_standard'] == pytest.approx((1 / 1 + 2 / 3 + 3 / 6) / 3)
    assert res['mAP'] == pytest.approx((1.0 + (1 / 2 + 2 / 3) / 2 + (2 / 5 + 3 / 6) / 2) / 3)
    assert res['mINP'] == pytest.approx(3 / 6)
    assert list(res['cmc'][:3]) == [1.0, 1.0, 1.0]


def standard_ap_from_pr_curve(relevance, n_good):
    """Area under the step precision-recall curve: sum of precision times the recall gained at each rank."""
    relevance = np.asarray(relevance, dtype=np.float64)
    precision = np.cumsum(relevance) / np.arange(1, len(relevance) + 1)
    recall = np.cumsum(relevance) / n_good
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


def test_standard_ap_equals_area_under_precision_recall_curve():
    rng = np.random.default_rng(12)
    n_query, n_gallery = 20, 60
    gl = rng.integers(1, 4, n_gallery)
    gc = np.full(n_gallery, 2)
    ql, qc = rng.integers(1, 4, n_query), np.ones(n_query, dtype=int)
    dist = rng.permuted(np.tile(np.arange(n_gallery, dtype=np.float32), (n_query, 1)), axis=1)
    res = metrics.compute_cmc_map_from_dist(dist, ql, qc, gl, gc, device='cpu')
    want = [standard_ap_from_pr_curve(gl[np.argsort(dist[q])] == ql[q], np.sum(gl == ql[q]))
            for q in range(n_query)]
    assert res['mAP_standard'] == pytest.approx(np.mean(want), abs=1e-12)


def test_skipped_queries_all_junk_and_no_match():
    gl = np.array([3, 3, -1, 0, 4])
    gc = np.array([1, 1, 2, 1, 2])
    ql, qc = np.array([3, 9, 4]), np.array([1, 1, 1])   # 3: only same camera (junk); 9: absent; 4: one match
    res = metrics.compute_cmc_map(np.eye(3, 5, dtype=np.float32), ql, qc, np.eye(5, 5, dtype=np.float32),
                                  gl, gc, device='cpu')
    assert (res['n_valid'], res['n_skipped']) == (1, 2)
    assert_same_metrics(res, reference_metrics(exact_scores(np.eye(3, 5), np.eye(5)), ql, qc, gl, gc))


def test_junk_id_query_has_no_match():
    """A query labelled -1 matches nothing: every -1 gallery image is junk."""
    gl, gc = np.array([-1, -1, 2]), np.array([2, 3, 2])
    res = metrics.compute_cmc_map_from_dist(np.zeros((2, 3)), [-1, 2], [1, 1], gl, gc, device='cpu')
    assert (res['n_valid'], res['n_skipped']) == (1, 1)
    assert res['cmc'][0] == 1.0


def test_no_valid_query_gives_nan():
    res = metrics.compute_cmc_map(np.ones((2, 3)), [1, 2], [1, 1], np.ones((4, 3)), [1, 1, 2, -1], [1, 1, 1, 2],
                                  device='cpu')
    assert res['n_valid'] == 0 and res['n_skipped'] == 2 and np.isnan(res['mAP'])
    assert 'nan' in metrics.format_result(res)


def test_distractors_count_as_wrong_and_junk_is_removed():
    gl, gc = np.array([0, -1, 7]), np.array([2, 2, 2])
    dist = np.array([[0.1, 0.0, 0.5]])
    res = metrics.compute_cmc_map_from_dist(dist, [7], [1], gl, gc, device='cpu')
    assert res['cmc'][0] == 0 and res['cmc'][1] == 1   # distractor ahead, junk ignored
    assert res['mAP_standard'] == pytest.approx(1 / 2)


def test_multi_digit_cameras():
    """Cameras parsed from file names: c12 is neither camera 1 nor camera 2. Parsing one character (the original)
    makes the c12 query's only true match (camera 1) junk, so that query would be skipped."""
    gallery = ['0005_c1s1_000100_01.jpg', '0005_c12s1_000200_01.jpg', '0009_c3s1_000300_01.jpg']
    query = ['0005_c12s3_000400_01.jpg', '0005_c2s2_000500_01.jpg']
    gl, gc = (np.array(v) for v in zip(*map(parse_market_name, gallery)))
    ql, qc = (np.array(v) for v in zip(*map(parse_market_name, query)))
    assert gc.tolist() == [1, 12, 3] and qc.tolist() == [12, 2]
    dist = np.array([[0.0, 0.1, 0.2], [0.0, 0.1, 0.2]])
    res = metrics.compute_cmc_map_from_dist(dist, ql, qc, gl, gc, device='cpu')
    assert_same_metrics(res, reference_metrics((-dist).tolist(), [5, 5], [12, 2], [5, 5, 9], [1, 12, 3]))
    assert res['n_valid'] == 2 and res['cmc'][0] == 1.0 and res['mAP'] == pytest.approx(1.0)
    one_char = [int(n.split('_')[1][1]) for n in gallery], [int(n.split('_')[1][1]) for n in query]
    wrong = metrics.compute_cmc_map_from_dist(dist, ql, one_char[1], gl, one_char[0], device='cpu')
    assert wrong['n_valid'] == 1


@pytest.mark.parametrize('name, expected', [
    ('0002_c1s1_000451_03.jpg', (2, 1)),          # Market-1501
    ('0005_c2_f0046985.jpg', (5, 2)),             # DukeMTMC-reID
    ('-1_c3s2_000001_00.jpg', (-1, 3)),           # Market junk
    ('0000_c6s4_001234_05.jpg', (0, 6)),          # distractor
    ('0002_c12s3_000451_03.jpg', (2, 12)),        # multi-digit camera
    ('0001_c001_00016450_0.jpg', (1, 1)),         # VeRi-776
    ('1001_c15s2_000100_00.jpg', (1001, 15)),
    ('/data/pytorch/query/0002/0002_c12s3_000451_03.jpg', (2, 12)),
])
def test_parse_market_name(name, expected):
    assert parse_market_name(name) == expected


@pytest.mark.parametrize('name', ['IMG_0001.jpg', 'c1_0002.jpg', '0002c1s1.jpg', '0002_s1c1.jpg', '-2_c1s1.jpg',
                                  'abcd_c1s1.jpg', '0002_c_000451.jpg'])
def test_parse_market_name_rejects_other_names_naming_the_file(name):
    with pytest.raises(ValueError, match=re.escape(name)):
        parse_market_name(name)


@pytest.mark.parametrize('n_gallery', [1, 2, 9, 10, 11])
def test_small_galleries_saturate_cmc(n_gallery):
    rng = np.random.default_rng(n_gallery)
    gl = rng.integers(1, 3, n_gallery)
    gl[0] = 1
    gc = np.full(n_gallery, 2)
    qf, gf = quantised_features(rng, 4), quantised_features(rng, n_gallery)
    ql, qc = np.array([1, 1, 2, 1]), np.ones(4, dtype=int)
    res = metrics.compute_cmc_map(qf, ql, qc, gf, gl, gc, device='cpu')
    assert_same_metrics(res, reference_metrics(exact_scores(qf, gf), ql, qc, gl, gc))
    assert len(res['cmc']) == n_gallery and np.all(np.diff(res['cmc']) >= 0) and res['cmc'][-1] == 1.0
    line = metrics.format_result(res).split('\n')[0]
    values = [float(v) for v in re.findall(r'Rank@\d+:([0-9.]+)', line)]
    want = [res['cmc'][min(k, n_gallery) - 1] for k in (1, 5, 10)]
    assert values == pytest.approx(want, abs=1e-6)


def test_format_result_lines():
    res = {'cmc': np.array([0.5, 0.75, 0.8] + [0.9] * 10), 'mAP': 0.25, 'mAP_standard': 0.2, 'mINP': 0.1,
           'n_valid': 9, 'n_skipped': 1}
    first, second = metrics.format_result(res).split('\n')
    assert first == 'Rank@1:0.500000 Rank@5:0.900000 Rank@10:0.900000 mAP:0.250000'
    assert 'mAP(standard):0.200000' in second and 'mINP:0.100000' in second
    assert '9 evaluated' in second and '1 skipped' in second


def test_accepts_torch_tensors_and_row_shaped_labels():
    rng = np.random.default_rng(13)
    gl, gc = labelled_set(rng, 50, 5, 3, junk=0.1)
    ql, qc = labelled_set(rng, 10, 5, 3)
    qf, gf = quantised_features(rng, 10), quantised_features(rng, 50)
    from_numpy = metrics.compute_cmc_map(qf, ql[None, :], qc[None, :], gf, gl[None, :], gc[None, :], device='cpu')
    from_torch = metrics.compute_cmc_map(torch.from_numpy(qf), torch.from_numpy(ql), torch.from_numpy(qc),
                                         torch.from_numpy(gf), torch.from_numpy(gl), torch.from_numpy(gc))
    assert_same_metrics(from_torch, from_numpy)
    assert_same_metrics(from_numpy, reference_metrics(exact_scores(qf, gf), ql, qc, gl, gc))


def test_bad_input_is_rejected():
    f = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match='query'):
        metrics.compute_cmc_map(f, [1, 2], [1, 1, 1], f, [1, 2, 3], [1, 1, 1], device='cpu')
    with pytest.raises(ValueError, match='features'):
        metrics.compute_cmc_map(f, [1, 2, 3], [1, 1, 1], np.ones((3, 5)), [1, 2, 3], [1, 1, 1], device='cpu')
    with pytest.raises(ValueError, match='NaN'):
        metrics.compute_cmc_map_from_dist(np.full((1, 2), np.nan), [1], [1], [1, 1], [1, 2], device='cpu')


def test_stable_smallest_k_matches_stable_argsort():
    rng = np.random.default_rng(14)
    keys = rng.integers(0, 6, (50, 40)).astype(np.float32)   # heavy ties, also at the k-th position
    keys[:5] = 1.0                                           # rows of one value
    for k in (1, 5, 17, 40):
        values, indices = metrics.stable_smallest_k(torch.from_numpy(keys), k)
        want = np.argsort(keys, axis=1, kind='stable')[:, :k]
        np.testing.assert_array_equal(indices.numpy(), want)
        np.testing.assert_array_equal(values.numpy(), np.take_along_axis(keys, want, 1))


def test_pool_multi_query_matches_loop():
    rng = np.random.default_rng(15)
    qf = rng.standard_normal((12, 5)).astype(np.float32)
    ql, qc = rng.integers(1, 5, 12), rng.integers(1, 3, 12)
    mf = rng.standard_normal((30, 5)).astype(np.float32)
    ml, mc = rng.integers(1, 4, 30), rng.integers(1, 3, 30)   # id 4 never has multi-query images
    pooled, n_fallback = metrics.pool_multi_query(qf, ql, qc, mf, ml, mc)
    fallbacks = 0
    for q in range(12):
        same = [m for m in range(30) if ml[m] == ql[q] and mc[m] == qc[q]]
        if same:
            mean = np.mean(mf[same].astype(np.float64), axis=0)
            want = mean / np.linalg.norm(mean)
        else:
            fallbacks += 1
            want = qf[q]
        np.testing.assert_allclose(pooled[q].numpy(), want, rtol=1e-5, atol=1e-6)
    assert n_fallback == fallbacks and fallbacks > 0


def test_the_evaluation_device_follows_reid_device(monkeypatch):
    """REID_DEVICE=cpu makes every command decide as on a machine without CUDA: evaluation too."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.delenv('REID_DEVICE', raising=False)
    assert metrics.pick_device().type == 'cuda'
    monkeypatch.setenv('REID_DEVICE', 'cpu')
    assert metrics.pick_device().type == 'cpu'
    assert metrics.pick_device('cuda').type == 'cuda'   # an explicit device is kept
