"""Benchmark of evaluate_gpu.py's engine and re-ranking against naive references on a synthetic set of a real size.

    python -m bench.bench_evaluate                        # Market size (3368 x 19732 x 512), dense re-ranking too
    python -m bench.bench_evaluate --scale 0.5            # half the queries, gallery and ids
    python -m bench.bench_evaluate --skip_dense           # leave out the dense re-ranking (~13 GB at full size)
    python -m bench.bench_evaluate --size msmt17          # MSMT17 size (11659 x 82161 x 512), no naive references
    python -m bench.bench_evaluate --size msmt17 --whole_process_only   # just `python evaluate_gpu.py [--rerank]`
    python -m bench.bench_evaluate --methods              # plain / k-reciprocal / GNN / AQE at Market AND MSMT17 size
    python -m bench.bench_evaluate --methods --market_only            # the same at Market size only (minutes)

Each variant runs in its own subprocess, so its peak RSS (os.wait4) is its own; 'load only' is the baseline
(python, torch, the .mat) that the other peaks are compared with. Times cover the computation only, except the
two 'evaluate_gpu.py' rows: the whole process (`python evaluate_gpu.py [--rerank]`, start-up and loading included),
wall time and peak RSS, the figures the issue's targets are about.
References: the original per-query loop (a matrix-vector product and a full argsort per query, numpy set
operations) and the original's dense re-ranking (every (N+M)^2 matrix, with the 4th-power defect fixed so both
give the same distances).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MARKET = dict(queries=3368, gallery_real=13115, distractors=2798, junk=3819, ids=750, cams=6, dim=512)
# MSMT17's test split: 3060 ids, 15 cameras, no distractors or junk (one of each is kept so the code paths run)
MSMT17 = dict(queries=11659, gallery_real=82159, distractors=1, junk=1, ids=3060, cams=15, dim=512)
SIZES = {'market': MARKET, 'msmt17': MSMT17}


def write_synthetic_result(path, scale, noise, seed=0, size='market'):
    """Write a pytorch_result.mat with a dataset's composition: id centroids + camera shift + noise, unit norm."""
    import scipy.io
    rng = np.random.default_rng(seed)
    n = {k: max(1, round(v * scale)) if k not in ('cams', 'dim') else v for k, v in SIZES[size].items()}
    dim = n['dim']
    centres = rng.standard_normal((n['ids'] + 1, dim)).astype(np.float32)
    cam_shift = 0.5 * rng.standard_normal((n['cams'] + 1, dim)).astype(np.float32)

    def features(ids, cams, spread):
        f = centres[ids] + cam_shift[cams] + spread * rng.standard_normal((len(ids), dim)).astype(np.float32)
        return f / np.linalg.norm(f, axis=1, keepdims=True)

    q_ids = rng.integers(1, n['ids'] + 1, n['queries'])
    q_cams = rng.integers(1, n['cams'] + 1, n['queries'])
    g_ids = rng.integers(1, n['ids'] + 1, n['gallery_real'])
    g_cams = rng.integers(1, n['cams'] + 1, n['gallery_real'])
    gallery_f = [features(g_ids, g_cams, noise)]
    # distractors: far from every identity; junk: badly cropped views of real identities
    d_cams = rng.integers(1, n['cams'] + 1, n['distractors'])
    distractor_f = rng.standard_normal((n['distractors'], dim)).astype(np.float32) + cam_shift[d_cams]
    gallery_f.append(distractor_f / np.linalg.norm(distractor_f, axis=1, keepdims=True))
    j_ids = rng.integers(1, n['ids'] + 1, n['junk'])
    j_cams = rng.integers(1, n['cams'] + 1, n['junk'])
    gallery_f.append(features(j_ids, j_cams, 2 * noise))
    scipy.io.savemat(str(path), {
        'query_f': features(q_ids, q_cams, noise), 'query_label': q_ids, 'query_cam': q_cams,
        'gallery_f': np.concatenate(gallery_f),
        'gallery_label': np.concatenate([g_ids, np.zeros(n['distractors'], int), -np.ones(n['junk'], int)]),
        'gallery_cam': np.concatenate([g_cams, d_cams, j_cams])})
    return n


# ---- naive references (the original's algorithms) ----

