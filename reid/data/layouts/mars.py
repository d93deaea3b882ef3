"""MARS: bbox_train/, bbox_test/ (a folder per id of frames `0001C1T0001F001.jpg`) and info/ (MARS-evaluation's
frame lists and tracklet tables); query = info/query_IDX.mat, gallery = every test tracklet, as MARS-evaluation.
"""
import os
import re

import numpy as np

from reid.data.layouts.common import (PERSON, Layout, mat_bytes, mat_variable, require_folders, track_length,
                                     tracklet_frames, tracklet_items)

# 0001C1T0001F001.jpg: id (4 characters; 00-1 is junk), camera, tracklet within the id, frame within the tracklet
_FRAME = re.compile(r'^(\d{4}|00-1)C(\d)T(\d{4})F(\d{3,})\.jpg$')
_INFO = ('train_name.txt', 'test_name.txt', 'tracks_train_info.mat', 'tracks_test_info.mat', 'query_IDX.mat')


def read_mars(root, options):
    """MARS as its download unzips, with info/ from MARS-evaluation (github.com/liangzheng06/MARS-evaluation).

    info/train_name.txt and test_name.txt list every frame (one name a line, CRLF: MATLAB wrote them);
    tracks_{train,test}_info.mat hold `track_train_info` / `track_test_info`, int32 (tracklets, 4): start and
    end (1-based, inclusive, into the name list), id, camera (1-6); query_IDX.mat holds `query_IDX`, uint16
    (1, queries): 1-based rows of the test table. A frame lives in bbox_train/ or bbox_test/<name[:4]>/.
    Each tracklet is named by its frames' common prefix (`0001C1T0001`).

    gallery = every test tracklet, the queries' own included, as MARS-evaluation's test_mars.m (its
    evaluation_mars.m: junk = id -1, and the query's id in the query's camera; the query itself is such junk);
    id 0000 are distractors. torchreid's Mars reader instead drops id -1 and the query rows (gallery 9,330), and
    140 of the 1,980 queries then have no match in another camera; later video codebases (AP3D and others) put
    the queries back for that reason. Counts of the real info/ files (their .mat files read here): train 8,298
    tracklets of 625 ids, 509,914 frames; test 12,180 tracklets, 681,089 frames: 634 ids plus 3,248 distractor
    (0000) and 870 junk (-1) tracklets; query 1,980 tracklets of 626 ids, one per (id, camera); gallery 12,180
    (torchreid prints 8,298 / 1,980 / 9,330: the gallery without the queries and the junk).
    """
    root = require_folders(root, 'bbox_train', 'bbox_test', 'info', what='a MARS download (info/ from '
                                                                         'MARS-evaluation)')
    missing = [name for name in _INFO if not (root / 'info' / name).is_file()]
    if missing:
        raise ValueError(f'{root / "info" / missing[0]}: file missing (MARS needs info/{", info/".join(_INFO)} '
                         'from github.com/liangzheng06/MARS-evaluation)')
    train = _tracklets(root, 'train', 'bbox_train')
    test = _tracklets(root, 'test', 'bbox_test')
    query_file = root / 'info' / 'query_IDX.mat'
    rows = np.asarray(mat_variable(query_file, 'query_IDX', 'the query tracklets')).ravel().astype(np.int64)
    if len(rows) == 0 or rows.min() < 1 or rows.max() > len(test) or len(set(rows.tolist())) != len(rows):
        raise ValueError(f'{query_file}: query_IDX must list distinct rows 1..{len(test)} of tracks_test_info.mat')
    return {'train_all': [item for tracklet in train for item in tracklet],
            'query': [item for row in rows for item in test[row - 1]],
            'gallery': [item for tracklet in test for item in tracklet]}


