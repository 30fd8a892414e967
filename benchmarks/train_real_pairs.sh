#!/usr/bin/env bash
# Accuracy on real data: U-Net-R34 and PSPNet-R34 trained from scratch on the 1,000 real Cityscapes pairs
# in ../shared/data (100 held out for validation, the same 100 for both: the split is seeded), at 128x128,
# each for a 20-minute CPU budget, then compared on those 100 pairs (mIoU over the 19 classes, per class too).
# The two train side by side, each pinned to one CPU core, so both get the same hardware for the same time.
#
# Run from anywhere:   bash benchmarks/train_real_pairs.sh            (about 25 minutes on 2 CPU cores)
# Other budget:        MINUTES=5 bash benchmarks/train_real_pairs.sh
# Other data:          DATA=data/cityscapes-pairs bash benchmarks/train_real_pairs.sh   (its first 1,000 training pairs)
# Results:             $RUNS/comparison/report.md, each run's metrics.json / per_class.csv, $RUNS/*.log
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/real-pairs}
MINUTES=${MINUTES:-20}
DATA=${DATA:-../shared/data/cityscapes_pairs}  # the configs read data/cityscapes-pairs; this copy holds 1,000 pairs
mkdir -p "$RUNS"

core=0
for model in unet pspnet; do
    taskset -c "$core" segkit train "${model}-r34_cityscapes-pairs-1000_128x128" --runs "$RUNS" \
        --set "train.max_minutes=${MINUTES}" --set "data.path=${DATA}" > "$RUNS/${model}.log" 2>&1 &
    core=$((core + 1))
done
wait
latest() { ls -d "$RUNS"/"$1"-r34_cityscapes-pairs-1000_128x128-* | tail -n 1; }
segkit compare "$(latest unet)" "$(latest pspnet)" --out "$RUNS/comparison"
echo "rerun: bash benchmarks/train_real_pairs.sh   (MINUTES=${MINUTES}, RUNS=${RUNS}, DATA=${DATA})"
