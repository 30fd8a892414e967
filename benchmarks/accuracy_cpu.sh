#!/usr/bin/env bash
# The lever tables of docs/benchmarks.md: trains a set of configs from scratch for the same wall-clock budget, then
# prints config, minutes, epochs, held-out mIoU, boundary scores, classes at zero IoU, params and GFLOPs from the run
# folders (accuracy_table.py: segkit.compare scores every run on the same held-out items at the largest trained size's
# labels, or LABELS, each model fed at its trained size). Two sets of configs, one lever per file:
#   benchmarks/ablations/  levers on the Fast-SCNN recipe with plain cross-entropy (the default set: 15 configs, two
#                          at a time x 25 min, about 3 h 30 min);
#   benchmarks/levers/     levers on the recipe: baseline.yaml is it with OHEM alone, as the 25-minute table measured
#                          it; recipe-*.yaml change a shipped recipe (the 35-minute one; recipe-140min-zoom the
#                          140-minute one); docs/benchmarks.md gives each CONFIGS.
# Shipped configs work the same (the budget tables, and the CamVid table with DATA=../shared/data/camvid11_large).
#
# Run from anywhere:  bash benchmarks/accuracy_cpu.sh
# Budget per run:     BUDGET=25 (minutes; training stops after the step that reaches it, then validates and saves)
# Cores:              CORES=split  two runs side by side, pinned with taskset -c 0 / -c 1, one thread each (default:
#                                  every lever gets the same single core, so a pair shares memory bandwidth equally)
#                     CORES=both   one run after the other, each with both cores (the shipped recipes' conditions; with
#                                  BUDGET=35 about 9 h 20 min). Compare rows within one mode only.
# Subset:             CONFIGS="benchmarks/ablations/baseline.yaml benchmarks/ablations/ema.yaml"
# Data:               DATA=../shared/data/cityscapes_pairs_full (default; the configs themselves read data/cityscapes-pairs)
# Test-time flips:    TTA=flip  (the table scores every run with horizontal flips averaged in)
# Label size:         LABELS="256 256"  (runs at several sizes are judged at these labels; default: the largest)
# Extra overrides:    SET="data.limit=64 data.val=16"   (space-separated key=value, applied to every run)
# Results:            $RUNS/<config>-<time>/ run folders, $RUNS/logs/<config>.log, $RUNS/table.md,
#                     $RUNS/compare/report.md (per-class IoU, learning curves and predictions of every run)
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET=${BUDGET:-25}
CORES=${CORES:-split}
RUNS=${RUNS:-runs/accuracy-cpu}
CONFIGS=${CONFIGS:-$(ls benchmarks/ablations/*.yaml)}
SET=${SET:-}
TTA=${TTA:-}
LABELS=${LABELS:-}
DATA=${DATA:-../shared/data/cityscapes_pairs_full}
case "$CORES" in
    both|split) ;;
    *) echo "accuracy_cpu.sh: CORES must be both or split, got '$CORES'" >&2; exit 2 ;;
esac
mkdir -p "$RUNS/logs"
# This checkout's segkit (python -m from its root), not whichever one a `segkit` on PATH belongs to.
segkit=(python -m segkit.cli)

overrides=(--set "train.max_minutes=${BUDGET}" --set "data.path=${DATA}")
for item in $SET; do overrides+=(--set "$item"); done

train_one() {  # config, core ('' = no pinning); the run folder is the last "run folder:" line of its log
    local config=$1 core=$2 log="$RUNS/logs/$(basename "$1" .yaml).log"
    if [ -z "$core" ]; then
        "${segkit[@]}" train "$config" --runs "$RUNS" "${overrides[@]}" > "$log" 2>&1
    else
        OMP_NUM_THREADS=1 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 \
            taskset -c "$core" "${segkit[@]}" train "$config" --runs "$RUNS" "${overrides[@]}" --set train.threads=1 > "$log" 2>&1
    fi
}

# Prepare each dataset once, in turn, before any run starts: two side-by-side runs would otherwise prepare the same one.
CONFIGS="$CONFIGS" SET="data.path=$DATA $SET" python - <<'PY'
import os, sys
from segkit.errors import SegkitError
from segkit.workflows import config, datasets
try:
    for path in os.environ["CONFIGS"].split():
        datasets.training_data(config.load(path, os.environ["SET"].split()))
except SegkitError as err:
    sys.exit(f"accuracy_cpu.sh: error: {err}")
PY

started=$(date +%s)
if [ "$CORES" = both ]; then
    echo "mode: one run after the other, both cores each; ${BUDGET} min per run"
    for config in $CONFIGS; do
        echo "training $config"
        train_one "$config" "" || echo "  failed: see $RUNS/logs/$(basename "$config" .yaml).log"
    done
else
    echo "mode: two runs side by side, pinned to core 0 and core 1, one thread each; ${BUDGET} min per run"
    set -- $CONFIGS
    while [ $# -gt 0 ]; do
        echo "training $1${2:+ and $2}"
        train_one "$1" 0 & first=$!
        if [ $# -gt 1 ]; then train_one "$2" 1 & second=$!; fi
        wait "$first" || echo "  failed: see $RUNS/logs/$(basename "$1" .yaml).log"
        if [ $# -gt 1 ]; then wait "$second" || echo "  failed: see $RUNS/logs/$(basename "$2" .yaml).log"; shift; fi
        shift
    done
fi

folders=()
for config in $CONFIGS; do
    folder=$(sed -n 's/^run folder: //p' "$RUNS/logs/$(basename "$config" .yaml).log" | tail -n 1)
    [ -n "$folder" ] && folders+=("$folder")
done
python benchmarks/accuracy_table.py --cores "$CORES" ${TTA:+--tta "$TTA"} ${LABELS:+--label-size $LABELS} --out "$RUNS/compare" "${folders[@]}" | tee "$RUNS/table.md"
echo "wall-clock $(( ($(date +%s) - started) / 60 )) min; rerun: BUDGET=${BUDGET} CORES=${CORES}${TTA:+ TTA=$TTA}${LABELS:+ LABELS=\"$LABELS\"}${SET:+ SET=\"$SET\"} bash benchmarks/accuracy_cpu.sh (CONFIGS: $(echo $CONFIGS | wc -w) files)"
