"""Inference backends: the one table of the runtimes that turn a batch of images into test.py's features (torch,
onnxruntime, OpenVINO, TensorRT), the export format each runs, its precisions, and how a file of it is opened.

A runner takes a float32 numpy batch [N, 3, h, w] (normalised as test.py feeds the network) and returns float32
[N, D] features, flip-summed and L2-normalised: the exported network holds the whole feature contract.
"""
import contextlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

PRECISIONS = ('fp32', 'fp16', 'bf16', 'int8')
# The smallest cosine between an export's features and PyTorch's fp32 features before the export is kept. int8:
# measured (python -m bench.backends, docs/benchmarks.md "Inference backends"), the worst of 64 images was 0.9995 for
# ResNet-50 and for the quick start's ResNet-18 on EPYC-bf16; 0.98 leaves room for other networks and data.
MIN_COSINE = {'fp32': 0.9999, 'fp16': 0.999, 'bf16': 0.999, 'int8': 0.98}
# OpenVINO's CPU plugin names for --precision (int8 is a quantised model, run at the machine's float precision)
OPENVINO_HINTS = {'fp32': 'f32', 'bf16': 'bf16', 'fp16': 'f16'}


@dataclass(frozen=True)
class Backend:
    """One way of running the feature extractor: `--backend NAME`."""
    name: str
    export_format: Optional[str]   # export.py --format of the file it runs; None: the checkpoint itself
    precisions: tuple              # --precision values it runs
    module: str                    # the package it imports (checked before use)
    pip: str                       # the install line named when the package is missing
    needs_cuda: bool
    open: Optional[Callable]       # (path, precision) -> runner


def open_onnxruntime(path, precision='fp32'):
    """Return a runner of an ONNX file on onnxruntime's CPU provider."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def open_openvino(path, precision='fp32'):
    """Return a runner of an OpenVINO IR (.xml + .bin, or the folder holding them) on the CPU, computing at
    `precision` (OpenVINO's inference precision hint; an int8 IR runs its quantised layers in int8)."""
    import openvino

    from pathlib import Path
    path = Path(path)
    xml = next(iter(sorted(path.glob('*.xml'))), None) if path.is_dir() else path
    if xml is None or not xml.is_file():
        raise ValueError(f'{path}: no OpenVINO .xml model here')
    core = openvino.Core()
    hint = OPENVINO_HINTS.get(precision, 'f32' if precision != 'int8' else None)
    config = {'PERFORMANCE_HINT': 'LATENCY'}   # one batch at a time uses every core (THROUGHPUT splits them)
    if hint:
        config['INFERENCE_PRECISION_HINT'] = hint
    compiled = core.compile_model(core.read_model(str(xml)), 'CPU', config)
    request = compiled.create_infer_request()
    return lambda batch: request.infer([np.ascontiguousarray(batch, dtype=np.float32)])[compiled.output(0)].copy()


def open_tensorrt(path, precision='fp16'):
    """Return a runner of a TensorRT engine on CUDA (batches go through torch CUDA tensors)."""
    import tensorrt
    import torch

    runtime = tensorrt.Runtime(tensorrt.Logger(tensorrt.Logger.WARNING))
    with open(path, 'rb') as f:
        engine = runtime.deserialize_cuda_engine(f.read())
    if engine is None:
        raise ValueError(f'{path}: TensorRT could not load this engine (built by another TensorRT or GPU?)')
    context = engine.create_execution_context()

    def run(batch):
        images = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).cuda()
        context.set_input_shape('images', tuple(images.shape))
        out = torch.empty(tuple(context.get_tensor_shape('features')), dtype=torch.float32, device='cuda')
        context.set_tensor_address('images', images.data_ptr())
        context.set_tensor_address('features', out.data_ptr())
        stream = torch.cuda.current_stream()
        if not context.execute_async_v3(stream.cuda_stream):
            raise ValueError(f'{path}: TensorRT failed to run a batch of {len(batch)}')
        stream.synchronize()
        return out.cpu().numpy()
    return run


BACKENDS = {b.name: b for b in (
    Backend('torch', None, ('fp32', 'bf16', 'fp16'), 'torch', 'torch==2.14.1', False, None),
    Backend('onnxruntime', 'onnx', ('fp32',), 'onnxruntime', 'onnxruntime==1.31.1', False, open_onnxruntime),
    Backend('openvino', 'openvino', ('fp32', 'bf16', 'int8'), 'openvino', 'openvino==2026.4.1 nncf==3.4.0', False,
            open_openvino),
    Backend('tensorrt', 'tensorrt', ('fp16', 'fp32'), 'tensorrt', 'tensorrt==11.4.0.106', True, open_tensorrt),
)}


def require_package(module, pip, what):
    """Import `module`; ValueError naming `what` and the pip line when it is not installed."""
    try:
        with hidden_telemetry():
            return importlib.import_module(module)
    except ImportError:
        raise ValueError(f'{what} needs the {module} package, which is not installed here: '
                         f'pip install {pip}') from None


@contextlib.contextmanager
def hidden_telemetry():
    """Import OpenVINO's converter and NNCF with their usage telemetry left out.

    Both create a client id under the home folder and try to send events when `openvino_telemetry` imports;
    each falls back to its own stub when it does not, so it is hidden while they import (this toolkit changes
    nothing in the user's home). Modules already imported keep what they have.
    """
    names = [n for n in sys.modules if n == 'openvino_telemetry' or n.startswith('openvino_telemetry.')]
    kept = {n: sys.modules.pop(n) for n in names}
    sys.modules['openvino_telemetry'] = None
    try:
        yield
    finally:
        sys.modules.pop('openvino_telemetry', None)
        sys.modules.update(kept)


