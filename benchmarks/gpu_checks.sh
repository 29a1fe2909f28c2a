#!/usr/bin/env bash
# The GPU checks of a session lent a CUDA machine, in one run: the test suite on CUDA, the loss benchmark, the
# recipe throughput in bf16 and, where data/emoji was carried, two losses of the emoji benchmark at 224 px.
# Needs pytorch-metric-learning as a wheel in .whl/ where the machine has no package index (see CHANGELOG notes).
# Writes its logs to $OUT (or ./gpu-check-logs).
set -uo pipefail
out=${OUT:-gpu-check-logs}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
if ! python3 -c "import pytorch_metric_learning" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
python3 -c "import torch, pytorch_metric_learning as p; print('torch', torch.__version__, 'pml', p.__version__, torch.cuda.get_device_name())" | tee -a "$out/gpu.txt"
PML_VMF_TEST_DEVICE=cuda python3 -m pytest tests -q -p no:cacheprovider 2>&1 | tee "$out/pytest_cuda.log"
python3 benchmarks/bench_loss.py --device cuda --rounds 50 --inner 20 2>&1 | tee "$out/bench_loss_cuda.md"
python3 benchmarks/bench_loss.py --device cuda --rounds 3 --inner 5 --num-classes 11318 --profile > "$out/profile_cuda.txt" 2>&1
# Recipes: the recipe against a bare loop on CUDA in bf16, at a realistic size.
python3 benchmarks/recipe_throughput.py --device cuda --mixed-precision bf16 --steps 30 --rounds 5 \
  model.backbone=resnet50 data.image_size=224 data.num_workers=8 2>&1 | grep -v "it/s\]" | tee "$out/throughput_cuda_bf16.md"
# Benchmark: two losses on the emoji set at 224 px in bf16, where the image folder was carried to data/emoji.
if [ -d data/emoji/train ]; then
  python3 -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision bf16 --dynamo_backend no \
    benchmarks/benchmark.py --config recipes/configs/emoji.yaml --data-root data/emoji --out "$out/emoji_cuda_bf16" \
    --losses vmf triplet --seeds 0 --set data.image_size=224 data.num_workers=8 2>&1 | grep -v "it/s\]" | tail -20
fi
