"""export.py's work, and the exports test.py, demo.py and reid.api run: a trained run's feature extractor as ONNX,
an OpenVINO IR (fp32, or int8 quantised with NNCF), a TensorRT engine or TorchScript, each checked against
PyTorch's features before it is kept, with the JSON that says how to feed it and the sidecar BoxMOT reads.
"""
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from reid.models.loading import DETAIL_CHARS, load_network
from reid.backends import BACKENDS, MIN_COSINE, hidden_telemetry, open_onnxruntime, open_openvino, \
    open_tensorrt, require_package
from reid.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from reid.models.features import FeatureExtractor, fuse_conv_bn
from reid.runs import RunFolder
from reid.runtime import cuda_available

logger = logging.getLogger(__name__)
CHECK_IMAGES = 32    # int8: held-out images both networks' retrieval is measured on

INTERPOLATION = 'bicubic'   # how test.py resizes (PIL); said in the JSON so a consumer feeds the same pixels
TRT_MAX_BATCH = 256         # a TensorRT engine's dynamic batch axis runs 1..TRT_MAX_BATCH (test.py's default)


@dataclass(frozen=True)
class ExportFormat:
    """One `export.py --format`: the precisions it writes, where its file goes, how it is written and run."""
    name: str
    precisions: tuple
    artifact: Callable   # (run folder, which_epoch, precision) -> the file or folder to write
    write: Callable      # (extractor, example images, output path, precision, context) -> exporter name
    open: Callable       # (path, precision) -> runner (numpy [N, 3, h, w] -> numpy [N, D])


def export_onnx(extractor, example, path, precision='fp32', context=None):
    """Write `extractor` as ONNX with a dynamic batch axis; return the exporter used ('torchscript' or 'dynamo').

    torch's TorchScript-based exporter takes about a second for a ResNet (the first use of a backend waits for
    it); the dynamo exporter (offline with onnxscript, ten times slower) captures what it cannot, such as PCB's
    uneven stripe pooling. Either way the features are checked against torch's before the file is kept.
    """
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')   # its deprecation notice: the exporter still ships with the pinned torch
            torch.onnx.export(extractor, (example,), str(path), input_names=['images'], output_names=['features'],
                              dynamo=False, dynamic_axes={'images': {0: 'batch'}, 'features': {0: 'batch'}})
        return 'torchscript'
    except Exception as e:  # noqa: BLE001 -- any capture failure: try the other exporter, report both if it fails
        first = e
    try:
        torch.onnx.export(extractor, (example,), str(path), input_names=['images'], output_names=['features'],
                          dynamo=True, dynamic_shapes=({0: torch.export.Dim('batch', min=1)},), verbose=False,
                          external_data=False)  # one self-contained file (weights inside), movable alone
        return 'dynamo'
    except Exception as e:  # noqa: BLE001
        raise ValueError(f'{path}: ONNX export failed ({type(first).__name__}: {first}; then {e})') from None


def export_torchscript(extractor, example, path, precision='fp32', context=None):
    """Write `extractor` traced to TorchScript (torch.jit.load(path) runs it without this toolkit)."""
    traced = torch.jit.trace(extractor, (example,), check_trace=False)
    traced.save(str(path))
    return 'trace'


def open_torchscript(path, precision='fp32'):
    """Return a runner of a TorchScript file on the CPU."""
    module = torch.jit.load(str(path), map_location='cpu').eval()

    def run(batch):
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy()
    return run


def export_openvino(extractor, example, folder, precision='fp32', context=None):
    """Write an OpenVINO IR (<folder>/net_<epoch>.xml + .bin) read from the ONNX export; int8: quantised by NNCF
    on the calibration images of `context` (calibration_batches). Return the exporter chain."""
    openvino = require_package('openvino', BACKENDS['openvino'].pip, '--format openvino')
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / 'network.onnx'
    exporter = export_onnx(extractor, example, onnx_path)
    # the runtime reads ONNX itself: no converter run (it would start OpenVINO's telemetry)
    model = openvino.Core().read_model(str(onnx_path))
    if precision == 'int8':
        model = quantize_int8(model, context['calibration'])
    openvino.save_model(model, str(folder / context['xml_name']), compress_to_fp16=False)
    onnx_path.unlink()
    return f'{exporter} onnx -> openvino' + (' -> nncf int8' if precision == 'int8' else '')


