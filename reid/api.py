"""Use a trained run from Python: load it once, turn images into features, search a gallery (exact or faiss).

    from reid.api import ReIDRun, search
    run = ReIDRun('model/demo')                     # opts.yaml + net_last.pth (this toolkit's or the original's)
    run = ReIDRun('model/demo', backend='openvino', precision='int8')   # its export (written on first use)
    gallery = run.features(['a.jpg', 'b.jpg'])      # paths, PIL images or a normalised [N, 3, h, w] batch
    scores, index = search(run.features(['q.jpg']), gallery, k=10)
    score, same = run.same_identity('a.jpg', 'b.jpg')  # needs model/demo/threshold.yaml (test.py --calibrate)
"""
from pathlib import Path

import numpy as np
import torch

from reid.models.features import FeatureExtractor, fuse_conv_bn
from reid.models.loading import load_network   # noqa: F401 (also part of the API)
from reid.runs import RunFolder
from reid.runtime import pick_device

SEARCH_BLOCK = 65536  # gallery rows per block of the exact search: bounded memory for any gallery


class ReIDRun:
    """A trained run loaded once: `features(images)` gives what test.py would save for them.

    `run_dir` is model/<name> (opts.yaml + net_*.pth, this toolkit's or the original repository's). `backend` and
    `precision` are test.py's --backend and --precision: 'auto' runs the measured fastest backend of the device
    (OpenVINO on the CPU: its export is written into the run folder on first use, logged as INFO), 'torch' the
    checkpoint in fp32. `run.backend` says what runs. Heatmaps always use the torch network (`extractor`).
    """

    def __init__(self, run_dir, which_epoch='last', device=None, backend='auto', precision=None):
        from reid.data.transforms import eval_transform

        model, self.spec, self.opts = load_network(run_dir, which_epoch)
        self.run = RunFolder(run_dir)
        self.device = pick_device(device)
        self.extractor = FeatureExtractor(fuse_conv_bn(model)).to(self.device).eval()
        self.size = self.spec.input_size()
        self.transform = eval_transform(*self.size)
        self.backend, self.runner = api_backend(self.run, which_epoch, self.device, backend, precision)

    def images_to_batch(self, images):
        """Return a normalised [N, 3, h, w] batch from image paths or PIL images (test.py's transform)."""
        from PIL import Image

        tensors = []
        for item in images:
            if isinstance(item, (str, Path)):
                try:
                    with Image.open(item) as img:
                        item = img.convert('RGB')
                except OSError as e:
                    raise ValueError(f'{item}: cannot read the image ({e})') from None
            tensors.append(self.transform(item.convert('RGB')))
        return torch.stack(tensors)

    @torch.no_grad()
    def features(self, images, batch_size=64):
        """Return float32 [N, D] features (flip-summed, L2-normalised) on the CPU.

        `images`: a path, a PIL image, a list of those, or a tensor [N, 3, h, w] already normalised as test.py
        feeds the network.
        """
        if isinstance(images, torch.Tensor):
            batches = images.split(batch_size)
        else:
            if isinstance(images, (str, Path)) or hasattr(images, 'convert'):
                images = [images]
            images = list(images)
            batches = (self.images_to_batch(images[i:i + batch_size]) for i in range(0, len(images), batch_size))
        if self.runner is not None:
            out = [torch.from_numpy(np.asarray(self.runner(b.float().numpy()), dtype=np.float32)) for b in batches]
        else:
            out = [self.extractor(b.to(self.device).float()).float().cpu() for b in batches]
        if not out:
            raise ValueError('no images given')
        return torch.cat(out)


    def threshold(self):
        """Return the run's calibrated same-identity entry (threshold.yaml: far, threshold, tar, calibrated_on);
        ValueError naming the file when the run was never calibrated or the file is malformed."""
        return self.run.read_threshold()

    def same_identity(self, a, b):
        """Return (score, same): the cosine score of two images and whether it is above the run's threshold, i.e.
        "the same identity" at the false-accept rate the run was calibrated for (threshold.yaml).

        `a`, `b`: an image path or PIL image, or a 1-D feature this run gave. ValueError without a threshold.
        """
        threshold = self.threshold()['threshold']
        fa, fb = (item.reshape(-1).float() if isinstance(item, torch.Tensor) and item.dim() == 1
                  else self.features(item)[0] for item in (a, b))
        score = float(fa @ fb)
        return score, score > threshold


