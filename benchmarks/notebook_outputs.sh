#!/usr/bin/env bash
# The notebooks' stored outputs: executes notebooks 01-05 on the real data in ../shared/data, on a CPU, in the core
# layout their outputs were made with (about 2 hours on 2 cores), into a fresh folder beside the checkout; copy the
# executed .ipynb files back into notebooks/ to keep them.
#   1. 02 (U-Net-R34) and 03 (PSPNet-R18) side by side, one core each, 35 minutes of training each;
#   2. Fast-SCNN on both cores, 35 minutes (segkit train fastscnn_cityscapes-pairs_256x256_cpu-35min);
#   3. 01 (data) then 05 (CamVid, two 12-minute trainings), on one core;
#   4. 04 on both cores: it compares the newest finished runs of 02, 03 and Fast-SCNN and times their latency.
# (The stored 02 was made during step 3, on the other core, after its config's decay began to span the budget.)
# Run from anywhere: bash benchmarks/notebook_outputs.sh     (OUT=../notebook-outputs, a folder beside ../shared, so the
# stored outputs show the data as ../shared/data/..., not a path of this machine)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-../notebook-outputs}
mkdir -p "$OUT"
cp notebooks/0[1-5]_*.ipynb "$OUT"/
cd "$OUT"
export SEGKIT_NB_DATA=../shared/data/cityscapes_pairs_full SEGKIT_NB_CAMVID=../shared/data/camvid11_large
[ -d "$SEGKIT_NB_DATA/train" ] || { echo "notebook_outputs.sh: $OUT must sit beside ../shared ($SEGKIT_NB_DATA/train not found)" >&2; exit 2; }
run() { jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=-1 "$1" > "${1%.ipynb}.log" 2>&1; }

taskset -c 0 bash -c "$(declare -f run); run 02_unet_resnet34.ipynb" &
taskset -c 1 bash -c "$(declare -f run); run 03_pspnet.ipynb" &
wait
segkit train fastscnn_cityscapes-pairs_256x256_cpu-35min --runs runs \
    --set "data.path=$SEGKIT_NB_DATA" --set data.split=train > fastscnn.log 2>&1
taskset -c 1 bash -c "$(declare -f run); run 01_data.ipynb; run 05_camvid.ipynb"
run 04_compare.ipynb
echo "executed notebooks in $OUT; rerun: bash benchmarks/notebook_outputs.sh   (OUT=$OUT)"