def quantize_int8(model, batches):
    """Return the OpenVINO `model` quantised to int8 by NNCF's post-training quantisation on `batches` (numpy
    [n, 3, h, w] each): weights and activations int8 where it keeps accuracy (the mixed preset: symmetric
    weights, asymmetric activations)."""
    require_package('nncf', BACKENDS['openvino'].pip, '--precision int8')
    with hidden_telemetry():
        import nncf
    # an item of the dataset is one batch: subset_size counts batches, so every calibration image is used
    return nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches),
                         preset=nncf.QuantizationPreset.MIXED)


def export_tensorrt(extractor, example, path, precision='fp16', context=None):
    """Build a TensorRT engine from the ONNX export (dynamic batch 1..TRT_MAX_BATCH, fp16 layers where
    `precision` is fp16, as the original's test_with_TensorRT.py)."""
    if not cuda_available():
        raise ValueError('--format tensorrt: TensorRT builds and runs engines on CUDA, and this machine has none '
                         '(REID_DEVICE=cpu or no GPU); export --format openvino or onnx for the CPU')
    tensorrt = require_package('tensorrt', BACKENDS['tensorrt'].pip, '--format tensorrt')
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        onnx_path = Path(tmp) / 'network.onnx'
        exporter = export_onnx(extractor, example, onnx_path)
        engine = build_engine(tensorrt, onnx_path, tuple(example.shape[1:]), precision)
    path.write_bytes(engine)
    return f'{exporter} onnx -> tensorrt {tensorrt.__version__}'


