"""Tests of the verification report (TAR at FAR, thresholds, AUC) against a brute-force ROC over every pair, and of
the run's threshold.yaml."""

import numpy as np
import pytest
import scipy.stats

from reid.evaluation import blocks, verification
from reid.runs import RunFolder


def brute_force(qf, ql, qc, gf, gl, gc, fars):
    """Every pair's score in one matrix; thresholds by sorting all negatives; AUC from scipy's Mann-Whitney U."""
    scores = qf.astype(np.float32) @ gf.astype(np.float32).T
    same = ql[:, None] == gl[None]
    junk = (same & (qc[:, None] == gc[None])) | (gl[None] == -1)
    pos, neg = scores[same & ~junk], scores[~same & ~junk]
    ordered = np.sort(neg)[::-1]
    thresholds = [ordered[min(int(round(far * 1e6)) * len(neg) // 1000000, len(neg) - 1)] for far in fars]
    tar = [float((pos > t).mean()) for t in thresholds]
    far_reached = [float((neg > t).mean()) for t in thresholds]
    u = scipy.stats.mannwhitneyu(pos.astype(np.float64), neg.astype(np.float64), alternative='two-sided').statistic
    return thresholds, tar, far_reached, u / (len(pos) * len(neg)), len(pos), len(neg)


def random_set(rng, n_query, n_gallery, ids, tied):
    q_ids, g_ids = rng.integers(0, ids, n_query), rng.integers(-1, ids, n_gallery)
    centres = rng.standard_normal((ids + 1, 16))
    qf = centres[q_ids] + rng.standard_normal((n_query, 16))
    gf = centres[g_ids] + rng.standard_normal((n_gallery, 16))
    if tied:  # entries +-1/4: each product is +-1/16, so every score is exact in float32 whatever the summation
        # order of the CPU's kernel (+-1/sqrt(8) was not: numpy and torch differed by an ulp on an EPYC), many equal
        qf, gf = np.sign(qf), np.sign(gf)
    qf = qf / np.linalg.norm(qf, axis=1, keepdims=True)
    gf = gf / np.linalg.norm(gf, axis=1, keepdims=True)
    return (qf.astype(np.float32), q_ids, rng.integers(0, 3, n_query),
            gf.astype(np.float32), g_ids, rng.integers(0, 3, n_gallery))


@pytest.mark.parametrize('tied', [False, True])
def test_verification_matches_a_brute_force_roc(tied, monkeypatch):
    rng = np.random.default_rng(int(tied))
    data = random_set(rng, 70, 300, 15, tied)
    monkeypatch.setattr(blocks, 'SCORES', 300 * 9)   # 9 queries per block: streaming exercised
    monkeypatch.setattr(verification, '_BINS', 64)                 # coarse bins: thresholds must be refined
    fars = (1e-1, 1e-2, 1e-3, 3e-2)
    got = verification.verification_report(*data, fars=fars)
    thresholds, tar, far_reached, auc, n_pos, n_neg = brute_force(*data, fars)
    assert (got['n_positive'], got['n_negative']) == (n_pos, n_neg)
    assert got['threshold'] == pytest.approx(thresholds, abs=1e-6)
    assert got['tar'] == pytest.approx(tar, abs=1e-12)
    assert got['auc'] == pytest.approx(auc, abs=1e-12)
    assert all(f <= far + 1e-12 for f, far in zip(far_reached, fars))   # never more false accepts than asked


def test_verification_output_and_files(tmp_path):
    report = {'fars': [0.01], 'tar': [0.8123], 'threshold': [0.6712], 'auc': 0.9541, 'n_positive': 3,
              'n_negative': 900}
    assert verification.format_verification(report).splitlines() == [
        'TAR@FAR=1e-02:0.812300 threshold:0.671200', 'AUC:0.954100 (pairs: 3 same id, 900 different id)']
    assert verification.figures_file(tmp_path / 'pytorch_result.mat') == tmp_path / 'pytorch_result_verify.yaml'
    verification.save_figures(report, verification.figures_file(tmp_path / 'r.mat'), 'r.mat')
    assert verification.threshold_of(result_path=tmp_path / 'r.mat', far=0.01) == 0.6712
    run = RunFolder(tmp_path / 'run')
    run.path.mkdir()
    assert verification.threshold_of(run.path, tmp_path / 'none.mat') is None
    run.write_threshold(verification.threshold_entry(report, 0.01, 'val'))
    assert run.read_threshold()['threshold'] == 0.6712 and run.read_threshold()['calibrated_on'] == 'val'
    assert verification.threshold_of(run.path, tmp_path / 'r.mat') == 0.6712


@pytest.mark.parametrize('text', ['far: [1\n', '- 1\n', 'far: 0.01\n', 'far: 2\nthreshold: 0.5\n',
                                  'far: 0.01\nthreshold: abc\n'])
def test_malformed_threshold_file_is_one_line_error(tmp_path, text):
    run = RunFolder(tmp_path)
    run.threshold_file.write_text(text)
    with pytest.raises(ValueError, match='threshold.yaml') as err:
        run.read_threshold()
    assert '\n' not in str(err.value)


def test_no_pairs_of_a_kind_is_an_error():
    f = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match='same-id'):
        verification.verification_report(f, [1, 2, 3], [0, 0, 0], f, [4, 5, 6], [1, 1, 1])


def test_ids_and_cameras_that_do_not_count_the_images_are_refused():
    """Two gallery ids for three gallery images: an error naming the gallery, not a report on misaligned pairs."""
    f = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match='gallery: 3 rows but 2 labels'):
        verification.verification_report(f, [1, 2, 3], [0, 1, 0], f, [1, 2], [1, 1])
