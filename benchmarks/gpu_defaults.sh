#!/usr/bin/env bash
# The GPU checks of the defaults work, in one run on a lent CUDA machine: the loss's unit tests on CUDA (kappa
# settings, fp16 casts, empty batches), then the defaults benchmark on Fashion-MNIST's demo protocol
# (recipes/configs/fashion_mnist.yaml): every registry loss at PML's library defaults and vMF at its own, each loss in
# its own process, all side by side on the one GPU. Needs pytorch-metric-learning as a wheel in .whl/ and the four
# Fashion-MNIST IDX files in data/fashion-mnist (both carried). Writes $OUT/gpu.txt, $OUT/pytest_cuda.log and
# $OUT/fm_defaults.tar.gz (every benchmark folder's runs.csv, summary.md and log).
set -uo pipefail
out=${OUT:-gpu-defaults-logs}
mkdir -p "$out"
budget=${BUDGET_S:-420}  # seconds for the benchmark; rows finished by then are kept
seeds=${SEEDS:-0 1 2 3 4}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
if ! python3 -c "import pytorch_metric_learning" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/pytorch_metric_learning*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TQDM_DISABLE=1 OMP_NUM_THREADS=1
python3 -c "import torch, timm, pytorch_metric_learning as p; print('torch', torch.__version__, 'timm', timm.__version__, 'pml', p.__version__, torch.cuda.get_device_name())" | tee -a "$out/gpu.txt"
PML_VMF_TEST_DEVICE=cuda timeout 120 python3 -m pytest -q -p no:cacheprovider tests/unit/test_kappa.py \
  tests/unit/test_vmf_loss.py tests/unit/test_vmf_options.py tests/unit/test_global_mean_miner.py > "$out/pytest_cuda.log" 2>&1
tail -3 "$out/pytest_cuda.log"
bench=$out/fm_defaults
mkdir -p "$bench"
launch() {  # name, then benchmark arguments
  local name=$1; shift
  timeout "$budget" python3 -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision no \
    --dynamo_backend no benchmarks/benchmark.py --config recipes/configs/fashion_mnist.yaml --data-root data/fashion-mnist \
    --out "$bench/$name" --seeds $seeds --no-baseline "$@" > "$bench/$name.log" 2>&1 &
}
start=$(date +%s)
# PML's library defaults: the registry's are PML's except triplet's margin (0.1 there, 0.05 in PML).
# vMF at its defaults (kappa auto, margin 0.1), with the paper's margin 0, and at the demo config's kappa 16. (The
# results' vmf_adaptive rows ran AdaCos's dynamic scale with the code of commit e34f2f1.)
launch vmf_auto_margin0.1 --losses vmf --set loss.params.vmf.kappa=auto loss.params.vmf.margin=0.1 data.num_workers=2
launch vmf_auto --losses vmf --set loss.params.vmf.kappa=auto loss.params.vmf.margin=0 data.num_workers=2
launch vmf_kappa16 --losses vmf --set loss.params.vmf.kappa=16 loss.params.vmf.margin=0 data.num_workers=2
launch triplet --losses triplet --set loss.params.triplet.margin=0.05 data.num_workers=2
for loss in contrastive multi_similarity circle supcon proxy_anchor proxy_nca normalized_softmax arcface cosface soft_triple; do
  launch "$loss" --losses "$loss" --set data.num_workers=1
done
wait
echo "benchmark wall seconds: $(( $(date +%s) - start ))" | tee -a "$out/gpu.txt"
nvidia-smi --query-gpu=name,utilization.gpu,memory.used --format=csv >> "$out/gpu.txt"
(cd "$out" && tar czf fm_defaults.tar.gz --exclude='*/runs/*/checkpoints' --exclude='*.safetensors' --exclude='*.pt' fm_defaults)
rm -rf "$bench"
