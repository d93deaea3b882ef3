"""export.py's work: the feature extractor of a trained run as ONNX (checked with onnxruntime) or TorchScript, and
the JSON beside it that says how to feed it (h, w, mean, std, the feature size, the run).
"""
import json
import os
from pathlib import Path

import torch

from reid.api import load_network
from reid.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from reid.models.features import FeatureExtractor, fuse_conv_bn
from reid.runs import RunFolder

MIN_COSINE = 0.9999  # an export whose features drift further from torch's is refused


def export_onnx(extractor, example, path):
    """Write `extractor` as ONNX with a dynamic batch axis; return the exporter used ('dynamo' or 'torchscript').

    torch's default (dynamo) exporter works offline with onnxscript and handles PCB's uneven stripe pooling;
    the older TorchScript-based exporter is the fallback for a network it cannot capture.
    """
    try:
        torch.onnx.export(extractor, (example,), str(path), input_names=['images'], output_names=['features'],
                          dynamo=True, dynamic_shapes=({0: torch.export.Dim('batch', min=1)},), verbose=False,
                          external_data=False)  # one self-contained file (weights inside), movable alone
        return 'dynamo'
    except Exception as e:  # noqa: BLE001 -- any capture failure: try the other exporter, report both if it fails
        first = e
    try:
        torch.onnx.export(extractor, (example,), str(path), input_names=['images'], output_names=['features'],
                          dynamo=False, dynamic_axes={'images': {0: 'batch'}, 'features': {0: 'batch'}})
        return 'torchscript'
    except Exception as e:  # noqa: BLE001
        raise ValueError(f'{path}: ONNX export failed ({type(first).__name__}: {first}; then {e})') from None


def export_torchscript(extractor, example, path):
    """Write `extractor` traced to TorchScript (torch.jit.load(path) runs it without this toolkit)."""
    traced = torch.jit.trace(extractor, (example,), check_trace=False)
    traced.save(str(path))
    return 'trace'


def onnx_features(path, images):
    """Return the features an ONNX file computes for `images` (a float32 [N, 3, h, w] tensor), with onnxruntime."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return torch.from_numpy(session.run(None, {'images': images.numpy()})[0])


def exported_features(path, fmt, images):
    """Return the features of an exported file for `images`, run by onnxruntime (ONNX) or torch.jit."""
    if fmt == 'onnx':
        return onnx_features(path, images)
    with torch.no_grad():
        return torch.jit.load(str(path), map_location='cpu')(images)


def min_cosine(a, b):
    """Return the smallest row-wise cosine similarity between two feature batches."""
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1).min())


def export_run(opts, log=print):
    """Export the run `opts` names; write the model file and its JSON; return (model path, json path, cosine)."""
    run = RunFolder(Path(opts.model_dir) / opts.name)
    model, spec, _ = load_network(run.path, opts.which_epoch)
    extractor = FeatureExtractor(fuse_conv_bn(model)).eval()
    h, w = spec.input_size()
    suffix = '.onnx' if opts.format == 'onnx' else '.pt'
    out = Path(opts.output) if opts.output else run.export_file(opts.which_epoch, suffix)
    out.parent.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    partial = out.with_name(out.stem + '.partial' + out.suffix)  # renamed only once it passed the check
    try:
        with torch.no_grad():
            exporter = (export_onnx if opts.format == 'onnx' else export_torchscript)(
                extractor, torch.randn(2, 3, h, w, generator=generator), partial)
            # a batch size other than the example's shows the batch axis really is dynamic
            check = torch.randn(3, 3, h, w, generator=generator)
            expected = extractor(check)
        got = exported_features(partial, opts.format, check)
        cosine = min_cosine(got, expected)
        if got.shape != expected.shape or cosine < MIN_COSINE:
            raise ValueError(f'{out}: exported features differ from torch (shape {tuple(got.shape)} vs '
                             f'{tuple(expected.shape)}, min cosine {cosine:.6f} < {MIN_COSINE}); not written')
        os.replace(partial, out)
    finally:
        if partial.exists():
            partial.unlink()
    meta = {'format': opts.format, 'exporter': exporter, 'input': 'images', 'output': 'features',
            'h': h, 'w': w, 'mean': list(IMAGENET_MEAN), 'std': list(IMAGENET_STD),
            'feature_size': int(expected.shape[1]), 'flip_sum': True, 'l2_normalised': True,
            'run': opts.name, 'checkpoint': str(run.checkpoint(opts.which_epoch)),
            'backbone': spec.backbone, 'PCB': spec.PCB}
    meta_path = out.with_suffix('.json')
    meta_path.write_text(json.dumps(meta, indent=2) + '\n')
    log(f'saved {out} ({opts.format}, {exporter} exporter; input images [N, 3, {h}, {w}] -> features '
        f'[N, {meta["feature_size"]}]) and {meta_path}; min cosine to torch {cosine:.7f}')
    return out, meta_path, cosine
