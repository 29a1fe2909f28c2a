#!/usr/bin/env bash
# kappa="auto" against the tuned kappa on emoji's 8-epoch protocol (recipes/configs/emoji_pretrained_8ep.yaml,
# validation classes), in one run on a lent CUDA machine: every (setting, seed) in its own process, side by side on
# the one GPU. Needs pytorch-metric-learning as a wheel in .whl/, data/emoji and data/tf_efficientnet_lite0.pth
# (carried). Writes $OUT/gpu.txt and $OUT/emoji_kappa.tar.gz (each run's runs.csv, summary.md, log).
set -uo pipefail
out=${OUT:-gpu-kappa-logs}
mkdir -p "$out"
budget=${BUDGET_S:-300}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
if ! python3 -c "import pytorch_metric_learning" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/pytorch_metric_learning*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TQDM_DISABLE=1 OMP_NUM_THREADS=1
bench=$out/emoji_kappa
mkdir -p "$bench"
start=$(date +%s)
# (The results' adaptive_margin0.1 rows ran AdaCos's dynamic scale with the code of commit e34f2f1.)
for setting in "kappa8_margin0.1 8 0.1" "auto_margin0.1 auto 0.1" "auto_margin0 auto 0"; do
  set -- $setting
  for seed in 0 1 2; do
    timeout "$budget" python3 -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision no \
      --dynamo_backend no benchmarks/benchmark.py --config recipes/configs/emoji_pretrained_8ep.yaml --data-root data/emoji \
      --out "$bench/$1/seed$seed" --losses vmf --seeds "$seed" --no-baseline \
      --set loss.params.vmf.kappa=$2 loss.params.vmf.margin=$3 data.num_workers=1 > "$bench/$1-seed$seed.log" 2>&1 &
  done
done
wait
echo "benchmark wall seconds: $(( $(date +%s) - start ))" | tee -a "$out/gpu.txt"
(cd "$out" && tar czf emoji_kappa.tar.gz --exclude='*/runs/*/checkpoints' --exclude='*.safetensors' --exclude='*.pt' --exclude='*.png' emoji_kappa)
rm -rf "$bench"