def build_engine(tensorrt, onnx_path, image_shape, precision):
    """Return the serialised TensorRT engine of an ONNX file whose input 'images' is [batch, *image_shape]."""
    logger = tensorrt.Logger(tensorrt.Logger.WARNING)
    builder = tensorrt.Builder(logger)
    network = builder.create_network(0)   # explicit batch: the only mode TensorRT 10+ has
    parser = tensorrt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f'{onnx_path}: TensorRT cannot parse the ONNX export ({errors})')
    config = builder.create_builder_config()
    if precision == 'fp16':
        config.set_flag(tensorrt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape('images', (1, *image_shape), (64, *image_shape), (TRT_MAX_BATCH, *image_shape))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ValueError(f'{onnx_path}: TensorRT could not build an engine (see its log above)')
    return bytes(engine)


def _artifact(pattern):
    return lambda run, epoch, precision: run.path / pattern.format(epoch=epoch, precision=precision,
                                                                 int8='_int8' if precision == 'int8' else '')


FORMATS = {f.name: f for f in (
    ExportFormat('onnx', ('fp32',), _artifact('net_{epoch}.onnx'), export_onnx, open_onnxruntime),
    ExportFormat('openvino', ('fp32', 'bf16', 'int8'), _artifact('net_{epoch}{int8}_openvino_model'),
                 export_openvino, open_openvino),
    ExportFormat('tensorrt', ('fp16', 'fp32'), _artifact('net_{epoch}_{precision}.engine'), export_tensorrt,
                 open_tensorrt),
    ExportFormat('torchscript', ('fp32',), _artifact('net_{epoch}.pt'), export_torchscript, open_torchscript),
)}


def default_precision(fmt):
    """Return the precision `--format fmt` writes when --precision is not given (TensorRT: fp16, as the original)."""
    return FORMATS[fmt].precisions[0]


def check_format(fmt, precision):
    """Return the ExportFormat `fmt` after checking it writes `precision`; ValueError naming the flags."""
    if fmt not in FORMATS:
        raise ValueError(f'--format {fmt}: expected one of {", ".join(FORMATS)}')
    if precision not in FORMATS[fmt].precisions:
        raise ValueError(f'--format {fmt} --precision {precision}: {fmt} writes {", ".join(FORMATS[fmt].precisions)}')
    return FORMATS[fmt]


def file_sha256(path):
    """Return the SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def model_file(artifact):
    """Return the file a consumer opens: the artifact itself, or the .xml inside an OpenVINO folder."""
    artifact = Path(artifact)
    if artifact.name.endswith('_openvino_model'):
        found = sorted(artifact.glob('*.xml')) if artifact.is_dir() else []
        return found[0] if len(found) == 1 else \
            artifact / (artifact.name[:-len('_openvino_model')].replace('_int8', '') + '.xml')
    return artifact


def sidecar_paths(artifact):
    """Return the metadata sidecars BoxMOT reads: <file>.metadata.json beside a file; for a folder the same
    beside its .xml and manifest.json inside it (BoxMOT's name for a folder's metadata)."""
    artifact = Path(artifact)
    if artifact.name.endswith('_openvino_model'):
        xml = model_file(artifact)
        return [xml.with_name(xml.name + '.metadata.json'), artifact / 'manifest.json']
    return [artifact.with_name(artifact.name + '.metadata.json')]


def json_path(artifact):
    """Return the JSON that says how to feed `artifact` (net_last.json beside net_last.onnx, as before)."""
    return model_file(artifact).with_suffix('.json')


def min_cosine(a, b):
    """Return the smallest row-wise cosine similarity between two feature batches."""
    a, b = torch.as_tensor(np.asarray(a)).double(), torch.as_tensor(np.asarray(b)).double()
    return float(torch.nn.functional.cosine_similarity(a, b, dim=1).min())


def exported_features(path, fmt, images, precision=None):
    """Return the features of an exported file for `images` (a float32 [N, 3, h, w] tensor) as a tensor."""
    runner = FORMATS[fmt].open(path, precision or default_precision(fmt))
    return torch.from_numpy(np.asarray(runner(images.numpy())))


def onnx_features(path, images):
    """Return the features an ONNX file computes for `images` (a float32 [N, 3, h, w] tensor), with onnxruntime."""
    return exported_features(path, 'onnx', images)


@dataclass(frozen=True)
class CalibrationData:
    """Where an int8 export finds its images: a prepared folder (train/ calibrates; val/ x train/ measures)."""
    folder: Path
    images: int = 300          # calibration images (--calib_images)
    batchsize: int = 32


MEASURE_IDS = 200   # the int8 export's retrieval check: val x train of at most this many ids (minutes, not hours)


def stored_precision(fmt, precision):
    """Return the precision of the weights in the file: OpenVINO keeps one fp32 IR for fp32 and bf16 (bf16 is
    how the CPU computes it) and a separate int8 IR."""
    return precision if fmt != 'openvino' or precision == 'int8' else 'fp32'


def stale_reason(artifact, checkpoint, which_epoch):
    """Return why the export `artifact` cannot stand for `checkpoint` (another epoch, an older checkpoint, no
    sidecar), or None when it can."""
    sidecar = sidecar_paths(artifact)[0]
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return f'{artifact}: has no readable {sidecar.name} (not written by export.py)'
    made = meta.get('reid_toolkit', {})
    if str(made.get('which_epoch')) != str(which_epoch) or Path(str(meta.get('source'))).name != checkpoint.name:
        return f'{artifact}: belongs to another epoch ({Path(str(meta.get("source"))).name}, not {checkpoint.name})'
    if meta.get('source_sha256') != file_sha256(checkpoint):
        return f'{artifact}: exported from an older {checkpoint.name} (the checkpoint changed since)'
    return None


def write_metadata(artifact, fmt, precision, spec, run, which_epoch, feature_size):
    """Write the JSON that says how to feed `artifact` and BoxMOT's metadata sidecar(s); return the JSON path."""
    h, w = spec.input_size()
    nclasses = run.read_opts()['nclasses']
    checkpoint = run.checkpoint(which_epoch)
    meta = {'format': fmt, 'precision': precision, 'input': 'images', 'output': 'features', 'h': h, 'w': w,
            'mean': list(IMAGENET_MEAN), 'std': list(IMAGENET_STD), 'interpolation': INTERPOLATION,
            'feature_size': feature_size, 'flip_sum': True, 'l2_normalised': True, 'run': run.path.name,
            'checkpoint': str(checkpoint), 'backbone': spec.backbone, 'PCB': spec.PCB,
            'temporal': spec.temporal}   # a tracklet network's export still embeds single frames
    path = json_path(artifact)
    path.write_text(json.dumps(meta, indent=2) + '\n')
    # BoxMOT's artifact metadata (boxmot/reid/core/artifacts.py): the source checkpoint and its digest, the model,
    # the crop size and its preprocessing name ('resize': plain resize to img_size, no padding)
    boxmot = {'schema_version': 1, 'source': str(checkpoint), 'source_sha256': file_sha256(checkpoint),
              'model_name': f'reid-toolkit-{spec.backbone}', 'num_classes': int(nclasses), 'preprocess': 'resize',
              'model_kwargs_schema_version': 1, 'model_kwargs': {'img_size': [h, w]}, 'img_size': [h, w],
              'reid_toolkit': {**meta, 'which_epoch': str(which_epoch),
                               'precision': stored_precision(fmt, precision)}}
    for sidecar in sidecar_paths(artifact):
        sidecar.write_text(json.dumps(boxmot, indent=2, sort_keys=True) + '\n')
    return path


def replace_artifact(partial, out):
    """Move the checked `partial` export (a file or an OpenVINO folder) to `out`, replacing an older one."""
    if out.is_dir():
        shutil.rmtree(out)
    os.replace(partial, out)


def remove(path):
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def write_export(run, which_epoch, fmt, precision, out, calibration=None):
    """Export the run's extractor at `which_epoch` as `fmt` (an ExportFormat) at `precision` to `out`, checked
    against PyTorch's fp32 features first; write its JSON and sidecars; return (out, json path, min cosine)."""
    model, spec, opts = load_network(run.path, which_epoch)
    extractor = FeatureExtractor(fuse_conv_bn(model)).eval()
    h, w = spec.input_size()
    generator = torch.Generator().manual_seed(0)
    # a batch size other than the example's shows the batch axis really is dynamic; int8 is checked on real
    # images (held-out val images), as noise is nothing like what it was calibrated on
    check = torch.randn(3, 3, h, w, generator=generator)
    context = {'xml_name': model_file(out).name}
    if precision == 'int8':
        calibration = calibration or CalibrationData(run_data_dir(run, opts))
        context['calibration'] = calibration_batches(calibration, (h, w))
        check = torch.from_numpy(np.concatenate(context['calibration']['check']))
        context['calibration'] = context['calibration']['batches']
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + '.partial')   # renamed only once it passed the check
    remove(partial)
    try:
        with torch.no_grad():
            exporter = fmt.write(extractor, torch.randn(2, 3, h, w, generator=generator), partial, precision,
                                 context)
            expected = extractor(check)
        got = np.asarray(fmt.open(partial, precision)(check.numpy()))
        cosine = min_cosine(got, expected)
        if got.shape != tuple(expected.shape) or cosine < MIN_COSINE[precision]:
            raise ValueError(f'{out}: exported features differ from torch (shape {tuple(got.shape)} vs '
                             f'{tuple(expected.shape)}, min cosine {cosine:.6f} < {MIN_COSINE[precision]}); '
                             'not written')
        replace_artifact(partial, out)
    finally:
        remove(partial)
    meta_path = write_metadata(out, fmt.name, precision, spec, run, which_epoch, int(expected.shape[1]))
    logger.info(f'saved {out} ({fmt.name} {precision}, {exporter}; input images [N, 3, {h}, {w}] -> features '
        f'[N, {expected.shape[1]}]) and {meta_path.name}; min cosine to torch fp32 {cosine:.7f}')
    return out, meta_path, cosine