def api_backend(run, which_epoch, device, backend='auto', precision=None):
    """Return (the BackendChoice, its runner or None for torch) of ReIDRun: test.py's choice on `device`, the
    torch path in fp32 (the API never autocasts)."""
    from types import SimpleNamespace

    from reid.backends import BackendChoice, choose_backend
    from reid.export import backend_runner
    from reid.runtime import Runtime, resolve_cpu_bf16

    on, reason = resolve_cpu_bf16('auto', device, 'extract')
    runtime = Runtime(device, torch.bfloat16 if on else None, reason, False, 0, None)
    flags = SimpleNamespace(backend=backend, precision=precision, fp16=False, bf16=False)
    choice, runner = backend_runner(run, which_epoch, choose_backend(flags, runtime), backend == 'auto')
    if runner is None:
        choice = BackendChoice('torch', 'fp32', choice.reason.split(';')[0])
    return choice, runner


def _as_tensor(x):
    import numpy as np

    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) if not isinstance(x, torch.Tensor) else x.float()


def exact_search(query, gallery, k=10, block=SEARCH_BLOCK, device=None):
    """Return (scores [Q, k], indices [Q, k]) of the k largest inner products of each query over the gallery.

    Exact; the gallery is scored block by block, so memory is Q x block whatever the gallery size. On unit
    features the inner product is the cosine score evaluate_gpu.py ranks by.
    """
    query, gallery = _as_tensor(query), _as_tensor(gallery)
    device = torch.device(device) if device else query.device
    q = query.to(device)
    k = min(k, gallery.shape[0])
    best_s = torch.full((q.shape[0], 0), float('-inf'), device=device)
    best_i = torch.zeros((q.shape[0], 0), dtype=torch.long, device=device)
    for start in range(0, gallery.shape[0], block):
        scores = q @ gallery[start:start + block].to(device).T
        s, i = scores.topk(min(k, scores.shape[1]), dim=1)
        # keep the running top-k: the k best of (previous best, this block's best)
        best_s, pick = torch.cat([best_s, s], 1).topk(k, dim=1)
        best_i = torch.cat([best_i, i + start], 1).gather(1, pick)
    return best_s.cpu(), best_i.cpu()


def faiss_index(gallery, kind='flat', nlist=None, hnsw_m=32, seed=0):
    """Return a faiss inner-product index over `gallery` ([G, D] float32): 'flat' (exact), 'ivf' (IVF-Flat:
    k-means cells, approximate) or 'hnsw' (graph, approximate). faiss is imported here, only when used."""
    try:
        import faiss
    except ImportError:
        raise ValueError('faiss is not installed (pip install faiss-cpu)') from None
    import numpy as np

    g = np.ascontiguousarray(_as_tensor(gallery).cpu().numpy())
    d = g.shape[1]
    if kind == 'flat':
        index = faiss.IndexFlatIP(d)
    elif kind == 'ivf':
        # ~sqrt(G) cells (1,000 for a million), with the >= 39 training points per cell faiss's k-means asks for
        nlist = nlist or max(1, min(4096, int(np.sqrt(len(g))), len(g) // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        # k-means on a sample: 64 points per cell is plenty and keeps training time flat in G
        sample = g[np.sort(rng.choice(len(g), min(len(g), 64 * nlist), replace=False))]
        index.train(sample)
    elif kind == 'hnsw':
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
    else:
        raise ValueError(f"faiss index kind {kind}: expected 'flat', 'ivf' or 'hnsw'")
    index.add(g)
    return index


def faiss_search(index, query, k=10, nprobe=16, ef_search=64):
    """Return (scores [Q, k], indices [Q, k]) from a faiss index (`nprobe` cells for IVF, `ef_search` for HNSW);
    k is at most the index's size, as exact_search's (faiss itself pads with index -1)."""
    import faiss

    k = min(k, index.ntotal)
    if isinstance(index, faiss.IndexIVF):
        index.nprobe = nprobe
    elif isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = max(ef_search, k)
    import numpy as np

    scores, ids = index.search(np.ascontiguousarray(_as_tensor(query).cpu().numpy()), k)
    return torch.from_numpy(scores), torch.from_numpy(ids).long()


def search(query, gallery, k=10, method='exact', **kwargs):
    """Return (scores, indices) of the top-k gallery rows per query: method 'exact' (blocked torch, default),
    'faiss-flat' (exact), 'faiss-ivf' or 'faiss-hnsw' (approximate). For repeated searches build the index
    once with faiss_index and call faiss_search."""
    if method == 'exact':
        return exact_search(query, gallery, k, **kwargs)
    if method.startswith('faiss-'):
        index = faiss_index(gallery, method[len('faiss-'):])
        return faiss_search(index, query, k, **kwargs)
    raise ValueError(f"search method {method}: expected 'exact', 'faiss-flat', 'faiss-ivf' or 'faiss-hnsw'")


def recall_at_k(found, truth):
    """Return the mean fraction of the true top-k (rows of `truth`) that `found` also returns (recall@k)."""
    found, truth = torch.as_tensor(found), torch.as_tensor(truth)
    hits = (found.unsqueeze(2) == truth.unsqueeze(1)).any(1).float()
    return float(hits.mean())
