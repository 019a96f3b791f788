#!/usr/bin/env bash
# Regenerate every committed file under results/ that a CPU can, in the order the outputs depend
# on each other: on the embedded default model (or MODEL=name) on synth8 (or DATA=name). About
# 3 hours on 2 CPU cores for tiny-llava; every run is resumable: run the script again after an
# interruption and finished evaluations are found in $OUT/search/store.sqlite, not recomputed.
# A results folder holds one model's evaluations: after the model (or a pruner's algorithm
# version) changes, the old runs are refused, so remove $OUT/search first.
# The GPU measurements (results/cuda, results/hardware-*-cuda.json) are scripts/reproduce-gpu.sh's.
#
#   bash scripts/reproduce-results.sh            # tiny-llava: everything
#   STEPS="card runs reports" bash scripts/reproduce-results.sh
#   MODEL=tiny-qwen2.5-vl DATA=synth8-native OUT=results/tiny-qwen2.5-vl bash scripts/reproduce-results.sh
#   MODEL=tiny-gemma3 OUT=results/tiny-gemma3 bash scripts/reproduce-results.sh
#   STEPS=cross bash scripts/reproduce-results.sh   # Table 3 and Fig. 3 across the models' folders
#   MODEL=/models/my-llava OUT=/tmp/mine bash scripts/reproduce-results.sh
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
STEPS=${STEPS:-"card engine runs reports defaults harness page"}
# the results folders of every embedded model, for the reports across models
FOLDERS=${FOLDERS:-"results/search results/tiny-qwen2.5-vl/search results/tiny-gemma3/search"}

source scripts/run.sh  # run CMD...: prints it, runs it, stops it with the script
search() { run "$PB" run --model "$MODEL" --data "$DATA" --limit 64 --out "$SEARCH" "$@"; }
vispco() { search --searcher vispco --param train="$DATA-train" "$@"; }
# the run folder of the given searcher and pruner whose config matches a Python condition on `c`
find_run() {
  "$PY" - "$SEARCH" "$1" "$2" "$3" <<'EOF'
import json, pathlib, sys
folder, searcher, pruner, cond = sys.argv[1:]
for p in sorted(pathlib.Path(folder).glob(f"{searcher}-{pruner}-*")):
    c = json.loads((p / "config.json").read_text())
    if not c.get("pruner_params") and eval(cond):
        print(p)
        break
else:
    sys.exit(f"no {searcher} run of {pruner} in {folder} with {cond}")
EOF
}
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
      for pruner in fastv fitprune; do
        search --searcher random --pruner $pruner --n 42 --budgets 0.3 0.4 0.5 0.6 0.7 0.8 0.9
        vispco --pruner $pruner
      done
      # VisPCO relaxes SparseVLM's ranking only (its recycling adds tokens a masked forward cannot):
      # Table 1 compares that ranking's sampled and VisPCO schedules
      search --searcher random --pruner sparsevlm --pruner-param recycle=0 --n 42 --budgets 0.3 0.4 0.5 0.6 0.7 0.8 0.9
      vispco --pruner sparsevlm --pruner-param recycle=0
      search --searcher grid --pruner fastv --n 700
      search --searcher random --pruner fastv --n 100
      for n in 40 80 160; do  # the paper's Random-N rows of Table 2, at its one budget
        search --searcher random --pruner fastv --n $n --budgets 0.5
      done
      search --searcher preset --pruner fastv --param names=vtw --budgets 0.5
      search --searcher preset --pruner fastv --param names=aim --budgets 0.5
      search --searcher nsga2 --pruner fastv --n 100 --param population=20
      search --searcher pymoo --pruner fastv --n 100 --param population=20
      search --searcher gsearch --pruner fastv --n 100
      vispco --pruner fastv --param preset=paper
      for kernel in psigmoid exponential linear gentle multistep free; do
        vispco --pruner fastv --param kernel=$kernel
      done ;;
    reports)  # Table 4's timings first (they read the default VisPCO run's pick), then every report
      vis=$(find_run vispco fastv "not c['params'].keys() - {'train'}")
      grid=$(find_run grid fastv "c['n'] == 700")
      random=$(find_run random fastv "c['n'] == 42")
      run "$PY" benchmarks/hardware.py --model "$MODEL" --data "$DATA" --vispco "$vis" --out "$OUT/hardware-$MODEL.json"
      run "$PY" benchmarks/landscape_holdout.py --results "$SEARCH" --out "$OUT/landscape-holdout-$DATA.json"
      run "$PB" frontier "$vis" --vs "$grid" > "$OUT/vispco-vs-grid.txt"
      run "$PB" frontier "$vis" --vs "$random" > "$OUT/vispco-vs-random-at-budgets.txt"
      run "$PB" report all --results "$SEARCH" --out "$OUT" ;;
    defaults)  # VisPCO's configurations on held-out training questions (which default to keep)
      run "$PY" benchmarks/vispco_defaults.py --model "$MODEL" --data "$DATA" --out "$OUT/vispco-defaults.json" ;;
    cross)  # across the embedded models' folders that exist: Table 3 and Fig. 3 (middle)
      present=""
      for f in $FOLDERS; do if [ -d "$f" ]; then present="$present $f"; else echo "(no $f yet)" >&2; fi; done
      # shellcheck disable=SC2086
      run "$PB" report table3 --results $present --out results
      # shellcheck disable=SC2086
      run "$PB" report fig3-models --results $present --out results ;;
    page)  # docs/results.md, from every results folder
      run "$PY" scripts/results_page.py --results results --out docs/results.md ;;
    harness)  # the search harness's own benchmarks
      run "$PY" benchmarks/eval_throughput.py --model "$MODEL" --data "$DATA" --json > "$OUT/eval-throughput.json"
      run "$PY" benchmarks/ray_throughput.py --model "$MODEL" --data "$DATA" --json > "$OUT/ray-throughput.json"
      run "$PY" benchmarks/kill_resume.py --json > "$OUT/kill-resume.json" ;;
    *) echo "unknown step $step (card engine runs reports defaults cross harness page)" >&2; exit 2 ;;
  esac
done
