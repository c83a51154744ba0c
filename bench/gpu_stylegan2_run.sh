#!/usr/bin/env bash
# The StyleGAN2 culture-transfer path end to end, time-boxed for a short GPU lease (issue 19):
# procedural data, a base model trained on the photos, a copy fine-tuned on one culture from it
# (init_from), then `culturegan evaluate` of the fine-tuned run: each photo projected into the
# base model and rendered by the fine-tuned one, measured like every other mode. Then the
# layer swap: `culturegan blend` of the base (structure: layers up to BLEND_AT px) and the
# fine-tuned run (rendering), evaluated the same way (photos projected into its structure
# model), and the command-line path a user takes: `culturegan project` of a few photos into the
# base and `culturegan transfer --latents` of their codes by the blend.
#
#   bash bench/gpu_stylegan2_run.sh OUTDIR     (from the repository root, culturegan installed)
#
# Each training runs for a fixed number of seconds (SIGTERM ends it with a checkpoint), so the
# networks are as trained as the lease allows, no more: the numbers show the path working at
# RES px, not a finished model. Variables (defaults for a GPU; the CPU check sets them small):
#   RES 256, IMAGES 100 (per culture), BASE_S 100, TUNE_S 100 (training seconds each),
#   PROJECTION_STEPS 300, COUNT 8 (photos evaluated), DEVICE cuda, BATCH 16,
#   SIZES (the networks' size keys), BLEND_AT (default RES / 4), WORK (the folder for data, runs
#   and report; default a new temporary one).
set -u -o pipefail

OUTDIR=${1:?usage: bash bench/gpu_stylegan2_run.sh OUTDIR}
RES=${RES:-256}
IMAGES=${IMAGES:-100}
BASE_S=${BASE_S:-100}
TUNE_S=${TUNE_S:-100}
PROJECTION_STEPS=${PROJECTION_STEPS:-300}
COUNT=${COUNT:-8}
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-16}
BLEND_AT=${BLEND_AT:-$((RES / 4))}
SIZES=${SIZES:-z_dim=256 w_dim=256 mapping_layers=2 channel_base=8192 channel_max=256}
TARGET=ukiyoe
PY=(python3 -P)
WORK=${WORK:-$(mktemp -d)}  # data, runs and report
mkdir -p "$OUTDIR"

settings() {  # settings RUN CULTURE [more KEY=VALUE]: --set arguments of one training
    local run=$1 culture=$2
    shift 2
    local keys=(mode=stylegan2 "data_root=$WORK/data" "target=$culture" "output=$WORK/$run" "device=$DEVICE"
        "batch_size=$BATCH" steps=1000000 checkpoint_every=100 sample_every=200 log_every=20 progress=false "$@")
    printf -- '--set\n%s\n' "${keys[@]}"
}

train_for() {  # train_for SECONDS RUN CULTURE [KEY=VALUE...]: a training stopped by SIGTERM after SECONDS
    local seconds=$1
    shift
    mapfile -t args < <(settings "$@")
    echo "=== train $2 ($1) for ${seconds}s"
    # SIGTERM (to the process group: the data workers ignore it) ends the run after its step, with
    # a checkpoint; the CLI then exits non-zero
    timeout -k 30 "$seconds" "${PY[@]}" -m culturegan train "${args[@]}" 2>&1 | tail -n 4
    ls "$WORK/$1/checkpoints" >/dev/null || { echo "no checkpoint from $1"; exit 1; }
}

start=$SECONDS
"${PY[@]}" -m culturegan data synth "$WORK/data" --n "$IMAGES" --size "$RES" || exit 1
# held out: the images every evaluation transfers (the first COUNT photos) and the real ones it
# compares them with (the classifiers are fitted on data/)
"${PY[@]}" -m culturegan data synth "$WORK/heldout" --n "$IMAGES" --size "$RES" --seed 1 || exit 1
echo "data: $((SECONDS - start))s"
# shellcheck disable=SC2086  # SIZES holds several KEY=VALUE words
train_for "$BASE_S" base photo resolution=$RES $SIZES
train_for "$TUNE_S" tuned "$TARGET" "init_from=$WORK/base" resolution=$RES
evaluate() {  # evaluate CHECKPOINT REPORT: the held-out photos transferred and measured; headlines printed
    "${PY[@]}" -m culturegan evaluate --checkpoint "$1" --data "$WORK/heldout" --reference "$WORK/data" \
        --source photo --target "$TARGET" --out "$2" --count "$COUNT" --projection-steps "$PROJECTION_STEPS" \
        --device "$DEVICE" || exit 1
    "${PY[@]}" - "$2/report.json" <<'PYTHON_END'
import json
import sys

seed = next(iter(json.load(open(sys.argv[1])).values()))["seeds"][0]
print("projection:", json.dumps(seed["projection"]))
print("content retrieval top1:", seed["content"]["retrieval"]["top1"], "collapse:", seed["content"]["collapse_ratio"])
print("judge target rate:", seed["recognisability"]["judge"]["outputs"]["target_rate"],
      "inputs:", seed["recognisability"]["judge"]["inputs"]["target_rate"])
print("KID judge outputs/inputs:", seed["distance"]["judge"]["kid_outputs"], seed["distance"]["judge"]["kid_inputs"])
print("periodic ratio:", seed["periodic_artifacts"]["ratio"], "deception:", seed.get("deception"))
print("verdicts:", json.dumps(seed["verdicts"], indent=1))
PYTHON_END
}
echo "=== evaluate the fine-tuned run"
evaluate "$WORK/tuned" "$WORK/report"
echo "=== blend: structure base, rendering tuned, at $BLEND_AT px"
# (the blend itself stays out of the archive: a 256 px generator is tens of MB)
mkdir -p "$WORK/blend"
"${PY[@]}" -m culturegan blend --structure "$WORK/base" --rendering "$WORK/tuned" --resolution "$BLEND_AT" \
    --out "$WORK/blend/blend.safetensors" || exit 1
cp "$WORK/blend/blend.json" "$WORK/blend/blend_blend_grid.png" "$WORK/report/" || exit 1
echo "=== evaluate the blend"
evaluate "$WORK/blend/blend.safetensors" "$WORK/report/blend"
echo "=== project 4 photos into the base, transfer their codes with the blend"
photos=("$WORK/heldout/photo/"*)
mkdir -p "$WORK/photos" && cp "${photos[@]:0:4}" "$WORK/photos/" || exit 1
"${PY[@]}" -m culturegan project --checkpoint "$WORK/base" --input "$WORK/photos" --out "$WORK/report/latents" \
    --steps "$PROJECTION_STEPS" --device "$DEVICE" || exit 1
"${PY[@]}" -m culturegan transfer --checkpoint "$WORK/blend/blend.safetensors" --latents "$WORK/report/latents" \
    --out "$WORK/report/transferred" || exit 1
# what comes back: the report, both runs' logs and last sample grids, in one archive
samples=()
for run in base tuned; do
    cp "$WORK/$run/metrics.jsonl" "$WORK/report/$run-metrics.jsonl"
    last=$(ls "$WORK/$run/samples/"*.png 2>/dev/null | sort | tail -n 1)
    [[ -n $last ]] && cp "$last" "$WORK/report/$run-samples.png" && samples+=("$run")
done
tar -czf "$OUTDIR/stylegan2-run.tar.gz" -C "$WORK" report
echo "total: $((SECONDS - start))s; samples from: ${samples[*]:-none}"