def _names(path):
    """The frame names of a name list, one a line (CRLF or LF)."""
    names = [line.strip() for line in path.read_text().splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise ValueError(f'{path}: no frame names')
    return names


def _tracklets(root, part, folder):
    """[[Item] per tracklet] in the order of info/tracks_<part>_info.mat's rows."""
    names_file, table_file = root / 'info' / f'{part}_name.txt', root / 'info' / f'tracks_{part}_info.mat'
    names = _names(names_file)
    table = np.asarray(mat_variable(table_file, f'track_{part}_info', 'the tracklet table'))
    if table.ndim != 2 or table.shape[1] != 4 or not len(table):
        raise ValueError(f'{table_file}: track_{part}_info has shape {table.shape}; expected (tracklets, 4)')
    listing, seen, out = {}, {}, []
    for row, (start, end, pid, cam) in enumerate(table.astype(np.int64).tolist(), 1):
        where = f'{table_file}: row {row}'
        if not 1 <= start <= end <= len(names):
            raise ValueError(f'{where}: frames {start}..{end} are outside 1..{len(names)} of {names_file}')
        frames = names[start - 1:end]
        tracklet = _tracklet_name(frames, pid, cam, where)
        if tracklet in seen:
            raise ValueError(f'{where}: tracklet {tracklet} is also row {seen[tracklet]}')
        seen[tracklet] = row
        pid_folder = root / folder / frames[0][:4]
        if pid_folder not in listing:
            listing[pid_folder] = set(os.listdir(pid_folder)) if pid_folder.is_dir() else set()
        absent = [name for name in frames if name not in listing[pid_folder]]
        if absent:
            raise ValueError(f'{pid_folder / absent[0]}: listed in {names_file} ({where}) but not found')
        out.append(tracklet_items([pid_folder / name for name in frames], '-1' if pid == -1 else f'{pid:04d}', cam,
                                  tracklet))
    return out


def _tracklet_name(frames, pid, cam, where):
    """The common prefix (`0001C1T0001`) of a tracklet's frame names, checked against its row's id and camera."""
    for name in frames:
        match = _FRAME.match(name)
        if match is None:
            raise ValueError(f'{name}: does not match the MARS frame name <id>C<camera>T<tracklet>F<frame>.jpg '
                             f'(0001C1T0001F001.jpg; {where})')
        if int(match.group(1).replace('00-1', '-1')) != pid or int(match.group(2)) != cam:
            raise ValueError(f'{name}: not of id {pid} camera {cam} as {where} says')
        if name[:11] != frames[0][:11]:
            raise ValueError(f'{name}: in the tracklet of {frames[0]} ({where}) but of another tracklet')
    return frames[0][:11]


def generate_mars(drawn):
    """bbox_train/, bbox_test/ and info/ as MARS: per training id 1-2 tracklets in each of its cameras; per
    (test id, camera) a query tracklet and 1-2 more; distractor (0000) and junk (00-1) tracklets."""
    train, test = {}, {}
    for pid in drawn.train_ids:
        _add_tracklets(drawn, train, pid, [s for s in drawn.people[pid] if s.folder == 'bounding_box_train'])
    for pid in drawn.test_ids:
        _add_tracklets(drawn, test, pid, [s for s in drawn.people[pid] if s.folder == 'bounding_box_test'],
                       query_cams={s.cam for s in drawn.people[pid] if s.folder == 'query'})
    for s in drawn.specs:
        if s.mode in ('distractor', 'junk'):
            test.setdefault(0 if s.mode == 'distractor' else -1, []).append((s.cam, s.mode, s.look_key, False))
    files, texts = [], {}
    for part, folder, tracks in (('train', 'bbox_train', train), ('test', 'bbox_test', test)):
        names, table, queries = [], [], []
        for pid in sorted(tracks, key=lambda p: '00-1' if p == -1 else f'{p:04d}'):   # the folders' sorted order
            prefix = '00-1' if pid == -1 else f'{pid:04d}'
            for number, (cam, mode, look, is_query) in enumerate(sorted(tracks[pid], key=lambda t: t[0]), 1):
                length = track_length(drawn, 1 + (part == 'test'), pid + 1, number)
                table.append((len(names) + 1, len(names) + length, pid, cam))
                queries += [len(table)] if is_query else []
                for frame, spec in enumerate(tracklet_frames(cam, mode, look, (1, part == 'test', pid + 1,
                                                                                        number), length), 1):
                    names.append(f'{prefix}C{cam}T{number:04d}F{frame:03d}.jpg')
                    files.append((f'{folder}/{prefix}/{names[-1]}', spec))
        texts[f'info/{part}_name.txt'] = ''.join(name + '\r\n' for name in names).encode()
        texts[f'info/tracks_{part}_info.mat'] = mat_bytes({f'track_{part}_info': np.array(table, np.int32)})
    texts['info/query_IDX.mat'] = mat_bytes({'query_IDX': np.array([queries], np.uint16)})
    return files, texts


def _add_tracklets(drawn, tracks, pid, specs, query_cams=()):
    """Append (camera, mode, look, is_query) tracklets of `pid`: per camera of `specs` (and of `query_cams`) one,
    two where the drawn set has 3 images or more there, and a query tracklet in each query camera."""
    cams = sorted({s.cam for s in specs} | set(query_cams))
    for cam in cams:
        count = sum(s.cam == cam for s in specs)
        tracks.setdefault(pid, []).extend([(cam, 'person', (1, pid), False)] * (1 + (count >= 3)))
        if cam in query_cams:
            tracks[pid].append((cam, 'person', (1, pid), True))


LAYOUT = Layout('mars', read_mars, PERSON, ('bbox_train', 'bbox_test', 'info'),
                'tracklets; query = info/query_IDX.mat, gallery = every test tracklet (queries included, as '
                'MARS-evaluation); junk = id -1 or the query\'s id and camera; 0000 distractors', generate_mars,
                tracklets=True)
