"""The result files test.py writes and evaluate_gpu.py and demo.py read: pytorch_result.mat (query and gallery
features, ids, cameras) and multi_query.mat, their keys as the original names them; every defect named on load.

On a video layout a row is a tracklet, and the file also names them: query_tracklet and gallery_tracklet (cell
arrays of strings, the tracklet folders of the prepared split, in the rows' order).
"""
from collections import namedtuple
from pathlib import Path

import numpy as np
import scipy.io

# The arrays of pytorch_result.mat / multi_query.mat, named by their .mat keys, in the argument order of
# metrics.compute_cmc_map / metrics.pool_multi_query.
ReIDResult = namedtuple('ReIDResult', 'query_f query_label query_cam gallery_f gallery_label gallery_cam')
MultiQuery = namedtuple('MultiQuery', 'mquery_f mquery_label mquery_cam')


def _load_mat_fields(path, prefixes):
    """Return [(features, labels, cams)] from a .mat file for each key prefix; ValueError naming what is wrong."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f'{path}: is a folder, not a .mat file (pass the file test.py wrote)')
    if not path.is_file():
        raise ValueError(f'{path}: file not found (run test.py first, or pass the right path)')
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as e:  # scipy raises several types for a damaged or foreign file
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f'{path}: not a readable .mat file ({reason}); run test.py again to rewrite it') from None
    groups = []
    for prefix in prefixes:
        names = [prefix + '_f', prefix + '_label', prefix + '_cam']
        missing = [name for name in names if name not in mat]
        if missing:
            raise ValueError(f'{path}: missing key(s) {", ".join(missing)}')
        labels, cams = (_integer_row(mat[name], path, name) for name in names[1:])
        try:
            features = np.asarray(mat[names[0]], dtype=np.float32)
        except (TypeError, ValueError):
            raise ValueError(f'{path}: {names[0]} is not a numeric array') from None
        if features.ndim != 2 or not len(features) == len(labels) == len(cams):
            raise ValueError(f'{path}: {names[0]} has shape {features.shape} but {names[1]} has {len(labels)} '
                             f'and {names[2]} {len(cams)} entries')
        if len(features) == 0:
            raise ValueError(f'{path}: {names[0]} is empty (no {prefix} image); run test.py on a prepared set')
        if not np.isfinite(features).all():
            bad = int((~np.isfinite(features).all(axis=1)).sum())
            raise ValueError(f'{path}: {names[0]} has NaN or infinite values in {bad} row(s); the network that '
                             'wrote it diverged: test another --which_epoch')
        groups.append((features, labels, cams))
    if len(groups) == 2 and groups[0][0].shape[1] != groups[1][0].shape[1]:
        raise ValueError(f'{path}: {prefixes[0]}_f has {groups[0][0].shape[1]} columns but {prefixes[1]}_f has '
                         f'{groups[1][0].shape[1]}; both must come from the same network')
    return groups


def _integer_row(values, path, name):
    """Return a .mat field as a 1-D int64 array; ValueError naming the key when it holds anything but integers."""
    values = np.asarray(values)
    if values.dtype.kind in 'iub':
        return values.reshape(-1).astype(np.int64)
    if values.dtype.kind == 'f' and np.isfinite(values).all() and (values == np.round(values)).all():
        return values.reshape(-1).astype(np.int64)  # MATLAB's default double
    raise ValueError(f'{path}: {name} must hold integer ids, found {values.dtype} values'
                     + (f' such as {values.reshape(-1)[0]!r}' if values.size else ''))


def load_result(path):
    """Return ReIDResult(query_f, query_label, query_cam, gallery_f, gallery_label, gallery_cam) from a .mat.

    Features are float32 (N, D); labels and cameras 1-D int64 (savemat stores them as 1 x N rows).
    Unpacks in metrics.compute_cmc_map's argument order; fields also read as result.query_f.
    ValueError naming the file when it or a key is missing.
    """
    (qf, ql, qc), (gf, gl, gc) = _load_mat_fields(path, ['query', 'gallery'])
    return ReIDResult(qf, ql, qc, gf, gl, gc)


def load_multi_query(path):
    """Return MultiQuery(mquery_f, mquery_label, mquery_cam) from multi_query.mat (same rules as load_result)."""
    return MultiQuery(*_load_mat_fields(path, ['mquery'])[0])


TRACKLET_KEYS = ('query_tracklet', 'gallery_tracklet')


class TrackletRows(tuple):
    """(features, ids, cameras) of a split whose rows are tracklets, unpacked like any split's; `names`: the
    tracklets' names, in the rows' order."""

    def __new__(cls, features, ids, cameras, names):
        rows = super().__new__(cls, (features, ids, cameras))
        rows.names = [str(n) for n in names]
        if len(rows.names) != len(ids):
            raise ValueError(f'{len(rows.names)} tracklet names for {len(ids)} rows')
        return rows


def save_result(path, query, gallery):
    """Write pytorch_result.mat: `query` and `gallery` are (features [N, D] float32, ids [N], cameras [N]);
    TrackletRows also write their names (query_tracklet, gallery_tracklet: cell arrays of strings)."""
    (qf, ql, qc), (gf, gl, gc) = query, gallery
    arrays = {'gallery_f': np.asarray(gf, dtype=np.float32), 'gallery_label': np.asarray(gl),
              'gallery_cam': np.asarray(gc), 'query_f': np.asarray(qf, dtype=np.float32),
              'query_label': np.asarray(ql), 'query_cam': np.asarray(qc)}
    for key, rows in zip(TRACKLET_KEYS, (query, gallery)):
        if isinstance(rows, TrackletRows):
            arrays[key] = np.array(rows.names, dtype=object)   # object: a cell array of strings
    scipy.io.savemat(path, arrays)


def load_tracklet_names(path):
    """Return (query tracklet names, gallery tracklet names) of a result file written on tracklets, or None
    for one of images; lists of str."""
    mat = scipy.io.loadmat(str(path), variable_names=list(TRACKLET_KEYS))
    if not all(key in mat for key in TRACKLET_KEYS):
        return None
    return tuple([str(np.asarray(cell).reshape(-1)[0]) if np.asarray(cell).size else ''
                  for cell in mat[key].reshape(-1)] for key in TRACKLET_KEYS)


def save_multi_query(path, multi):
    """Write multi_query.mat: `multi` is (features, ids, cameras) of the multi-query images."""
    mf, ml, mc = multi
    scipy.io.savemat(path, {'mquery_f': np.asarray(mf, dtype=np.float32), 'mquery_label': np.asarray(ml),
                            'mquery_cam': np.asarray(mc)})
