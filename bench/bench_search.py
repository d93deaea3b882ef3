"""Benchmark of gallery search (reid.api) on a synthetic clustered gallery: time, peak memory and recall@10.

    python -m bench.bench_search                          # 1,000,000 x 512 gallery, 256 queries (about 2 GB)
    python -m bench.bench_search --gallery 100000         # a smaller gallery
    python -m bench.bench_search --methods exact,faiss-ivf,faiss-hnsw   # HNSW builds for many minutes at 1M

Methods: 'naive' (the whole query x gallery score matrix and a full argsort, the original demo's way),
'exact' (api.exact_search: blocked torch top-k), 'faiss-flat' (exact inner product), 'faiss-ivf' (IVF-Flat,
nprobe 16), 'faiss-hnsw'. Each runs in its own subprocess so its peak RSS (VmHWM) is its own; 'after load'
is that process with python, torch, faiss and the gallery in memory, 'extra' what the method added on top.
Recall@10 is measured against the exact top-10.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 100_000


def write_clustered(path, n, dim, centres, seed, noise=0.35):
    """Write n unit vectors (cluster centre + noise) to a .npy file chunk by chunk; return nothing."""
    rng = np.random.default_rng(seed)
    c = np.random.default_rng(12345).standard_normal((centres, dim)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    out = np.lib.format.open_memmap(path, mode='w+', dtype=np.float32, shape=(n, dim))
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        x = c[rng.integers(centres, size=m)] + (noise / np.sqrt(dim)) * rng.standard_normal((m, dim), np.float32)
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    out.flush()
    del out


def read_npy(path):
    """Return the array of a .npy file read straight into its final buffer (no transient second copy, no mmap
    pages), so the process's peak memory after loading is the array plus the libraries."""
    with open(path, 'rb') as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        out = np.empty(shape, dtype=dtype, order='F' if fortran else 'C')
        view = memoryview(out.reshape(-1, order='A')).cast('B')
        done = 0
        while done < len(view):
            n = f.readinto(view[done:done + (1 << 28)])
            if not n:
                raise ValueError(f'{path}: file ends early')
            done += n
    return out


def peak_rss_mb():
    """Peak resident memory of this process in MB.

    Linux's VmHWM belongs to this process's own address space; getrusage's ru_maxrss would start from the
    parent's peak (it survives fork + exec), here the parent that wrote the gallery.
    """
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def run_child(method, gallery_path, query_path, k, out_path):
    """One method in this process: load, build, search; write timings, peak memory and the top-k to out_path."""
    import torch

    from reid import api

    torch.set_num_threads(os.cpu_count())
    if method.startswith('faiss'):
        import faiss  # loaded before the baseline so its libraries count as 'after load', not as the method
    gallery, query = read_npy(gallery_path), read_npy(query_path)
    base = peak_rss_mb()
    t0 = time.perf_counter()
    if method == 'naive':
        build = 0.0
        scores = torch.from_numpy(query) @ torch.from_numpy(gallery).T
        idx = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :k]
    elif method == 'exact':
        build = 0.0
        _, idx = api.exact_search(query, gallery, k)
    else:
        index = api.faiss_index(gallery, method[len('faiss-'):])
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, idx = api.faiss_search(index, query, k, nprobe=16)
        t0 -= build
    total = time.perf_counter() - t0
    np.save(out_path + '.npy', np.asarray(idx))
    Path(out_path + '.json').write_text(json.dumps(
        {'build_s': build, 'search_s': total - build, 'rss_load_mb': base, 'rss_peak_mb': peak_rss_mb()}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--gallery', type=int, default=1_000_000)
    p.add_argument('--dim', type=int, default=512)
    p.add_argument('--queries', type=int, default=256)
    p.add_argument('--clusters', type=int, default=20_000, help='identities: ~gallery/clusters images each')
    p.add_argument('--k', type=int, default=10)
    p.add_argument('--methods', default='exact,naive,faiss-flat,faiss-ivf')
    p.add_argument('--child', nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        method, g, q, k, out = args.child
        return run_child(method, g, q, int(k), out)

    methods = args.methods.split(',')
    with tempfile.TemporaryDirectory(prefix='bench_search_') as tmp:
        g, q = os.path.join(tmp, 'gallery.npy'), os.path.join(tmp, 'query.npy')
        t = time.perf_counter()
        write_clustered(g, args.gallery, args.dim, args.clusters, seed=0)
        write_clustered(q, args.queries, args.dim, args.clusters, seed=1)
        print(f'gallery {args.gallery:,} x {args.dim} float32 ({args.gallery * args.dim * 4 / 2**30:.2f} GiB), '
              f'{args.queries} queries, {args.clusters:,} clusters; generated in {time.perf_counter() - t:.1f} s; '
              f'{os.cpu_count()} CPU cores, top-{args.k}')
        results = {}
        for method in ['exact'] + [m for m in methods if m != 'exact']:  # exact first: the recall reference
            out = os.path.join(tmp, method)
            done = subprocess.run([sys.executable, '-m', 'bench.bench_search', '--child', method, g, q, str(args.k),
                                   out], capture_output=True, text=True, cwd=ROOT)
            if done.returncode != 0:
                print(f'{method}: failed\n{done.stderr[-2000:]}')
                continue
            results[method] = {**json.loads(Path(out + '.json').read_text()), 'idx': np.load(out + '.npy')}
            if method not in methods:
                continue
    truth = results['exact']['idx']
    ref = results.get('naive', {}).get('search_s')
    print(f"{'method':<11} {'build s':>8} {'search s':>9} {'queries/s':>10} {'after load MB':>14} "
          f"{'peak MB':>8} {'extra MB':>9} {'recall@10':>9} {'vs naive':>9}")
    for method in methods:
        r = results.get(method)
        if r is None:
            continue
        hits = np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(r['idx'], truth)])
        speed = f"{ref / r['search_s']:.1f}x" if ref else '-'
        print(f"{method:<11} {r['build_s']:8.2f} {r['search_s']:9.3f} {args.queries / r['search_s']:10.0f} "
              f"{r['rss_load_mb']:14.0f} {r['rss_peak_mb']:8.0f} {r['rss_peak_mb'] - r['rss_load_mb']:9.0f} "
              f"{hits:9.4f} {speed:>9}")


if __name__ == '__main__':
    main()
