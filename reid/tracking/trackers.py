"""The one table of BoxMOT's trackers track.py runs (its class, whether it uses the re-ID features, what it changes
from BoxMOT's own defaults), how one is built with a run's export, and how BoxMOT is kept from installing packages.
"""
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

from reid.backends import require_package

BOXMOT_PIP = '-r requirements-track.txt'   # what the "not installed" message names (the pinned BoxMOT and TrackEval)
BACKENDS = {'onnxruntime': 'onnx', 'openvino': 'openvino'}   # --backend -> export format BoxMOT's ReID loads
# --resize: how a box of the frame becomes the network's input. bicubic: test.py's features (PIL's bicubic resize of
# the crop, as the network was trained and tested, and as the export's JSON asks); bilinear: BoxMOT's own ReID
# backend (OpenCV's bilinear resize from the frame): bench/track_crops.py measures the difference
RESIZES = ('bicubic', 'bilinear')
# TensorRT is left out: BoxMOT's TensorRT backend was never run here (no CUDA); TorchScript: BoxMOT takes a .pt
# for a checkpoint of its own model zoo, not a traced network.


@dataclass(frozen=True)
class Tracker:
    """One `track.py --tracker NAME`: BoxMOT's class and whether the re-ID features take part. It is built with
    BoxMOT's own defaults for it (boxmot/configs/trackers/<name>.yaml, what `boxmot track` runs with), its
    use_embeddings set to `appearance` and its frame rate the sequence's."""
    name: str
    boxmot_class: str
    appearance: bool


TRACKERS = {t.name: t for t in (
    Tracker('strongsort', 'StrongSort', True),
    Tracker('botsort', 'BotSort', True),
    Tracker('deepocsort', 'DeepOcSort', True),
    Tracker('boosttrack', 'BoostTrack', True),
    # motion only (boxes and their Kalman filter): what the appearance trackers are measured against
    Tracker('bytetrack', 'ByteTrack', False),
    Tracker('ocsort', 'OcSort', False),
)}


def check_tracker(name):
    """Return the Tracker `name`; ValueError naming --tracker otherwise."""
    if name not in TRACKERS:
        raise ValueError(f'--tracker {name}: expected one of {", ".join(TRACKERS)}')
    return TRACKERS[name]


def check_backend(name):
    """Return the export format of `--backend name`; ValueError naming the flag otherwise."""
    if name not in BACKENDS:
        raise ValueError(f'--backend {name}: BoxMOT runs the export of {", ".join(BACKENDS)} here')
    return BACKENDS[name]


def check_resize(name):
    """Return `--resize name` after checking it; ValueError naming the flag otherwise."""
    if name not in RESIZES:
        raise ValueError(f'--resize {name}: expected {" or ".join(RESIZES)}')
    return name


def require_boxmot():
    """Import BoxMOT; ValueError naming the requirements file when it is not installed."""
    return require_package('boxmot', BOXMOT_PIP, 'track.py')


@contextlib.contextmanager
def boxmot_without_installs():
    """While BoxMOT runs: its package installer refuses, its ONNX backend accepts the installed onnxruntime, and
    its INFO lines (one per tracker and backend built) are left out: its warnings stay.

    BoxMOT checks packages when a backend loads and pip-installs what it finds missing into the running
    environment; its ONNX backend asks for onnxruntime==1.24.3 exactly (its `onnx` extra's pin), so on first use it
    replaced requirements.txt's onnxruntime 1.31.1. BoxMOT 25.0.0 has no setting for this, so the one method every
    install goes through (RequirementsChecker._run_install) raises instead while this is open, and the ONNX
    requirement is BoxMOT's own floor (onnxruntime>=1.18.1, which 1.31.1 meets). All is put back on exit.
    """
    from boxmot.reid.backends import dependencies
    from boxmot.utils.checks import RequirementsChecker

    def refuse(self, install_args, *, description, verbose):
        raise ValueError(f'BoxMOT wanted to install {" ".join(str(a) for a in install_args)} ({description}); '
                         f'track.py never changes the environment: pip install {BOXMOT_PIP} gives what it needs')

    kept_install, kept_onnx = RequirementsChecker._run_install, dependencies.REID_BACKEND_REQUIREMENTS['onnx']
    boxmot_log = logging.getLogger('boxmot')
    kept_level = boxmot_log.level
    RequirementsChecker._run_install = refuse
    dependencies.REID_BACKEND_REQUIREMENTS['onnx'] = (f'onnxruntime{dependencies.ONNX_RUNTIME_MIN_VERSION}',)
    boxmot_log.setLevel(max(kept_level, logging.WARNING))
    try:
        yield
    finally:
        RequirementsChecker._run_install = kept_install
        dependencies.REID_BACKEND_REQUIREMENTS['onnx'] = kept_onnx
        boxmot_log.setLevel(kept_level)