def naive_market_ap_and_cmc(index, good_index, junk_index):
    """The original's compute_mAP: index = gallery indices by descending score."""
    cmc = np.zeros(len(index), dtype=np.int64)
    if good_index.size == 0:
        cmc[0] = -1
        return 0.0, cmc
    index = index[np.isin(index, junk_index, invert=True)]
    rows_good = np.flatnonzero(np.isin(index, good_index))
    cmc[rows_good[0]:] = 1
    ap = 0.0
    for i, row in enumerate(rows_good):
        precision = (i + 1) / (row + 1)
        old_precision = i / row if row != 0 else 1.0
        ap += (old_precision + precision) / 2 / len(good_index)
    return ap, cmc


def naive_evaluate(qf, ql, qc, gf, gl, gc):
    """The original's loop: per query a matrix-vector product, a full argsort and numpy set operations."""
    import torch
    gf_t = torch.from_numpy(gf)
    cmc_sum, ap_sum, n_valid = np.zeros(len(gl)), 0.0, 0
    for q in range(len(ql)):
        score = torch.mm(gf_t, torch.from_numpy(qf[q]).view(-1, 1)).squeeze(1).numpy()
        index = np.argsort(score)[::-1]
        query_index = np.flatnonzero(gl == ql[q])
        camera_index = np.flatnonzero(gc == qc[q])
        good_index = np.setdiff1d(query_index, camera_index, assume_unique=True)
        junk_index = np.append(np.intersect1d(query_index, camera_index), np.flatnonzero(gl == -1))
        ap, cmc = naive_market_ap_and_cmc(index, good_index, junk_index)
        if cmc[0] == -1:
            continue
        cmc_sum += cmc
        ap_sum += ap
        n_valid += 1
    return {'Rank@1': cmc_sum[0] / n_valid, 'mAP': ap_sum / n_valid}


def dense_rerank(qf, gf, k1=20, k2=6, lambda_value=0.3):
    """The original re_ranking (dense (N+M)^2 matrices, argpartition, inverted index) without the 4th power."""
    n_query = len(qf)
    q_g, q_q, g_g = qf @ gf.T, qf @ qf.T, gf @ gf.T
    original = np.concatenate([np.concatenate([q_q, q_g], 1), np.concatenate([q_g.T, g_g], 1)], 0)
    del q_g, q_q, g_g
    original = np.maximum(2.0 - 2 * original, 0).astype(np.float32)
    original = np.transpose(original / np.max(original, axis=0))
    v = np.zeros_like(original, dtype=np.float32)
    initial_rank = np.argpartition(original, range(1, k1 + 1))
    n = original.shape[0]

    def reciprocal(i, k):
        forward = initial_rank[i, :k + 1]
        backward = initial_rank[forward, :k + 1]
        return forward[np.where(backward == i)[0]]

    for i in range(n):
        own = reciprocal(i, k1)
        expanded = own
        for c in own:
            half = reciprocal(c, int(np.around(k1 / 2)))
            if len(np.intersect1d(half, own)) > 2 / 3 * len(half):
                expanded = np.append(expanded, half)
        expanded = np.unique(expanded)
        weight = np.exp(-original[i, expanded])
        v[i, expanded] = weight / np.sum(weight)
    original = original[:n_query]
    if k2 != 1:
        v_qe = np.zeros_like(v, dtype=np.float32)
        for i in range(n):
            v_qe[i] = np.mean(v[initial_rank[i, :k2]], axis=0)
        v = v_qe
        del v_qe
    del initial_rank
    inv_index = [np.where(v[:, i] != 0)[0] for i in range(n)]
    jaccard = np.zeros_like(original, dtype=np.float32)
    for i in range(n_query):
        temp_min = np.zeros((1, n), dtype=np.float32)
        non_zero = np.where(v[i] != 0)[0]
        for j in non_zero:
            temp_min[0, inv_index[j]] += np.minimum(v[i, j], v[inv_index[j], j])
        jaccard[i] = 1 - temp_min / (2 - temp_min)
    return (jaccard * (1 - lambda_value) + original * lambda_value)[:, n_query:]


# ---- one variant per subprocess ----

