#!/usr/bin/env bash
# Every CUDA path once, with its figures, in at most 8 minutes on one GPU: train.py (ResNet-50, 256x128, one epoch
# on the Market-sized generated set) under --fp16, under --bf16 and with --compile (img/s, epoch seconds, peak
# torch.cuda.max_memory_allocated); test.py's extraction; evaluate_gpu.py --rerank and --rerank gnn at Market size
# (and the GNN re-ranking alone, CUDA-synchronised, with its peak memory); torchrun with
# NCCL (one process per GPU, at most two); export.py to ONNX; TensorRT (where the tensorrt package is installed):
# the engine's build time, test.py --backend tensorrt, its img/s against torch fp16 and the features' cosine.
#     bash bench/gpu_check.sh [WORKDIR]          # WORKDIR (default: a new temporary folder) keeps the data and runs
# Without CUDA (or with REID_DEVICE=cpu) it says so in one line and exits 0. ImageNet weights are not needed
# (--scratch): the check is of the code paths and their speed, not of accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
gpus=$($PY -c 'import torch; from reid.runtime import cuda_available; print(torch.cuda.device_count() if cuda_available() else 0)')
if [ "$gpus" = 0 ]; then
    echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False or REID_DEVICE=cpu); nothing was run"
    exit 0
fi
W=${1:-$(mktemp -d -t gpu_check.XXXXXX)}
mkdir -p "$W"
LOG="$W/gpu_check.log"
start=$(date +%s)
step() { echo; echo "== $* ($(( $(date +%s) - start )) s so far)"; }
run() { "$@" 2>>"$LOG.err" | tee -a "$LOG"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "cuDNN", torch.backends.cudnn.version(), "|", torch.cuda.get_device_name(0))'

step "data: the Market-sized generated set (12,936 train, 3,368 query, 19,732 gallery images)"
[ -d "$W/raw" ] || run $PY prepare.py --make-demo "$W/raw" --size market > /dev/null
[ -d "$W/pytorch" ] || run $PY prepare.py --download_path "$W/raw" --save_path "$W/pytorch" | tail -3
TRAIN=(--data_dir "$W/pytorch" --model_dir "$W/model" --train_all --scratch --batchsize 64 --total_epoch 1
       --num_workers 8 --overwrite)

step "train.py --fp16, ResNet-50 256x128, one epoch"
run $PY train.py --name fp16 --fp16 "${TRAIN[@]}" | grep -E '^epoch|bf16|device'

step "train.py --bf16 --cache (whole batches augmented on the GPU)"
run $PY train.py --name bf16 --bf16 --cache "${TRAIN[@]}" | grep -E '^epoch|device'

step "train.py --fp16 --compile (torch.compile; the first epoch includes the compilation)"
run $PY train.py --name compiled --fp16 --compile "${TRAIN[@]}" | grep -E '^epoch|device'

step "test.py --fp16: extraction of query and gallery, then the metrics"
t=$SECONDS
run $PY test.py --name fp16 --model_dir "$W/model" --test_dir "$W/pytorch" --fp16 --result "$W/pytorch_result.mat" \
    | grep -E 'Rank@1|mAP'
echo "test.py: $(( SECONDS - t )) s for 23,100 images (start-up and the image check included)" | tee -a "$LOG"

step "evaluate_gpu.py --rerank at Market size (on CUDA)"
t=$SECONDS
run $PY evaluate_gpu.py --result "$W/pytorch_result.mat" --rerank | tail -3
echo "evaluate_gpu.py --rerank: $(( SECONDS - t )) s (the plain evaluation too, start-up included)" | tee -a "$LOG"

