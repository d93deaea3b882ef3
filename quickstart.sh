#!/usr/bin/env bash
# The whole job on the bundled generated data, on a CPU: make data -> prepare -> train -> test -> evaluate -> demo.
# SIZE (tiny|demo|market), EPOCHS (default: the quick preset's) and SEED override the defaults; the tests run it
# with SIZE=tiny EPOCHS=1.
set -euo pipefail
cd "$(dirname "$0")"
SIZE=${SIZE:-demo}
EPOCHS=${EPOCHS:-}
SEED=${SEED:-0}
PY=${PYTHON:-python3}
DATA=data/$SIZE

$PY prepare.py --make-demo "$DATA" --size "$SIZE"   # deterministic: a re-run rewrites the same files
$PY prepare.py --download_path "$DATA"
# --preset quick: ResNet-18 from scratch at 128x64 (the data's own size), Adam, cosine, label smoothing, BNNeck,
# last stride 1, --cache
$PY train.py --preset quick --name "demo_$SIZE" --data_dir "$DATA/pytorch" ${EPOCHS:+--total_epoch "$EPOCHS"} \
    --train_all --seed "$SEED" --overwrite
$PY test.py --name "demo_$SIZE" --test_dir "$DATA/pytorch" --which_epoch last --multi
$PY evaluate_gpu.py --multi --rerank
$PY demo.py --query_index 7 --test_dir "$DATA/pytorch"
if [ "$SIZE" = demo ] && [ -z "$EPOCHS" ]; then   # measured over seeds 0-2 (python -m bench.quickstart, README)
    echo "expected on the demo set (seeds 0-2, any CPU): test.py Rank@1 71-80 %, mAP 59-65 % (mean 74.5 / 61.3);"
    echo "re-ranked mAP 68-73 %, multi-query + re-ranked mAP 74-80 %. The seed alone moves mAP by about 4 points."
fi