def run_data_dir(run, opts):
    """Return the prepared folder the run was trained on (opts.yaml's data_dir); ValueError naming --calib_dir
    when it is gone."""
    folder = Path(str(opts.get('data_dir', '')))
    if not (folder / 'train').is_dir() and not (folder / 'train_all').is_dir():
        raise ValueError(f'--precision int8 calibrates on the run\'s training images, and {folder} (data_dir of '
                         f'{run.opts_file}) has no train/ here: give --calib_dir, a prepare.py output folder')
    return folder


def spread(items, n):
    """Return `n` items of the list spread evenly over it (every id of a sorted split gets its share)."""
    if n >= len(items):
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, n).round()]


def load_batches(paths, size, batchsize):
    """Return float32 numpy batches [<=batchsize, 3, h, w] of the images at `paths`, as test.py feeds them."""
    from PIL import Image

    from reid.data.transforms import eval_transform

    transform = eval_transform(*size)
    tensors = []
    for path in paths:
        with Image.open(path) as img:
            tensors.append(transform(img.convert('RGB')).numpy())
    return [np.stack(tensors[i:i + batchsize]) for i in range(0, len(tensors), batchsize)]


def calibration_batches(calibration, size):
    """Return {'batches': the int8 calibration images of `calibration`'s training split, 'check': up to 32
    val images (never calibrated on) for the export's cosine check}; ValueError naming the folder."""
    from reid.data.prepared import list_reid_images

    folder = Path(calibration.folder)
    split = folder / 'train' if (folder / 'train').is_dir() else folder / 'train_all'
    images = [p for p, _, _ in list_reid_images(split)] if split.is_dir() else []
    if not images:
        raise ValueError(f'--calib_dir {folder}: no training images in {split} to calibrate int8 on')
    if calibration.images < 1:
        raise ValueError(f'--calib_images {calibration.images}: must be at least 1')
    held_out = [p for p, _, _ in list_reid_images(folder / 'val')] if (folder / 'val').is_dir() else []
    check = spread(held_out, CHECK_IMAGES) or spread(images, CHECK_IMAGES)
    return {'batches': load_batches(spread(images, calibration.images), size, calibration.batchsize),
            'check': load_batches(check, size, calibration.batchsize)}


