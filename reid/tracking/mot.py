"""The MOTChallenge files a tracker reads and writes: a sequence folder (seqinfo.ini, img1/, det/det.txt,
gt/gt.txt) and the results file (frame, id, x, y, w, h, score, -1, -1, -1), as MOT17 and MOT20 lay them out.
"""
import configparser
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LAYOUT = 'a MOTChallenge sequence folder holds seqinfo.ini, img1/ and det/det.txt'
# MOTChallenge's boxes are in 1-based pixels (the devkit is MATLAB's: the top-left pixel is (1, 1)); the frame
# arrays BoxMOT crops are 0-based, so detections are moved by one pixel going in and results back coming out
ONE_BASED = 1


@dataclass(frozen=True)
class Sequence:
    """One sequence folder, as its seqinfo.ini describes it."""
    folder: Path
    name: str          # the folder's name: the results file is <name>.txt, as MOTChallenge's evaluation expects
    length: int        # frames 1..length
    frame_rate: float
    image_dir: Path
    image_ext: str

    @property
    def detections_file(self):
        return self.folder / 'det' / 'det.txt'

    @property
    def gt_file(self):
        return self.folder / 'gt' / 'gt.txt'

    def frame_path(self, frame):
        """Return the image of 1-based `frame` (img1/000001.jpg)."""
        return self.image_dir / f'{frame:06d}{self.image_ext}'


def read_sequence(folder):
    """Return the Sequence of `folder`; ValueError naming --sequence, seqinfo.ini or det.txt when one is missing or
    malformed."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f'--sequence {folder}: no such folder ({LAYOUT})')
    ini = folder / 'seqinfo.ini'
    if not ini.is_file():
        raise ValueError(f'{ini}: not found ({LAYOUT})')
    parser = configparser.ConfigParser()
    try:
        parser.read(ini)
        info = parser['Sequence']
        sequence = Sequence(folder, folder.name, int(info['seqLength']), float(info.get('frameRate', '30')),
                            folder / info.get('imDir', 'img1'), info.get('imExt', '.jpg'))
    except (configparser.Error, KeyError, ValueError) as e:
        raise ValueError(f'{ini}: not a MOTChallenge seqinfo.ini ([Sequence] with seqLength, imDir, imExt, '
                         f'frameRate: {type(e).__name__} {e})') from None
    if sequence.length < 1:
        raise ValueError(f'{ini}: seqLength {sequence.length} must be at least 1')
    if not sequence.detections_file.is_file():
        raise ValueError(f'{sequence.detections_file}: not found ({LAYOUT}; detections as frame,-1,x,y,w,h,score)')
    return sequence


def read_table(path, columns):
    """Return the rows of a comma-separated MOT file as a float array [N, >= columns]; ValueError naming it."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')   # numpy's "empty input file": no detections is a valid file
            rows = np.loadtxt(path, delimiter=',', ndmin=2, dtype=np.float64)
    except ValueError as e:
        raise ValueError(f'{path}: not a MOTChallenge text file (comma-separated numbers: {e})') from None
    if not rows.size:
        return np.zeros((0, columns))
    if rows.shape[1] < columns:
        raise ValueError(f'{path}: {rows.shape[1]} columns, expected at least {columns} (frame, id, x, y, w, h, '
                         'score, ...)')
    return rows


def read_detections(sequence):
    """Return {frame: float32 [N, 5] x1, y1, x2, y2, score} of det/det.txt in the frame array's 0-based pixels
    (frames without detections absent)."""
    rows = read_table(sequence.detections_file, 7)
    out = {}
    for frame in np.unique(rows[:, 0]).astype(int):
        r = rows[rows[:, 0] == frame]
        x1, y1 = r[:, 2] - ONE_BASED, r[:, 3] - ONE_BASED
        out[int(frame)] = np.column_stack([x1, y1, x1 + r[:, 4], y1 + r[:, 5], r[:, 6]]).astype(np.float32)
    return out


def results_line(frame, track_id, box, score):
    """Return one line of a MOTChallenge results file: `box` is x1, y1, x2, y2 in 0-based pixels, written 1-based
    as det.txt and gt.txt are; the world coordinates are -1."""
    x1, y1, x2, y2 = (float(v) for v in box)
    left, top = x1 + ONE_BASED, y1 + ONE_BASED
    return f'{frame},{track_id},{left:.2f},{top:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{score:.4f},-1,-1,-1'


def write_results(path, lines):
    """Write the results lines to `path` (its folder made first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(''.join(line + '\n' for line in lines))
