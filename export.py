"""Export a trained run's feature extractor to ONNX (checked with onnxruntime) or TorchScript, with a JSON beside it.

    python export.py --name ft_ResNet50                         # model/ft_ResNet50/net_last.onnx + net_last.json
    python export.py --name demo --format torchscript --which_epoch 9

The exported network takes a batch of normalised 3 x h x w images (what test.py feeds the network: bicubic
resize, ImageNet mean/std) of any batch size and returns the flip-summed, L2-normalised features test.py saves.
The JSON holds h, w, mean, std, the feature size and the run it came from.
"""
import argparse
import sys

from reid.export import export_run


def build_parser():
    p = argparse.ArgumentParser(description='Export the feature extractor of a trained run (ONNX or TorchScript).')
    p.add_argument('--name', default='ft_ResNet50', type=str, help='run name under --model_dir')
    p.add_argument('--model_dir', default='model', type=str, help='folder that holds the runs')
    p.add_argument('--which_epoch', default='last', type=str, help="'last', 'init' or an epoch number")
    p.add_argument('--format', default='onnx', choices=('onnx', 'torchscript'))
    p.add_argument('--output', default=None, type=str,
                   help='file to write (default model/<name>/net_<which_epoch>.onnx or .pt); the JSON goes beside it')
    return p


def main(argv=None):
    opts = build_parser().parse_args(argv)
    try:
        export_run(opts)
    except ValueError as e:
        raise SystemExit(f'export.py: {e}') from None


if __name__ == '__main__':
    main(sys.argv[1:])