def run_child(variant, mat, out, threads):
    import torch
    if threads:
        torch.set_num_threads(threads)
    from reid.evaluation import metrics, rerank
    from reid.evaluation.results import load_result
    qf, ql, qc, gf, gl, gc = load_result(mat)
    report = {}
    start = time.perf_counter()
    if variant == 'engine':
        res = metrics.compute_cmc_map(qf, ql, qc, gf, gl, gc)
        report.update({'Rank@1': float(res['cmc'][0]), 'mAP': res['mAP'], 'mINP': res['mINP']})
    elif variant == 'naive':
        report.update(naive_evaluate(qf, ql, qc, gf, gl, gc))
    elif variant == 'rerank':
        # streamed as evaluate_gpu.py does; each block is also written to a raw file (outside RSS) for the parent
        with open(out, 'wb') as sink:
            def kept(blocks):
                for start_row, stop_row, block in blocks:
                    sink.write(block.cpu().numpy().astype(np.float32).tobytes())
                    yield start_row, stop_row, block
            res = metrics.compute_cmc_map_from_blocks(kept(rerank.k_reciprocal_rerank_blocks(qf, gf)),
                                                      ql, qc, gl, gc)
        report.update({'Rank@1': float(res['cmc'][0]), 'mAP': res['mAP']})
    elif variant == 'dense_rerank':
        dist = dense_rerank(qf, gf)
        report['seconds_rerank'] = time.perf_counter() - start
        res = metrics.compute_cmc_map_from_dist(dist, ql, qc, gl, gc)
        report.update({'Rank@1': float(res['cmc'][0]), 'mAP': res['mAP']})
        dist.astype(np.float32).tofile(out)  # compared by the parent
    report['seconds'] = time.perf_counter() - start
    print(json.dumps(report))


