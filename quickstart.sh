#!/usr/bin/env bash
# The whole job on the bundled generated data, on a CPU: make data -> prepare -> train -> test -> evaluate -> demo.
# SIZE (tiny|demo|market) and EPOCHS override the defaults; the tests run it with SIZE=tiny EPOCHS=1.
set -euo pipefail
cd "$(dirname "$0")"
SIZE=${SIZE:-demo}
EPOCHS=${EPOCHS:-30}
PY=${PYTHON:-python3}
DATA=data/$SIZE

$PY prepare.py --make-demo "$DATA" --size "$SIZE"   # deterministic: a re-run rewrites the same files
$PY prepare.py --download_path "$DATA"
$PY train.py --name "demo_$SIZE" --data_dir "$DATA/pytorch" --backbone resnet18 --scratch --h 64 --w 32 \
    --batchsize 32 --lr 0.05 --warm_epoch 1 --total_epoch "$EPOCHS" --train_all --overwrite
$PY test.py --name "demo_$SIZE" --test_dir "$DATA/pytorch" --which_epoch last --multi
$PY evaluate_gpu.py --multi --rerank
$PY demo.py --query_index 7 --test_dir "$DATA/pytorch"
