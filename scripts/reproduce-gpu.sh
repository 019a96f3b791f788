#!/usr/bin/env bash
# Regenerate the GPU measurements under results/cuda/ (needs a CUDA GPU and a CUDA build of
# torch in .venv; scripts/reproduce-results.sh, which runs on a CPU, does not rebuild them).
# Efficiency of pruning (time speedup / FLOPs reduction) in bf16: the embedded tiny-llava, and
# random decoders of LLaVA-1.5-7B's, Qwen2.5-VL-3B's and Gemma 3 4B's shapes (time depends on shapes, not on
# weights; no download). Measured on an NVIDIA H100 80GB (docs/gpu.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
PY=${PY:-.venv/bin/python}
OUT=results/cuda
mkdir -p "$OUT"
source scripts/run.sh  # run CMD...: prints it, runs it, stops it with the script
common="--device cuda --dtype bfloat16 --rounds 15 --json"
# shellcheck disable=SC2086
run "$PY" benchmarks/latency.py --model tiny-llava --data synth8 --batch-size 32 $common > "$OUT/latency-cuda-tiny-llava.json"
# shellcheck disable=SC2086
run "$PY" benchmarks/latency.py --model tiny-llava --data synth8 --batch-size 32 --decoder-shape llava-1.5-7b $common \
  > "$OUT/latency-cuda-llava-1.5-7b.json"
# shellcheck disable=SC2086
run "$PY" benchmarks/latency.py --model tiny-qwen2.5-vl --data synth8-native --batch-size 64 --image-size 256 \
  --decoder-shape qwen2.5-vl-3b $common > "$OUT/latency-cuda-qwen2.5-vl-3b.json"
# shellcheck disable=SC2086
run "$PY" benchmarks/latency.py --model tiny-gemma3 --data synth8 --batch-size 32 --decoder-shape gemma3-4b $common \
  > "$OUT/latency-cuda-gemma3-4b.json"
