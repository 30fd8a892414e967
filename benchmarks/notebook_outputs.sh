#!/usr/bin/env bash
# The notebooks' stored outputs: executes notebooks 01-06 on the real data in ../shared/data, on a CPU, each on one
# core (about 2 hours on 2 cores), into a fresh folder beside the checkout; copy the executed .ipynb files back into
# notebooks/ to keep them.
#   1. 02 (U-Net-R34) and 03 (PSPNet-R34) side by side, one core each, 35 minutes of training each;
#   2. 06 (Fast-SCNN, 35 minutes) on one core, 01 (data) on the other;
#   3. 05 (CamVid from scratch and from the runs of 02 and 06) on one core, 04 (compares 02, 03 and 06) on the other.
# Run from anywhere: bash benchmarks/notebook_outputs.sh     (OUT=../notebook-outputs, a folder beside ../shared, so the
# stored outputs show the data as ../shared/data/..., not a path of this machine)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-../notebook-outputs}
mkdir -p "$OUT"
cp notebooks/0[1-6]_*.ipynb "$OUT"/
cd "$OUT"
export SEGKIT_NB_DATA=../shared/data/cityscapes_pairs_full SEGKIT_NB_CAMVID=../shared/data/camvid11_large
[ -d "$SEGKIT_NB_DATA/train" ] || { echo "notebook_outputs.sh: $OUT must sit beside ../shared ($SEGKIT_NB_DATA/train not found)" >&2; exit 2; }
run() { jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=-1 "$1" > "${1%.ipynb}.log" 2>&1; }
on_core() { local core=$1; shift; taskset -c "$core" bash -c "$(declare -f run); for nb in $*; do run \$nb; done"; }

on_core 0 02_unet_resnet34.ipynb & on_core 1 03_pspnet.ipynb & wait
on_core 0 06_fastscnn.ipynb & on_core 1 01_data.ipynb & wait
on_core 0 05_camvid.ipynb & on_core 1 04_compare.ipynb & wait
echo "executed notebooks in $OUT; rerun: bash benchmarks/notebook_outputs.sh   (OUT=$OUT)"