def tracker_arguments(entry, frame_rate):
    """Return the constructor arguments of `entry`: BoxMOT's defaults for it, with the table's appearance and the
    sequence's frame rate where the tracker takes them."""
    from boxmot.trackers.config import load_tracker_config

    arguments = load_tracker_config(entry.name, None, {})
    if 'use_embeddings' in arguments:
        arguments['use_embeddings'] = entry.appearance
    if 'frame_rate' in arguments:
        arguments['frame_rate'] = int(round(frame_rate))
    return arguments


class BicubicCrops:
    """BoxMOT's `reid_model` computing test.py's features: each box cut from the frame at the pixels BoxMOT cuts
    (rounded, clipped), resized and normalised by test.py's transform (PIL bicubic, ImageNet mean/std), run
    through the export with this toolkit's runner."""

    def __init__(self, weights):
        import json

        from reid.data.transforms import eval_transform
        from reid.export import FORMATS, json_path

        meta = json.loads(json_path(weights).read_text())
        self.transform = eval_transform(meta['h'], meta['w'])
        fmt = 'openvino' if Path(weights).name.endswith('_openvino_model') else 'onnx'
        self.runner = FORMATS[fmt].open(weights, 'fp32')

    def get_features(self, boxes, image):
        """Return float32 [N, D] features of the x1, y1, x2, y2 `boxes` of the BGR frame `image`."""
        import numpy as np
        import torch
        from PIL import Image

        frame = Image.fromarray(np.ascontiguousarray(image[:, :, ::-1]))
        crops = []
        for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float32)[:, :4].round().astype(int):
            x1, y1 = min(max(0, x1), frame.width - 1), min(max(0, y1), frame.height - 1)
            crops.append(frame.crop((x1, y1, max(x1 + 1, min(frame.width, x2)), max(y1 + 1, min(frame.height, y2)))))
        batch = torch.stack([self.transform(crop) for crop in crops]).numpy()
        return np.asarray(self.runner(batch), dtype=np.float32)


def build_tracker(entry, weights, frame_rate, resize='bicubic'):
    """Return BoxMOT's tracker `entry` (a Tracker) for a sequence at `frame_rate`, reading appearance from the
    export at `weights` when it uses it: test.py's features (`resize` bicubic) or BoxMOT's own ReID backend's
    (bilinear, on the CPU, loaded on the first frame)."""
    boxmot = require_boxmot()
    arguments = tracker_arguments(entry, frame_rate)
    if entry.appearance and check_resize(resize) == 'bicubic':
        arguments.update(reid_model=BicubicCrops(weights))
    elif entry.appearance:
        arguments.update(reid_weights=Path(weights), device='cpu', half=False)
    return getattr(boxmot, entry.boxmot_class)(**arguments)


def reid_backend(weights):
    """Return BoxMOT's own ReID backend for the export at `weights` (what a tracker builds on its first frame):
    `get_features(xyxy boxes, BGR frame)` and `get_crops(...)`, its crops resized and normalised."""
    require_boxmot()
    from boxmot.reid.core import ReID

    return ReID(weights=Path(weights), device='cpu', half=False, preprocess_name=None).model