def check_backend(name, precision, cuda):
    """Return the Backend `name` after checking `precision` and the device; ValueError naming the flag."""
    if name not in BACKENDS:
        raise ValueError(f'--backend {name}: expected one of {", ".join(BACKENDS)} (or auto)')
    backend = BACKENDS[name]
    if precision not in backend.precisions:
        raise ValueError(f'--backend {name} --precision {precision}: {name} runs {", ".join(backend.precisions)}')
    if backend.needs_cuda and not cuda:
        raise ValueError(f'--backend {name}: needs CUDA, and this machine has none (REID_DEVICE=cpu or no GPU); '
                         'use --backend openvino or onnxruntime on the CPU')
    return backend


@dataclass(frozen=True)
class BackendChoice:
    """What extracts the features: a backend of BACKENDS at a precision, and why (printed, and in result.txt)."""
    name: str
    precision: str
    reason: str

    def describe(self):
        return f'backend {self.name} {self.precision} ({self.reason})'


def installed(module):
    """True when `module` can be imported here (without importing it)."""
    return importlib.util.find_spec(module) is not None


def torch_precision(runtime):
    """Return the precision name of the runtime's autocast (what --fp16/--bf16/--cpu_bf16 chose for torch)."""
    import torch

    return {torch.bfloat16: 'bf16', torch.float16: 'fp16'}.get(runtime.amp_dtype, 'fp32')


def auto_backend(runtime, opts, single_scale):
    """Return (backend name, reason) of `--backend auto` on this runtime: AUTO_BACKEND for the device, unless the
    request needs torch (--fp16/--bf16, several --ms scales) or the backend's package is missing."""
    from reid.runtime import AUTO_BACKEND

    name = AUTO_BACKEND.get(runtime.device.type, 'torch')
    if name == 'torch':
        return name, f'auto: torch on {runtime.device.type}'
    if getattr(opts, 'fp16', False) or getattr(opts, 'bf16', False):
        return 'torch', 'auto: --fp16/--bf16 are torch autocast'
    if not single_scale:
        return 'torch', 'auto: several --ms scales need torch (an export takes one image size)'
    if not installed(BACKENDS[name].module):
        return 'torch', f'auto: {BACKENDS[name].module} is not installed (pip install {BACKENDS[name].pip})'
    return name, f'auto: fastest measured on {runtime.device.type}'


def choose_backend(opts, runtime, single_scale=True):
    """Return the BackendChoice for --backend and --precision (`opts`) on `runtime`; ValueError naming the flag
    for a combination that cannot run. The precision left unsaid follows --cpu_bf16 (bf16 where the runtime
    chose bf16 autocast) for OpenVINO, fp16 for TensorRT, fp32 for onnxruntime."""
    requested, precision = getattr(opts, 'backend', 'auto') or 'auto', getattr(opts, 'precision', None)
    reason = f'--backend {requested}'
    name = requested
    if requested == 'auto':
        name, reason = auto_backend(runtime, opts, single_scale)
    if name == 'torch':
        if precision:
            raise ValueError(f'--precision {precision}: the backend is torch ({reason}), whose precision is set by '
                             '--fp16, --bf16 or --cpu_bf16; --precision is for --backend onnxruntime, openvino or '
                             'tensorrt')
        return BackendChoice('torch', torch_precision(runtime), reason + f'; {runtime.precision_reason}')
    if not single_scale:
        raise ValueError(f'--backend {name}: --ms with several scales needs --backend torch (an export takes one '
                         'image size)')
    if getattr(opts, 'fp16', False) or getattr(opts, 'bf16', False):
        raise ValueError(f'--backend {name}: --fp16/--bf16 are torch autocast; give --precision instead')
    if precision is None:
        precision = {'openvino': 'bf16' if torch_precision(runtime) == 'bf16' else 'fp32',
                     'tensorrt': 'fp16'}.get(name, 'fp32')
        reason += f'; precision {precision}: {runtime.precision_reason}' if name == 'openvino' else ''
    import torch

    check_backend(name, precision, torch.cuda.is_available() and runtime.device.type == 'cuda')
    require_package(BACKENDS[name].module, BACKENDS[name].pip, f'--backend {name}')
    return BackendChoice(name, precision, reason)


def add_backend_flags(parser):
    """Add --backend and --precision (what runs the network for features) to `parser`."""
    g = parser.add_argument_group('backend', 'what computes the features (the same features, faster or not)')
    g.add_argument('--backend', default='auto', choices=('auto', *BACKENDS),
                   help='torch runs the checkpoint; onnxruntime, openvino and tensorrt run its export, written '
                        'into the run folder on first use and reused (auto: openvino on the CPU, torch on CUDA; '
                        'measured, docs/benchmarks.md)')
    g.add_argument('--precision', default=None, choices=PRECISIONS,
                   help='precision of an exported backend (default: openvino bf16 where the CPU has native bf16 '
                        'and fp32 elsewhere, as --cpu_bf16 auto; tensorrt fp16; onnxruntime fp32); int8: '
                        'openvino quantised by NNCF on the run\'s training images')
    return g
