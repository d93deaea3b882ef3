"""reid.api: a run loaded once turns paths, PIL images or tensors into test.py's features; the blocked exact search
and faiss's exact index agree with a brute-force sort; the approximate indexes find most true neighbours."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from reid import api
from reid.data.prepared import list_reid_images
from test_export import H, W, reference_features, write_run
from conftest import hand_transform


def brute_force_topk(query, gallery, k):
    """Reference: every score, a full stable sort per query."""
    scores = query.double() @ gallery.double().T
    order = torch.sort(-scores, dim=1, stable=True).indices[:, :k]
    return scores.gather(1, order), order


def numpy_topk(query, gallery, k):
    """Reference without torch: float64 cosine scores (numpy dot products), a stable argsort of their negatives."""
    scores = np.asarray(query, np.float64) @ np.asarray(gallery, np.float64).T
    order = np.argsort(-scores, axis=1, kind='stable')[:, :k]
    return np.take_along_axis(scores, order, 1), torch.from_numpy(order)


def clustered(n, dim, centres, seed, noise=0.35):
    g = torch.Generator().manual_seed(seed)
    c = F.normalize(torch.randn(centres, dim, generator=torch.Generator().manual_seed(99)), dim=1)
    x = c[torch.randint(centres, (n,), generator=g)] + noise * torch.randn(n, dim, generator=g) / dim ** 0.5
    return F.normalize(x, dim=1)


def assert_same_topk(got, ref_scores, query, gallery, tol=1e-5):
    """Scores equal within tol; indices may differ only among tied scores (each returned index has its score)."""
    scores, idx = got
    assert torch.allclose(scores.double(), ref_scores, atol=tol)
    true = (query.double() @ gallery.double().T).gather(1, idx.long())
    assert torch.allclose(true, scores.double(), atol=tol)
    assert all(len(set(row.tolist())) == len(row) for row in idx)  # no gallery row twice


def test_exact_blocked_and_faiss_flat_equal_brute_force():
    gallery = clustered(3000, 32, 50, seed=1)
    gallery[100:110] = gallery[5]  # exact ties
    query = torch.cat([clustered(40, 32, 50, seed=2), gallery[5:6]])
    ref_s, ref_i = brute_force_topk(query, gallery, 20)
    blocked = api.exact_search(query, gallery, k=20, block=257)  # many blocks, uneven last one
    assert_same_topk(blocked, ref_s, query, gallery)
    flat = api.search(query, gallery, k=20, method='faiss-flat')
    assert_same_topk(flat, ref_s, query, gallery)
    assert_same_topk(flat, blocked[0].double(), query, gallery)
    # away from ties the indices themselves agree
    untied = (ref_s[:, :-1] - ref_s[:, 1:]).abs().min(1).values > 1e-5
    assert untied.sum() > 30
    assert torch.equal(blocked[1][untied], ref_i[untied]) and torch.equal(flat[1][untied], ref_i[untied])
    assert api.exact_search(query[:2], gallery[:5], k=10)[1].shape == (2, 5)  # k larger than the gallery


@pytest.mark.parametrize('kind', ['ivf', 'hnsw'])
def test_approximate_indexes_recall_on_clustered_features(kind):
    gallery = clustered(20000, 64, 400, seed=3)
    query = clustered(200, 64, 400, seed=4)
    truth = numpy_topk(query, gallery, 10)[1]   # the true neighbours from a plain sort, not from the search
    index = api.faiss_index(gallery, kind)
    found = api.faiss_search(index, query, k=10, nprobe=16)[1]
    recall = api.recall_at_k(found, truth)
    assert 0.9 <= recall <= 1.0, recall
    assert api.recall_at_k(torch.randint(20000, (200, 10)), truth) < 0.05  # the measure can fail


def test_recall_at_k_by_hand():
    assert api.recall_at_k([[1, 2, 3], [4, 5, 6]], [[3, 2, 9], [7, 8, 9]]) == pytest.approx(2 / 6)


def test_run_features_from_paths_pil_and_tensors(tmp_path, tiny_prepared):
    net = write_run(tmp_path / 'run', pcb=False)
    run = api.ReIDRun(tmp_path / 'run', backend='torch')   # the inputs' paths; the backends: test_backends.py
    paths = [p for p, _, _ in list_reid_images(tiny_prepared / 'query')[:5]]
    tf = hand_transform(H, W)
    batch = torch.stack([tf(Image.open(p).convert('RGB')) for p in paths])
    ref = reference_features(net, batch, pcb=False)
    from_paths = run.features(paths, batch_size=2)
    torch.testing.assert_close(from_paths, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(run.features([Image.open(p) for p in paths]), from_paths)
    torch.testing.assert_close(run.features(batch), from_paths)
    torch.testing.assert_close(run.features(paths[0]), from_paths[:1])
    with pytest.raises(ValueError, match='nope.jpg'):
        run.features([str(tmp_path / 'nope.jpg')])


@pytest.mark.parametrize('method', ['exact', 'faiss-flat'])
def test_exact_methods_return_the_cosine_scores_of_a_plain_sort_and_min_k_g_results(method):
    """search(): per query min(k, G) results (never padding), the cosine score of each returned gallery row, best
    first, in the order of a stable numpy argsort away from ties."""
    rng = np.random.default_rng(13)
    gallery = rng.standard_normal((700, 24)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    query = gallery[rng.choice(700, 30, replace=False)] + 0.3 * rng.standard_normal((30, 24)).astype(np.float32)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    kwargs = {'block': 97} if method == 'exact' else {}   # several gallery blocks, an uneven last one
    ref_s, ref_i = numpy_topk(query, gallery, 15)
    scores, idx = api.search(query, gallery, k=15, method=method, **kwargs)
    assert scores.shape == idx.shape == (30, 15)
    np.testing.assert_allclose(scores.numpy(), ref_s, atol=1e-5)
    assert torch.equal(idx.long(), ref_i)   # random unit rows: no ties among the top 15
    for k in (7, 12):   # a gallery of 7 gives 7 results, each gallery row once, however many are asked for
        scores, idx = api.search(query[:4], gallery[:7], k=k, method=method)
        ref_s, ref_i = numpy_topk(query[:4], gallery[:7], 7)
        assert scores.shape == idx.shape == (4, 7)
        np.testing.assert_allclose(scores.numpy(), ref_s, atol=1e-5)
        assert torch.equal(idx.long(), ref_i)


def test_search_builds_the_named_index_and_its_search_knobs_reach_it():
    """On unclustered features the approximate indexes miss neighbours unless told to look further: IVF with one
    probed cell misses many and with every cell probed none; HNSW finds more with a larger ef_search. A search that
    built the flat index (or dropped the knobs) would score the same everywhere."""
    rng = np.random.default_rng(14)
    gallery = rng.standard_normal((3000, 64)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    query = rng.standard_normal((40, 64)).astype(np.float32)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    truth = numpy_topk(query, gallery, 10)[1]

    def recall(method, **kwargs):
        return api.recall_at_k(api.search(query, gallery, k=10, method=method, **kwargs)[1], truth)
    assert recall('faiss-flat') == 1.0
    assert recall('faiss-ivf', nprobe=1) < 0.6 and recall('faiss-ivf', nprobe=3000) == 1.0
    hnsw = api.faiss_index(gallery, 'hnsw')
    low, high = (api.recall_at_k(api.faiss_search(hnsw, query, k=10, ef_search=ef)[1], truth) for ef in (10, 400))
    assert low < 0.9 and high > low + 0.1
    assert recall('faiss-hnsw', ef_search=10) < 0.9
