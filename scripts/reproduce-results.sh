#!/usr/bin/env bash
# Regenerate everything under results/ on the embedded default model (or MODEL=name) on synth8 (or DATA=name),
# in the order the outputs depend on each other. About 2.5 hours on 2 CPU cores; the grid is ~30 min.
# Every run is resumable: run the script again after an interruption and finished evaluations
# are found in results/search/store.sqlite, not recomputed. After a new model is shipped,
# remove results/search first (a results folder holds one model's evaluations).
#
#   bash scripts/reproduce-results.sh            # everything
#   STEPS="card runs reports" bash scripts/reproduce-results.sh
#   MODEL=/models/my-llava OUT=/tmp/mine bash scripts/reproduce-results.sh
#   MODEL=tiny-qwen2.5-vl DATA=synth8-native OUT=results/tiny-qwen2.5-vl STEPS="card runs" bash scripts/reproduce-results.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
BIN=${BIN:-.venv/bin}
PB="$BIN/paretobench"
PY="$BIN/python"
MODEL=${MODEL:-$("$PY" -c "from paretobench.registry import DEFAULT_MODEL; print(DEFAULT_MODEL)")}
DATA=${DATA:-synth8}  # synth8-native for native-resolution models (VisPCO trains on $DATA-train)
OUT=${OUT:-results}
SEARCH=$OUT/search
STEPS=${STEPS:-"card engine runs reports harness"}

run() { echo "+ $*" >&2; "$@"; }
search() { run "$PB" run --model "$MODEL" --data "$DATA" --limit 64 --out "$SEARCH" "$@"; }
vispco() { search --searcher vispco --param train="$DATA-train" "$@"; }
mkdir -p "$OUT"

for step in $STEPS; do
  case $step in
    card)  # the model card, its probes, and the unpruned evaluation
      run "$PB" model-card --model "$MODEL" --json > "$OUT/$MODEL-card.json"
      run "$PB" eval --model "$MODEL" --data "$DATA" --json > "$OUT/$MODEL-$DATA.json" ;;
    engine)  # latency against FLOPs, and the pruning landscape at 50%
      run "$PY" benchmarks/latency.py --model "$MODEL" --data "$DATA" --rounds 9 --json > "$OUT/latency-$MODEL.json"
      run "$PY" benchmarks/landscape.py --model "$MODEL" --data "$DATA" --out "$OUT/landscape-$DATA.json" ;;
    runs)  # the stored runs every table is built from (Table 1's first: they are the quickest)
      for pruner in fastv sparsevlm fitprune; do
        search --searcher random --pruner $pruner --n 42 --budgets 0.3 0.4 0.5 0.6 0.7 0.8 0.9
        vispco --pruner $pruner
      done
      search --searcher grid --pruner fastv --n 700
      search --searcher random --pruner fastv --n 100
      search --searcher nsga2 --pruner fastv --n 100 --param population=20
      search --searcher pymoo --pruner fastv --n 100 --param population=20
      search --searcher gsearch --pruner fastv --n 100
      for kernel in psigmoid exponential linear gentle multistep free; do
        vispco --pruner fastv --param kernel=$kernel
      done ;;
    reports)  # Table 4's timings first (it reads the default VisPCO run's pick), then every report
      vispco=$("$PY" -c "import json, pathlib; print(next(str(p) for p in sorted(pathlib.Path('$SEARCH').glob('vispco-fastv-*'))
                                                  if 'kernel' not in json.loads((p / 'config.json').read_text())['params']))")
      run "$PY" benchmarks/hardware.py --model "$MODEL" --data "$DATA" --vispco "$vispco" --out "$OUT/hardware-$MODEL.json"
      run "$PB" report all --results "$SEARCH" --out "$OUT" ;;
    harness)  # the search harness's own benchmarks
      run "$PY" benchmarks/eval_throughput.py --model "$MODEL" --data "$DATA" --json > "$OUT/eval-throughput.json"
      run "$PY" benchmarks/ray_throughput.py --model "$MODEL" --data "$DATA" --json > "$OUT/ray-throughput.json"
      run "$PY" benchmarks/kill_resume.py --json > "$OUT/kill-resume.json" ;;
    *) echo "unknown step $step (card engine runs reports harness)" >&2; exit 2 ;;
  esac
done
