#!/usr/bin/env bash
# kappa="auto" against the tuned kappa 8 on the glyphs 8-epoch protocol (recipes/configs/glyphs_pretrained_8ep.yaml,
# checkpoints selected and compared on the 84 validation classes), 3 seeds, on the CPU: two streams of one thread
# each (auto, kappa 8), side by side so that both meet the same machine load. Needs `make weights glyphs`.
# Writes benchmarks/results/swap_in_defaults/glyphs_8ep_kappa/{auto,kappa8}_margin0.1/seed{0,1,2}/runs.csv and the
# three seeds together in {auto,kappa8}_margin0.1/runs.csv; compare with benchmarks/paired_seeds.py (BENCHMARKS.md).
set -uo pipefail
out=${OUT:-benchmarks/results/swap_in_defaults/glyphs_8ep_kappa}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TQDM_DISABLE=1 OMP_NUM_THREADS=1
run_stream() {  # name kappa
  for seed in 0 1 2; do
    [ -f "$out/$1/seed$seed/runs.csv" ] && continue   # a rerun continues where an interrupted one stopped
    rm -rf "$out/$1/seed$seed"
    .venv/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
      benchmarks/benchmark.py --config recipes/configs/glyphs_pretrained_8ep.yaml --data-root data/glyphs \
      --out "$out/$1/seed$seed" --losses vmf --seeds "$seed" --no-baseline \
      --set loss.params.vmf.kappa=$2 loss.params.vmf.margin=0.1 > "$out/$1-seed$seed.log" 2>&1
  done
}
mkdir -p "$out"
run_stream auto_margin0.1 auto &
run_stream kappa8_margin0.1 8 &
wait
for setting in auto_margin0.1 kappa8_margin0.1; do  # one CSV of the three seeds: its header once
  awk 'FNR > 1 || NR == 1' "$out/$setting"/seed{0,1,2}/runs.csv > "$out/$setting/runs.csv"
done
