"""Export a trained run's feature extractor: ONNX, OpenVINO (fp32 or int8), TensorRT or TorchScript, checked
against PyTorch's features, with a JSON and BoxMOT's metadata sidecar beside it.

    python export.py --name ft_ResNet50                         # model/ft_ResNet50/net_last.onnx + net_last.json
    python export.py --name ft_ResNet50 --format openvino       # net_last_openvino_model/ (net_last.xml + .bin)
    python export.py --name ft_ResNet50 --format openvino --precision int8   # net_last_int8_openvino_model/
    python export.py --name ft_ResNet50 --format tensorrt       # net_last_fp16.engine (CUDA only)
    python export.py --name demo --format torchscript --which_epoch 10

The exported network takes a batch of normalised 3 x h x w images (what test.py feeds the network: bicubic
resize, ImageNet mean/std) of any batch size and returns the flip-summed, L2-normalised features test.py saves.
The JSON holds h, w, mean, std, the resize interpolation, the feature size and the run it came from;
<file>.metadata.json (and manifest.json inside an OpenVINO folder) the keys BoxMOT reads. int8 calibrates on
--calib_images of the run's training images and prints fp32 and int8 retrieval on its val split.
test.py --backend onnxruntime|openvino|tensorrt runs these files (and exports them on first use).
"""
import argparse
import sys

from reid.backends import PRECISIONS
from reid.export import FORMATS, export_run
from reid.cli import MODEL_DIR, RUN_NAME, one_line_errors


def build_parser():
    p = argparse.ArgumentParser(description='Export the feature extractor of a trained run.')
    p.add_argument('--name', default=RUN_NAME, type=str, help='run name under --model_dir')
    p.add_argument('--model_dir', default=MODEL_DIR, type=str, help='folder that holds the runs')
    p.add_argument('--which_epoch', default='last', type=str, help="'last', 'init' or an epoch number")
    p.add_argument('--format', default='onnx', choices=tuple(FORMATS))
    p.add_argument('--precision', default=None, choices=PRECISIONS,
                   help='onnx and torchscript: fp32; openvino: fp32 (default), bf16 (the same IR, checked as the '
                        'CPU computes it in bf16) or int8 (NNCF); tensorrt: fp16 (default) or fp32')
    p.add_argument('--calib_images', default=300, type=int, help='int8: training images to calibrate on')
    p.add_argument('--calib_dir', default=None, type=str,
                   help="int8: prepare.py output folder to calibrate (train/) and measure (val/ x train/) on "
                        "(default: the run's data_dir from opts.yaml)")
    p.add_argument('--output', default=None, type=str,
                   help='file (OpenVINO: folder *_openvino_model) to write (default: in model/<name>/, named '
                        'after --which_epoch); the JSON goes beside it')
    return p


def main(argv=None):
    opts = build_parser().parse_args(argv)
    with one_line_errors('export.py'):
        export_run(opts)


if __name__ == '__main__':
    main(sys.argv[1:])
