"""Track the people of a MOTChallenge sequence with a BoxMOT tracker whose appearance model is a trained run.

    python prepare.py --make-clip data/clip                                              # a generated sequence
    python track.py --name demo_demo --sequence data/clip --output tracks                      # StrongSORT
    python track.py --name demo_demo --sequence ../MOT17/train/MOT17-04-FRCNN --tracker botsort --output tracks
    python track.py --name demo_demo --sequence data/clip --tracker bytetrack --output tracks --video

The sequence folder is MOTChallenge's: seqinfo.ini, img1/ and det/det.txt (the detections tracked: a MOT17 or
MOT20 sequence with its public detections works the same). The appearance model is the run's export at
--which_epoch (net_last.onnx, written on first use, as test.py --backend does), fed test.py's crops (--resize
bicubic) or BoxMOT's own ReID backend's (--resize bilinear).
Writes OUT/<sequence>.txt (frame, id, x, y, w, h, score, -1, -1, -1) and OUT/<sequence>.jpg, a strip of frames
with a colour per id (OUT/<sequence>.mp4 with --video); with gt/gt.txt prints IDF1, MOTA, id switches and HOTA
(TrackEval, MOTChallenge's preprocessing). Needs pip install -r requirements-track.txt (BoxMOT, TrackEval).
"""
import argparse
import sys

from reid.cli import MODEL_DIR, RUN_NAME, one_line_errors
from reid.tracking.run import track_sequence
from reid.tracking.trackers import BACKENDS, RESIZES, TRACKERS


def build_parser():
    p = argparse.ArgumentParser(description='Track a MOTChallenge sequence with BoxMOT and a trained re-ID run.')
    p.add_argument('--name', default=RUN_NAME, type=str, help='run name under --model_dir (its appearance model)')
    p.add_argument('--model_dir', default=MODEL_DIR, type=str, help='folder that holds the runs')
    p.add_argument('--which_epoch', default='last', type=str,
                   help="'last', 'init' (the untrained network) or the epochs done of a net_XXX.pth snapshot")
    p.add_argument('--sequence', required=True, type=str,
                   help='MOTChallenge sequence folder: seqinfo.ini, img1/, det/det.txt (gt/gt.txt for metrics)')
    p.add_argument('--tracker', default='strongsort', type=str, help=f'one of {", ".join(TRACKERS)}')
    p.add_argument('--backend', default='onnxruntime', type=str,
                   help=f'what runs the export inside BoxMOT: {" or ".join(BACKENDS)} (fp32)')
    p.add_argument('--resize', default=RESIZES[0], type=str,
                   help="how a box becomes the network's input: 'bicubic' (test.py's features: PIL's bicubic resize "
                        "of the crop) or 'bilinear' (BoxMOT's own ReID backend: OpenCV's bilinear resize)")
    p.add_argument('--output', required=True, type=str, help='folder for <sequence>.txt and the picture')
    p.add_argument('--video', action='store_true', help='write <sequence>.mp4 with every frame instead of the strip')
    return p


def main(argv=None):
    opts = build_parser().parse_args(argv)
    with one_line_errors('track.py', 'interrupted; the results were not written'):
        track_sequence(opts)


if __name__ == '__main__':
    main(sys.argv[1:])
