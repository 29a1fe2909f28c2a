#!/usr/bin/env bash
# The pretrained emoji benchmark on a lent CUDA machine, as parallel lanes of benchmarks/benchmark.py.
#
#   bash benchmarks/gpu_pretrained.sh LANE_SECONDS 'NAME|ARGS' ['NAME|ARGS' ...]
#
# Each 'NAME|ARGS' is one lane: `accelerate launch benchmarks/benchmark.py --out results/NAME ARGS`, all lanes at once
# (one GPU, 16 cores: each lane gets two loader workers and two threads). A lane that outlives LANE_SECONDS is
# stopped; its finished runs are kept in its runs.csv, and rerunning the lane with results/NAME carried back resumes.
# Expects .devbundle/ (git-excluded, carried): emoji.tar.gz (data/emoji), tf_efficientnet_lite0.pth (`make weights`)
# and whl/ (pytorch-metric-learning, faiss-cpu) for a machine without a package index. Writes $OUT/results.tgz:
# every lane's runs.csv, summary.md, log, and each run's config and metric logs (no weights).
set -uo pipefail
out=${OUT:-gpu-results}
lane_seconds=$1
shift
mkdir -p "$out" data results
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .devbundle/whl/*.whl || exit 1
export PYTHONPATH="$PWD:/tmp/site" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
test -d data/emoji/train || tar xzf .devbundle/emoji.tar.gz -C data || exit 1
cp -n .devbundle/tf_efficientnet_lite0.pth data/
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, timm, pytorch_metric_learning as p, faiss; print('torch', torch.__version__, 'timm', timm.__version__, 'pml', p.__version__, 'faiss', faiss.__version__)"
start=$(date +%s)
for lane in "$@"; do
  name=${lane%%|*}
  args=${lane#*|}
  # shellcheck disable=SC2086  # ARGS is a word list on purpose
  timeout "$lane_seconds" python3 -m accelerate.commands.launch --num_processes 1 --num_machines 1 --dynamo_backend no \
    benchmarks/benchmark.py --out "results/$name" $args > "results/$name.log" 2>&1 &
done
wait
echo "lanes done in $(( $(date +%s) - start )) s"
for lane in "$@"; do
  name=${lane%%|*}
  echo "== $name"; grep -v "it/s\]" "results/$name.log" | tail -4
done
find results -name "*.csv" -o -name "*.md" -o -name "*.log" -o -name "metrics.json*" -o -name "config.yaml" \
  -o -name "train_steps.jsonl" | tar czf "$out/results.tgz" -T -