def measurement_split(calibration):
    """Return (queries, gallery): the [(path, id, camera)] of val and of train for at most MEASURE_IDS ids that
    have both; ValueError (one line, before any work) when the folder has nothing to measure int8 on."""
    from reid.data.prepared import list_reid_images

    folder = Path(calibration.folder)
    val, train = ([x for x in list_reid_images(folder / s) if x[1] >= 0] if (folder / s).is_dir() else []
                  for s in ('val', 'train'))
    ids = sorted({pid for _, pid, _ in val} & {pid for _, pid, _ in train})[:MEASURE_IDS]
    if not ids:
        raise ValueError(f'--precision int8: nothing to measure the int8 network on in {folder} (it needs val/ and '
                         'train/ images of the same ids, as prepare.py writes); not exported')
    keep = set(ids)
    return [x for x in val if x[1] in keep], [x for x in train if x[1] in keep]


def retrieval(runner, items, size, batchsize=32):
    """Return (features, ids, cameras) of [(path, id, camera)] through `runner`, a batch at a time."""
    paths = [p for p, _, _ in items]
    chunks = [np.asarray(runner(load_batches(paths[i:i + batchsize], size, batchsize)[0]))
              for i in range(0, len(paths), batchsize)]
    return np.concatenate(chunks), np.array([x[1] for x in items]), np.array([x[2] for x in items])


def measure_int8(out, fp32_runner, calibration, size):
    """Print and return {'fp32': metrics, 'int8': metrics}: val (queries) x train (gallery) retrieval of the
    fp32 network and of the int8 export at `out`."""
    from reid.evaluation.metrics import compute_cmc_map, rank_at

    queries, gallery = measurement_split(calibration)
    results = {}
    for name, runner in (('fp32', fp32_runner), ('int8', FORMATS['openvino'].open(out, 'int8'))):
        results[name] = compute_cmc_map(*retrieval(runner, queries, size), *retrieval(runner, gallery, size))
        logger.info(f'{name}: Rank@1 {100 * rank_at(results[name], 1):.2f} mAP {100 * results[name]["mAP"]:.2f} '
            f'({len(queries)} val queries x {len(gallery)} train images of {calibration.folder})')
    return results


