#!/usr/bin/env bash
# The whole job on the bundled generated data, on a CPU: make data -> prepare -> train -> test -> evaluate -> demo.
# SIZE (tiny|demo|market) and EPOCHS override the defaults; the tests run it with SIZE=tiny EPOCHS=1.
set -euo pipefail
cd "$(dirname "$0")"
SIZE=${SIZE:-demo}
EPOCHS=${EPOCHS:-6}
PY=${PYTHON:-python3}
DATA=data/$SIZE

$PY prepare.py --make-demo "$DATA" --size "$SIZE"   # deterministic: a re-run rewrites the same files
$PY prepare.py --download_path "$DATA"
# --preset quick: ResNet-18 from scratch at 64x32, Adam, cosine, label smoothing, BNNeck, last stride 1, --cache
$PY train.py --preset quick --name "demo_$SIZE" --data_dir "$DATA/pytorch" --total_epoch "$EPOCHS" --train_all \
    --overwrite
$PY test.py --name "demo_$SIZE" --test_dir "$DATA/pytorch" --which_epoch last --multi
$PY evaluate_gpu.py --multi --rerank
$PY demo.py --query_index 7 --test_dir "$DATA/pytorch"
