"""evaluate_gpu.py's retrieval options beyond the ranking: --rerank gnn, --aqe/--aqe_alpha/--dba, --verify and
--save_threshold; the printed values against the dense references of their own tests."""
import numpy as np
import pytest
import yaml

import evaluate_gpu
from test_evaluate_cli import brute_force_from, brute_force_values, printed_values, write_result
from test_gnn_rerank import dense_gnn_reference
from test_metrics import reference_metrics
from test_query_expansion import loop_reference
from test_rerank import dense_rerank_reference
from test_verification import brute_force

from reid.runs import RunFolder


def labels(data):
    return data['query_label'], data['query_cam'], data['gallery_label'], data['gallery_cam']


def test_rerank_gnn_prints_the_gnn_result_last(tmp_path, capsys):
    data = write_result(tmp_path / 'r.mat', np.random.default_rng(7))
    evaluate_gpu.main(['--result', str(tmp_path / 'r.mat'), '--rerank', 'gnn'])
    lines = capsys.readouterr().out.strip().split('\n')
    assert lines[2] == 'single query, re-ranked by GNN (k1=26 k2=7 lambda=0.3):'
    score = dense_gnn_reference(data['query_f'], data['gallery_f'], 26, 7, 0.3)
    assert printed_values(lines[-2], lines[-1]) == pytest.approx(
        brute_force_from(reference_metrics(score.tolist(), *labels(data))), abs=1e-6)


def test_bare_rerank_stays_k_reciprocal(tmp_path, capsys):
    data = write_result(tmp_path / 'r.mat', np.random.default_rng(8))
    evaluate_gpu.main(['--rerank', '--result', str(tmp_path / 'r.mat')])
    lines = capsys.readouterr().out.strip().split('\n')
    assert lines[2] == 'single query, re-ranked (k1=20 k2=6 lambda=0.3):'
    dist = dense_rerank_reference(data['query_f'], data['gallery_f'], 20, 6, 0.3)
    assert printed_values(lines[-2], lines[-1]) == pytest.approx(
        brute_force_from(reference_metrics((-dist).tolist(), *labels(data))), abs=1e-6)


def test_aqe_with_dba_then_gnn(tmp_path, capsys):
    data = write_result(tmp_path / 'r.mat', np.random.default_rng(9))
    evaluate_gpu.main(['--result', str(tmp_path / 'r.mat'), '--aqe', '4', '--aqe_alpha', '2', '--dba',
                       '--rerank', 'gnn', '--k1', '9', '--k2', '3'])
    lines = capsys.readouterr().out.strip().split('\n')
    assert lines[2] == 'single query, query expansion (K=4 alpha=2 + DBA):'
    q, g = loop_reference(data['query_f'], data['gallery_f'], 4, 2.0, True)
    ql, qc, gl, gc = labels(data)
    assert printed_values(lines[3], lines[4]) == pytest.approx(brute_force_values(q, ql, qc, g, gl, gc), abs=1e-6)
    assert lines[5].startswith('single query, query expansion (K=4 alpha=2 + DBA), re-ranked by GNN (k1=9 k2=3')
    score = dense_gnn_reference(q.astype(np.float32), g.astype(np.float32), 9, 3, 0.3)
    assert printed_values(lines[-2], lines[-1]) == pytest.approx(
        brute_force_from(reference_metrics(score.tolist(), ql, qc, gl, gc)), abs=1e-5)


def test_verify_prints_saves_and_calibrates(tmp_path, capsys):
    data = write_result(tmp_path / 'r.mat', np.random.default_rng(10), n_query=30, n_gallery=200)
    run = tmp_path / 'run'
    run.mkdir()
    evaluate_gpu.main(['--result', str(tmp_path / 'r.mat'), '--verify', '--save_threshold', str(run),
                       '--far', '0.01'])
    lines = capsys.readouterr().out.strip().split('\n')
    fars = (1e-1, 1e-2, 1e-3, 1e-4)
    thresholds, tar, _, auc, _, _ = brute_force(data['query_f'], *labels(data)[:2], data['gallery_f'],
                                                *labels(data)[2:], fars)
    for line, far, t, r in zip(lines[1:5], fars, thresholds, tar):
        assert line == 'TAR@FAR=%.0e:%f threshold:%f' % (far, r, t)
    assert lines[5].startswith('AUC:%f' % auc)
    figures = yaml.safe_load((tmp_path / 'r_verify.yaml').read_text())
    assert figures['threshold'] == pytest.approx(thresholds, abs=1e-6)
    saved = RunFolder(run).read_threshold()
    assert saved['far'] == 0.01 and saved['threshold'] == pytest.approx(thresholds[1], abs=1e-6)
    assert saved['calibrated_on'] == str(tmp_path / 'r.mat')
    assert lines[-2].startswith('Rank@1:')   # the ranking follows, its two lines last


@pytest.mark.parametrize('argv', [['--rerank', 'gnn', '--k1', '3', '--k2', '5'], ['--dba'], ['--aqe', '-1'],
                                  ['--save_threshold', 'x'], ['--verify', '--far', '0.05'], ['--rerank', 'fast']])
def test_bad_retrieval_flags_exit(argv):
    with pytest.raises(SystemExit):
        evaluate_gpu.parse_args(argv)


def test_demo_takes_every_reranker_of_the_table_with_its_own_defaults(tmp_path, capsys):
    """demo.py offers what evaluate_gpu.py offers: `--rerank gnn` ranks a query by the GNN distances (the dense
    reference, at GNN's own defaults 26 / 7 / 0.3), a bare --rerank by k-reciprocal's (20 / 6 / 0.3)."""
    from conftest import load_repo_module
    from reid.evaluation.rerankers import RERANKERS
    from reid.evaluation.results import load_result

    demo = load_repo_module('demo.py', 'reid_demo_cli_rerankers')
    data = write_result(tmp_path / 'r.mat', np.random.default_rng(11))
    result = load_result(tmp_path / 'r.mat')
    for flag in RERANKERS:
        assert demo.parse_args(['--rerank', flag]).rerank == flag
        assert evaluate_gpu.parse_args(['--rerank', flag]).rerank == flag
    gnn = demo.query_keys(result, 3, demo.parse_args(['--rerank', 'gnn']))
    score = dense_gnn_reference(data['query_f'], data['gallery_f'], 26, 7, 0.3)
    np.testing.assert_allclose(gnn, -score[3], atol=1e-5)
    bare = demo.query_keys(result, 3, demo.parse_args(['--rerank']))
    np.testing.assert_allclose(bare, dense_rerank_reference(data['query_f'], data['gallery_f'], 20, 6, 0.3)[3],
                               atol=1e-5)
    with pytest.raises(SystemExit):
        demo.parse_args(['--rerank', 'gnn', '--k1', '3', '--k2', '5'])
    assert "so 1 <= k2 <= k1" in capsys.readouterr().err


def test_rerank_parameters_without_rerank_are_refused(capsys):
    """--k1/--k2/--lambda without --rerank would be silently unused: both commands refuse them, naming the flags."""
    from conftest import load_repo_module

    demo = load_repo_module('demo.py', 'reid_demo_cli_orphan_flags')
    for command in (demo, evaluate_gpu):
        with pytest.raises(SystemExit):
            command.parse_args(['--k1', '5', '--lambda', '0.2'])
        assert '--k1 --lambda: re-ranking parameters, they go with --rerank' in capsys.readouterr().err
        assert command.parse_args([]).rerank_params is None