def run_variant(variant, mat, workdir, threads):
    """Run one variant in a subprocess; return its report with its own peak RSS in MB and its wall seconds."""
    out = str(Path(workdir) / f'{variant}.f32')
    if variant.startswith('evaluate_gpu.py'):  # the whole command a user runs
        command = [sys.executable, str(ROOT / 'evaluate_gpu.py'), '--result', str(mat)] + variant.split()[1:]
    else:
        command = [sys.executable, '-m', 'bench.bench_evaluate', '--child', variant, '--mat', str(mat), '--out', out]
    env = dict(os.environ)
    if threads:  # numpy's BLAS (the dense re-ranking) as well as torch; evaluate_gpu.py reads the variables
        command += [] if variant.startswith('evaluate_gpu.py') else ['--threads', str(threads)]
        env.update({name: str(threads) for name in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS')})
    wall = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - wall
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f'{variant}: the subprocess failed with exit code {proc.returncode}')
    if variant.startswith('evaluate_gpu.py'):
        lines = stdout.strip().split('\n')
        first = dict(item.split(':') for item in lines[-2].split())  # the original's line, last run printed
        report = {'seconds': wall, 'Rank@1': float(first['Rank@1']), 'mAP': float(first['mAP'])}
    else:
        report = json.loads(stdout.strip().split('\n')[-1])
    report['peak_mb'] = usage.ru_maxrss / 1024  # Linux reports KB
    report['wall'] = wall
    return report


def max_abs_difference(a_path, b_path, n_gallery, rows=256):
    a = np.memmap(a_path, np.float32, 'r').reshape(-1, n_gallery)
    b = np.memmap(b_path, np.float32, 'r').reshape(-1, n_gallery)
    return max(float(np.abs(a[i:i + rows] - b[i:i + rows]).max()) for i in range(0, len(a), rows))


METHODS = (('plain', ''), ('k-reciprocal', '--rerank'), ('GNN', '--rerank gnn'), ('AQE K=5', '--aqe 5'),
           ('AQE K=5 + DBA', '--aqe 5 --dba'))


def compare_methods(sizes, noise, threads):
    """Whole-process `python evaluate_gpu.py [flags]` per method and size: wall time, peak RSS, Rank@1 / mAP of the
    last result printed (re-ranked or expanded), side by side; 'plain' is the reference of the ratios."""
    table = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix='bench_evaluate_') as workdir:
            mat = Path(workdir) / 'pytorch_result.mat'
            n = write_synthetic_result(mat, 1.0, noise, size=size)
            print(f'{size}: {n["queries"]} queries x {n["gallery_real"] + n["distractors"] + n["junk"]} gallery x '
                  f'{n["dim"]}-d', flush=True)
            for name, flags in METHODS:
                report = run_variant(('evaluate_gpu.py ' + flags).strip(), mat, workdir, threads)
                table.append((size, name, report))
                print(f'  {name:14s} {report["wall"]:7.1f} s  {report["peak_mb"] / 1024:5.2f} GB  '
                      f'Rank@1 {report["Rank@1"]:.4f}  mAP {report["mAP"]:.4f}', flush=True)
    print(f'\n{"size":8s} {"method":14s} {"wall s":>7s} {"x plain":>7s} {"peak GB":>7s} {"Rank@1":>7s} {"mAP":>7s}')
    for size, name, report in table:
        plain = next(r for s, m, r in table if s == size and m == 'plain')
        print(f'{size:8s} {name:14s} {report["wall"]:7.1f} {report["wall"] / plain["wall"]:7.1f} '
              f'{report["peak_mb"] / 1024:7.2f} {report["Rank@1"]:7.4f} {report["mAP"]:7.4f}')
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', default='market', choices=sorted(SIZES),
                        help='composition and size of the synthetic set (msmt17 leaves out the naive references)')
    parser.add_argument('--scale', default=1.0, type=float, help='fraction of that size (0.25, 0.5, 1.0)')
    parser.add_argument('--noise', default=2.0, type=float, help='feature noise around the id centres')
    parser.add_argument('--skip_dense', action='store_true', help='leave out the dense re-ranking')
    parser.add_argument('--skip_naive', action='store_true', help='leave out the per-query loop')
    parser.add_argument('--whole_process_only', action='store_true',
                        help='only the two whole-process rows (python evaluate_gpu.py [--rerank]) after the load row')
    parser.add_argument('--threads', type=int, help='torch threads in every variant (default: torch decides)')
    parser.add_argument('--methods', action='store_true',
                        help='compare plain / k-reciprocal / GNN / AQE (whole evaluate_gpu.py processes) at Market '
                             'and MSMT17 size')
    parser.add_argument('--market_only', action='store_true', help='with --methods: Market size only')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    parser.add_argument('--mat', help=argparse.SUPPRESS)
    parser.add_argument('--out', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args.child, args.mat, args.out, args.threads)
    if not 0 < args.scale <= 1:
        raise SystemExit(f'--scale {args.scale}: must lie in (0, 1]')
    if args.methods:
        return compare_methods(['market'] if args.market_only else ['market', 'msmt17'], args.noise, args.threads)

    with tempfile.TemporaryDirectory(prefix='bench_evaluate_') as workdir:
        mat = Path(workdir) / 'pytorch_result.mat'
        n = write_synthetic_result(mat, args.scale, args.noise, size=args.size)
        gallery = n['gallery_real'] + n['distractors'] + n['junk']
        print(f'synthetic {args.size} set at scale {args.scale}: {n["queries"]} queries x {gallery} gallery '
              f'({n["distractors"]} distractors, {n["junk"]} junk) x {n["dim"]}-d, {n["ids"]} ids, '
              f'{n["cams"]} cameras; {os.cpu_count()} CPU cores, torch threads: {args.threads or "default"}')
        small = args.size == 'market'  # the naive references need hours and ~1 TB at MSMT17 size
        variants = ['load', 'engine'] + ([] if args.skip_naive or not small else ['naive']) + ['rerank'] + \
            ([] if args.skip_dense or not small else ['dense_rerank']) + ['evaluate_gpu.py', 'evaluate_gpu.py --rerank']
        if args.whole_process_only:
            variants = ['load', 'evaluate_gpu.py', 'evaluate_gpu.py --rerank']
        reports = {}
        for variant in variants:
            reports[variant] = report = run_variant(variant, mat, workdir, args.threads)
            extra = report['peak_mb'] - reports['load']['peak_mb']
            shown = ' '.join(f'{k}={v:.4f}' for k, v in report.items() if k in ('Rank@1', 'mAP', 'mINP'))
            rerank_part = f' (re-ranking {report["seconds_rerank"]:.2f} s)' if 'seconds_rerank' in report else ''
            print(f'{variant:25s} {report.get("seconds", 0):8.2f} s{rerank_part}   '
                  f'peak RSS {report["peak_mb"]:7.0f} MB (+{extra:6.0f} MB over load)   {shown}', flush=True)
        base = reports['load']['peak_mb']
        if 'naive' in reports:
            print(f'evaluation: engine {reports["naive"]["seconds"] / reports["engine"]["seconds"]:.1f}x faster '
                  f'than the per-query loop')
        if 'dense_rerank' in reports:
            sparse, dense = reports['rerank'], reports['dense_rerank']
            print(f're-ranking: {dense["seconds"] / sparse["seconds"]:.1f}x faster, extra memory '
                  f'{(sparse["peak_mb"] - base) / max(1.0, dense["peak_mb"] - base):.3f} of the dense version; '
                  f'max |difference| of the distances '
                  f'{max_abs_difference(Path(workdir) / "rerank.f32", Path(workdir) / "dense_rerank.f32", gallery):.2e}')
        for variant in ('evaluate_gpu.py', 'evaluate_gpu.py --rerank'):
            print(f'whole process: python {variant}: {reports[variant]["wall"]:.1f} s wall, '
                  f'peak RSS {reports[variant]["peak_mb"] / 1024:.2f} GB')


if __name__ == '__main__':
    main()