def export_run(opts):
    """export.py: write --format at --precision for the run; int8 also prints fp32 and int8 retrieval on the
    run's val split. Return (the export's path, its JSON, the min cosine to torch)."""
    run = RunFolder(Path(opts.model_dir) / opts.name)
    precision = opts.precision or default_precision(opts.format)
    fmt = check_format(opts.format, precision)
    out = Path(opts.output) if opts.output else fmt.artifact(run, opts.which_epoch, precision)
    if fmt.name == 'openvino' and not out.name.endswith('_openvino_model'):
        raise ValueError(f'--output {out}: an OpenVINO export is a folder named *_openvino_model (the name '
                         'OpenVINO tools and BoxMOT recognise)')
    temporal = run.read_opts().get('temporal')
    run.existing_checkpoint(opts.which_epoch)
    if temporal:   # the export's input is a batch of images: a clip of one frame each, whatever the pooling
        logger.info(f'a tracklet network (--temporal {temporal}): the export embeds one frame at a time; a '
                    "tracklet's feature is then the mean of its frames' (test.py --seq_len 1 --backend ...)")
    calibration = None
    if precision == 'int8':
        calibration = CalibrationData(Path(opts.calib_dir) if opts.calib_dir else
                                      run_data_dir(run, run.read_opts()), opts.calib_images)
        measurement_split(calibration)   # refused before any work when there is nothing to measure on
    result = write_export(run, opts.which_epoch, fmt, precision, out, calibration)
    if precision == 'int8':
        _, spec, _ = load_network(run.path, opts.which_epoch)
        fp32 = FORMATS['openvino'].artifact(run, opts.which_epoch, 'fp32')
        if not fp32.is_dir() or stale_reason(fp32, run.checkpoint(opts.which_epoch), opts.which_epoch):
            write_export(run, opts.which_epoch, fmt, 'fp32', fp32)
        measure_int8(out, FORMATS['openvino'].open(fp32, 'fp32'), calibration, spec.input_size())
    return result


def ensure_export(run, which_epoch, fmt_name, precision, refresh=False):
    """Return the path of the `fmt_name` export of the run's `which_epoch` for `precision`, exported on first use
    and reused after. An export of another epoch or an older checkpoint is refused (ValueError naming the file
    and the command that renews it), or written again when `refresh` (the toolkit's own cache, --backend auto)."""
    fmt = FORMATS[fmt_name]
    stored = stored_precision(fmt_name, precision)
    artifact = fmt.artifact(run, which_epoch, stored)
    checkpoint = run.existing_checkpoint(which_epoch)
    problem = stale_reason(artifact, checkpoint, which_epoch) if artifact.exists() else None
    if problem and not refresh:
        raise ValueError(f'{problem}; export it again: python export.py --name {run.path.name} --model_dir '
                         f'{run.path.parent} --which_epoch {which_epoch} --format {fmt_name} --precision {stored} '
                         '(or delete it)')
    if problem or not artifact.exists():
        logger.info(f'{artifact.name}: ' + (f'{problem.split(": ", 1)[1]}, exporting again' if problem
                                    else 'exporting on first use (kept in the run folder for the next run)'))
        write_export(run, which_epoch, fmt, stored, artifact)
    return artifact


def backend_runner(run, which_epoch, choice, auto):
    """Return (the BackendChoice that runs, its runner or None for torch): the export of `choice` opened at its
    precision, exported on first use. Under --backend auto (`auto`) an export that fails leaves the job to
    torch, with the reason in the choice; asked for by name, it raises."""
    from reid.backends import BackendChoice

    if choice.name == 'torch':
        return choice, None
    fmt = BACKENDS[choice.name].export_format
    try:
        path = ensure_export(run, which_epoch, fmt, choice.precision, refresh=auto)
        return choice, FORMATS[fmt].open(path, choice.precision)
    except ValueError as e:
        if not auto:
            raise
        return BackendChoice('torch', 'fp32', f'auto: the {choice.name} export failed ({str(e)[:DETAIL_CHARS]})'), None
