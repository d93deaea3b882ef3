"""MOTChallenge's tracking metrics of a results file against the sequence's gt/gt.txt, computed by TrackEval 1.3.0
(HOTA, CLEAR's MOTA and id switches, Identity's IDF1) after MOTChallenge's own preprocessing.

That preprocessing (TrackEval's MotChallenge2DBox, as the official devkit): boxes of the results matched (IoU >= 0.5,
Hungarian) to a ground-truth box of a distractor class (2 person on vehicle, 7 static person, 8 distractor,
12 reflection; MOT20 also 6 non-motorised vehicle) are dropped, then only pedestrians (class 1) with column 7
(consider) = 1 are evaluated. A box on an ignored ground truth of another class (a car) still counts as false.
"""
import contextlib
import io
from pathlib import Path

from reid.backends import require_package

TRACKEVAL_PIP = 'trackeval==1.3.0'


def trackeval_config(sequence, results_file):
    """Return TrackEval's MotChallenge2DBox config for one sequence folder and one results file."""
    results_file = Path(results_file)
    return {'GT_FOLDER': str(sequence.folder.parent), 'TRACKERS_FOLDER': str(results_file.parent.parent),
            'TRACKERS_TO_EVAL': [results_file.parent.name], 'TRACKER_SUB_FOLDER': '', 'SKIP_SPLIT_FOL': True,
            'SEQ_INFO': {sequence.name: sequence.length}, 'PRINT_CONFIG': False,
            # MOT20 counts non-motorised vehicles as distractors too (its name says which benchmark it is)
            'BENCHMARK': 'MOT20' if sequence.name.upper().startswith('MOT20') else 'MOT17'}


def mot_metrics(sequence, results_file):
    """Return {'IDF1', 'MOTA', 'HOTA' (fractions), 'IDs' (id switches), 'GT', 'TP', 'FP', 'FN'} of
    `results_file` (named <sequence name>.txt) against the sequence's gt/gt.txt; ValueError naming the file
    TrackEval cannot read."""
    trackeval = require_package('trackeval', TRACKEVAL_PIP, 'the metrics of track.py')
    import numpy as np

    if Path(results_file).name != f'{sequence.name}.txt':
        raise ValueError(f'{results_file}: TrackEval reads the results of {sequence.name} from {sequence.name}.txt')
    config = trackeval_config(sequence, results_file)
    try:
        with contextlib.redirect_stdout(io.StringIO()):   # it prints a line before raising on a missing file
            dataset = trackeval.datasets.MotChallenge2DBox(config)
            raw = dataset.get_raw_seq_data(config['TRACKERS_TO_EVAL'][0], sequence.name)
            data = dataset.get_preprocessed_seq_data(raw, 'pedestrian')
    except trackeval.utils.TrackEvalException as e:
        raise ValueError(f'{sequence.gt_file} or {results_file}: TrackEval cannot evaluate them ({e})') from None
    quiet = {'PRINT_CONFIG': False}
    hota = trackeval.metrics.HOTA(quiet).eval_sequence(data)
    clear = trackeval.metrics.CLEAR(quiet).eval_sequence(data)
    identity = trackeval.metrics.Identity(quiet).eval_sequence(data)
    return {'IDF1': float(identity['IDF1']), 'MOTA': float(clear['MOTA']),
            'HOTA': float(np.mean(hota['HOTA'])),   # TrackEval's HOTA: the mean over its 19 IoU thresholds
            'IDs': int(clear['IDSW']), 'GT': int(data['num_gt_dets']), 'TP': int(clear['CLR_TP']),
            'FP': int(clear['CLR_FP']), 'FN': int(clear['CLR_FN'])}


def metrics_line(metrics):
    """Return track.py's line: `IDF1:xx.xx MOTA:xx.xx IDs:N HOTA:xx.xx` (percentages, two decimals)."""
    return (f'IDF1:{100 * metrics["IDF1"]:.2f} MOTA:{100 * metrics["MOTA"]:.2f} IDs:{metrics["IDs"]} '
            f'HOTA:{100 * metrics["HOTA"]:.2f}')
