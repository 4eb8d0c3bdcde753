#!/usr/bin/env bash
# Every check that needs a GPU, in one run (sized for the project's 15-minute device lease):
# the CUDA tests, `cascade-rcnn benchmark` (inference fps and memory, --train s/iter and
# "Mem (GB)") for Cascade R-CNN R50 and Cascade Mask R-CNN R50 in fp32, fp16 and bf16, and the two
# peer comparisons against torchvision's Mask R-CNN (ours at each precision). Results land in $OUT (default gpu_results/):
# cuda_tests.log, benchmark.jsonl, inference_vs_torchvision.jsonl, train_step.jsonl.
#
#   bash benchmarks/gpu_checks.sh                      # on a machine with CUDA and this repo's deps
#   DEVICE=cpu IMAGES=1 ITERS=1 MODELS=cascade_rcnn_r18w32_fpn_256 PEERS=0 PRECISIONS=fp32 bash benchmarks/gpu_checks.sh
#
# Uses the `python3` on PATH with the package from src/ (no install step). A machine without
# pycocotools needs its wheel first: `pip download --no-deps --only-binary=:all: pycocotools`
# for that machine's Python, then `pip install --target DIR` it and put DIR on PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_results}
device=${DEVICE:-cuda}
images=${IMAGES:-50}
iterations=${ITERS:-10}
models=${MODELS:-cascade_rcnn_r50_fpn_1x_coco cascade_mask_rcnn_r50_fpn_1x_coco}
mkdir -p "$out"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
status=0
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name() if torch.cuda.is_available() else '')" | tee "$out/cuda_tests.log"
python3 -m pytest tests/test_predict.py tests/test_losses.py tests/test_cli.py -q -rs -k cuda -p no:cacheprovider \
    2>&1 | tee -a "$out/cuda_tests.log" || status=1
for model in $models; do
    for precision in ${PRECISIONS:-fp32 fp16 bf16}; do
        python3 -m cascade_rcnn benchmark --model "$model" --device "$device" --images "$images" --train \
            --iterations "$iterations" --precision "$precision" --json \
            | tee -a "$out/benchmark.jsonl" || status=1
    done
done
if [ "${PEERS:-1}" = 1 ]; then
    python3 benchmarks/inference.py --device "$device" --repeats 20 --paths fast exact fp16 bf16 | tee "$out/inference_vs_torchvision.jsonl" || status=1
    python3 benchmarks/train_step.py --device "$device" --steps 10 --precisions fp32 fp16 bf16 | tee "$out/train_step.jsonl" || status=1
fi
exit $status