step "evaluate_gpu.py --rerank gnn at Market size (on CUDA), then the GNN re-ranking alone"
t=$SECONDS
run $PY evaluate_gpu.py --result "$W/pytorch_result.mat" --rerank gnn | tail -3
echo "evaluate_gpu.py --rerank gnn: $(( SECONDS - t )) s (the plain evaluation too, start-up included)" | tee -a "$LOG"
run $PY - "$W/pytorch_result.mat" <<'PYEOF'
import sys, time
import torch
from reid.evaluation import metrics
from reid.evaluation.gnn_rerank import gnn_rerank_blocks
from reid.evaluation.results import load_result
qf, ql, qc, gf, gl, gc = load_result(sys.argv[1])
qf, gf = torch.from_numpy(qf).cuda(), torch.from_numpy(gf).cuda()
for attempt in ('first (warm-up)', 'second'):
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); start = time.perf_counter()
    res = metrics.compute_cmc_map_from_blocks(gnn_rerank_blocks(qf, gf), ql, qc, gl, gc)
    torch.cuda.synchronize()
    print(f'GNN re-ranking + metrics on CUDA, {attempt} run: {time.perf_counter() - start:.2f} s, peak '
          f'{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB, Rank@1 {res["cmc"][0]:.4f} mAP {res["mAP"]:.4f}')
PYEOF

n=$(( gpus < 2 ? gpus : 2 ))
step "torchrun --nproc_per_node $n train.py (NCCL, DDP)"
run $PY -m torch.distributed.run --nproc_per_node "$n" --master_port 29517 train.py --name ddp --fp16 \
    "${TRAIN[@]}" | grep -E '^epoch|device'
$PY -c "import yaml; r = yaml.safe_load(open('$W/model/ddp/opts.yaml'))['runtime'][0]; print('torchrun:', r['processes'], 'process(es), process group', r['process_group'], '|', r['gpu'])" | tee -a "$LOG"

step "export.py: ONNX, checked with onnxruntime"
run $PY export.py --name fp16 --model_dir "$W/model" | tail -1

step "TensorRT: export.py --format tensorrt (fp16 engine), test.py --backend tensorrt against torch --fp16"
if $PY -c 'import tensorrt' 2>/dev/null; then
    t=$SECONDS
    run $PY export.py --name fp16 --model_dir "$W/model" --format tensorrt | tail -1
    echo "TensorRT engine build (ONNX export, build, check): $(( SECONDS - t )) s" | tee -a "$LOG"
    t=$SECONDS
    run $PY test.py --name fp16 --model_dir "$W/model" --test_dir "$W/pytorch" --backend tensorrt \
        --result "$W/trt_result.mat" | grep -E 'Rank@1|backend'
    echo "test.py --backend tensorrt: $(( SECONDS - t )) s for 23,100 images (start-up included)" | tee -a "$LOG"
    run $PY - "$W" <<'PYEOF'
import sys, time
import numpy as np, scipy.io, torch
from reid.api import load_network
from reid.export import FORMATS
from reid.models.features import FeatureExtractor, fuse_conv_bn
w = sys.argv[1]
a, b = scipy.io.loadmat(f'{w}/pytorch_result.mat'), scipy.io.loadmat(f'{w}/trt_result.mat')
cos = (a['gallery_f'] * b['gallery_f']).sum(1)
print(f'TensorRT fp16 vs torch --fp16 gallery features: cosine min {cos.min():.5f} mean {cos.mean():.6f}')
model, spec, _ = load_network(f'{w}/model/fp16', 'last')
net = FeatureExtractor(fuse_conv_bn(model)).cuda().eval()
engine = FORMATS['tensorrt'].open(f'{w}/model/fp16/net_last_fp16.engine', 'fp16')
x = torch.randn(256, 3, *spec.input_size())
def rate(fn):
    fn(); torch.cuda.synchronize(); best = 1e9
    for _ in range(5):
        s = time.perf_counter(); fn(); torch.cuda.synchronize(); best = min(best, time.perf_counter() - s)
    return 256 / best
with torch.inference_mode(), torch.autocast('cuda', torch.float16):
    r_torch = rate(lambda: net(x.cuda()).float().cpu())
r_trt = rate(lambda: engine(x.numpy()))
print(f'batch 256 from host memory: torch fp16 {r_torch:.0f} img/s, TensorRT fp16 {r_trt:.0f} img/s ({r_trt / r_torch:.2f}x)')
PYEOF
else
    echo "tensorrt is not installed here (pip install tensorrt==11.4.0.106): the TensorRT step was skipped" | tee -a "$LOG"
fi

step "done in $(( $(date +%s) - start )) s; the log: $LOG (stderr: $LOG.err)"
