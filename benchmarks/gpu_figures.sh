#!/usr/bin/env bash
# The GPU figures issue 24 asks for, in one run that fits one 10-minute call of a lent machine:
#
#   bash benchmarks/gpu_figures.sh [OUT_DIR]          # on the GPU machine, the project installed
#   DEVICE=cpu SCALE=0.02 IMAGE_OVERRIDES="data.batch_size=8 data.resolution=32" \
#       FAST_PATHS_RECIPE=toy bash benchmarks/gpu_figures.sh /tmp/f   # the same commands, tiny, on a CPU
#
# On this project's 2-core CPU the tiny check takes 7-8 minutes: mlp32, toy and throughput finish
# (exit 0); the bf16 rows and fast_paths run but overrun their limits (bf16 convolutions are slow
# on a CPU; exit 124, each run stopped cleanly by the SIGTERM of `timeout`). On a GPU every row is
# sized to finish inside its limit; that is still to be seen, since no GPU has been lent yet.
#
# Rows: DCGAN 64 px bf16 batch 128, mlp32 and toy against Lightning's manual optimization and the
# plain loop (time, images/s, host syncs per iteration), DCGAN 64 px compiled, the speed switches
# and every recipe's s/kimg. Each command's output goes to OUT_DIR/<name>.txt (with its exit
# status), the GPU's name to OUT_DIR/gpu.txt; a command that overruns its limit is cut, the rest
# still run. Copy the tables into benchmarks/README.md with the GPU's name and the date.
set -uo pipefail
cd "$(dirname "$0")"

out="$(realpath -m "${1:-${OUT:-gpu_figures}}")"
mkdir -p "$out"
device="${DEVICE:-cuda}"
scale="${SCALE:-1}"
# Extra Hydra overrides for the DCGAN 64 px rows (a CPU check shrinks them with these).
read -r -a image_overrides <<<"${IMAGE_OVERRIDES:-}"

# Iterations scaled by SCALE, never below what the benchmarks can time.
n() { python3 -c "print(max(round($1 * $scale), $2))"; }

run() {  # run NAME SECONDS SCRIPT ARGS...
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit} s): python $*"
    timeout "$limit" python "$@" >"$out/$name.txt" 2>&1
    echo "exit status $?" >>"$out/$name.txt"
    grep -v "Run directory\|available:" "$out/$name.txt" | tail -n 9
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || echo "no nvidia-smi"; date -u; git log -1 --format=%h; } >"$out/gpu.txt" 2>&1
cat "$out/gpu.txt"

side_by_side=(--kinds template lightning plain --in-process --device "$device")
run dcgan64_bf16 120 vs_plain_loop.py --recipe dcgan64 --precision bf16-mixed "${side_by_side[@]}" \
    --iterations "$(n 300 12)" --warmup "$(n 50 5)" --repeats 5 --overrides "${image_overrides[@]}"
run mlp32 70 vs_plain_loop.py --recipe mlp32 "${side_by_side[@]}" \
    --iterations "$(n 400 12)" --warmup "$(n 60 5)" --repeats 7
run toy 50 vs_plain_loop.py --recipe toy "${side_by_side[@]}" \
    --iterations "$(n 400 12)" --warmup "$(n 60 5)" --repeats 7
run dcgan64_bf16_compiled 120 vs_plain_loop.py --recipe dcgan64 --precision bf16-mixed \
    --overrides train.compile=true "${image_overrides[@]}" --kinds template plain --in-process --device "$device" \
    --iterations "$(n 300 12)" --warmup "$(n 100 5)" --repeats 3
run fast_paths 100 fast_paths.py --recipe "${FAST_PATHS_RECIPE:-dcgan64}" --device "$device" \
    --iterations "$(n 200 12)" --warmup "$(n 40 5)" --repeats 2
run throughput 80 throughput.py --device "$device" --iterations "$(n 100 12)" --warmup "$(n 20 5)" --repeats 1
echo "outputs in $out"
