#!/bin/bash
# Distillation runs of all four models at once on a lent GPU machine (one H200, 16 cores), in two calls of
# the workplace's device tool, because one call carries at most 64 MiB of working tree:
#
#   stage 0 (carry .gpudata/part0: half the WebP images, every label file, the teachers):
#       bash tools/device_train.sh calibrate
#     merges the part into /tmp/bfdata, trains every model for a few steps with the real options (all four
#     at once, as in the long run) and keeps each one's images/s in /tmp/bfcalib.json;
#   stage 1 (carry .gpudata/part1, the other half), within the machine's 30 s warm window:
#       TRAIN_SECONDS=420 bash tools/device_train.sh train
#     merges it, gives each model as many epochs as its measured rate fits in TRAIN_SECONDS (the cosine
#     then ends on time), trains, and packs each run (weights.pth, last.pth, metrics, log) as $OUT/<model>.tar
#     every minute and at the end; a run still going at the deadline is stopped with SIGTERM (it checkpoints);
#   if time is left on the warm machine after that (a run was stopped before its cosine ended):
#       FINISH_EPOCHS="slim=25 rfb=25 mnet=25 blaze=17" TRAIN_SECONDS=150 bash tools/device_train.sh finish
#     resumes each run with its cosine re-planned to end at that epoch, and packs them the same way.
#
# Budget seen in session 11 (15 minutes of device time): the machine started in ~35 s; calibrate took 52 s;
# train with TRAIN_SECONDS=525 under timeout_s=600 returned after 554 s; a finish call of 165 s fitted in what
# was left. Never `pkill -f "blazeface train"` in a command line: it matches the command's own shell.
#
# The compact data comes from tools/compact_training_data.py (see docs/MODELS.md, "GPU runs"); part0 also
# carries teachers/yunet_n_dynamic.onnx. The students start from the shipped weights; YuNet-n teaches every model
# per prior at 1x and 2x, its candidates computed once per photo (`--cache-teacher`) by a pool of one process per
# core before the runs start (about half a minute), so that no step waits for it. MODELS may add slimlite.
set -u
MODE=${1:?calibrate, train or finish}
R=/tmp/bfdata
T=$R/teachers
RUNS=/tmp/bfruns
OUT=${OUT:-/tmp/bfout}
MODELS=${MODELS:-"slim rfb mnet blaze"}
EPOCH_SIZE=4000
PY=${PY:-python3}  # the device image's python3 holds torch with CUDA
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1

part=.gpudata/part$([ "$MODE" = calibrate ] && echo 0 || echo 1)
mkdir -p $R $RUNS $OUT
[ -d "$part" ] && cp -r "$part"/. $R/
echo "data: $(find $R -name '*.webp' | wc -l) images under $R; $(nproc --all) cores; $(nvidia-smi -L 2>&1 | head -1)"

YUNET="--teacher yunet:$T/yunet_n_dynamic.onnx --map-teacher-priors --yunet-scales 1 2 --cache-teacher"
options() {  # model -> its training options
  local common="--data $R/widerface/train:4000 --data $R/facemask:400 --data $R/mtfl/train:600
    --epoch-size $EPOCH_SIZE --batch-size 64 --device ${DEVICE:-cuda} --threads 1 --eval-every 0 --checkpoint-minutes 1
    --init-weights src/blazeface/weights/$1.pth --cache-images $YUNET"
  case $1 in
    # YuNet-n at 1x and 2x, carried onto each student's priors, is the strongest teacher measured on every prior
    # layout (0.900 / 0.892 / 0.729 on slim's; docs/MODELS.md "Session 21 runs"). The data workers carry its
    # cached candidates onto the priors (~11 ms a crop), hence more workers than an untaught run needs.
    slim|slimlite|rfb|mnet) echo "$common --model $1 --lr 1e-2 --warmup-epochs 1 --workers 3" ;;
    blaze) echo "$common --model blaze --lr 1e-3 --warmup-epochs 1 --workers 4" ;;
  esac
}

cache() {  # dir... -> YuNet's candidates of the photos now under $R, computed once, copied into each dir
  rm -rf /tmp/bfcache
  $PY -m blazeface train $(options slim) --max-steps 0 --cache-processes $(nproc) --out /tmp/bfcache \
    > /tmp/bfcache.log 2>&1 || { tail -5 /tmp/bfcache.log; exit 1; }
  grep "teacher candidates" /tmp/bfcache.log | tail -1
  for d in "$@"; do mkdir -p $d && cp /tmp/bfcache/teacher_candidates.npz $d/; done
}

pack() {  # model -> $OUT/<model>.tar (atomic)
  local d=$RUNS/$1
  [ -f $d/weights.pth ] || return 0
  tar -cf $OUT/.$1.tar -C $d $(cd $d && ls weights.pth last.pth metrics.jsonl options.json train.log 2>/dev/null) \
    && mv $OUT/.$1.tar $OUT/$1.tar
}

if [ "$MODE" = calibrate ]; then
  $PY -c "import torch, cv2; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'cv2', cv2.__version__)"
  for m in $MODELS; do rm -rf /tmp/bfcalib/$m; done  # throw-away runs (train refuses to write over an earlier one)
  cache $(for m in $MODELS; do echo /tmp/bfcalib/$m; done)  # of this part's photos only: calibration's own
  pids=()
  for m in $MODELS; do
    $PY -m blazeface train $(options $m) --max-steps ${CALIB_STEPS:-40} --log-every 5 --out /tmp/bfcalib/$m \
      > /tmp/bfcalib_$m.log 2>&1 & pids+=($!)
  done
  wait "${pids[@]}"
  $PY - "$MODELS" <<'EOF'
import json, statistics, sys
rates = {}
for m in sys.argv[1].split():
    try:
        rows = [json.loads(l) for l in open(f"/tmp/bfcalib/{m}/metrics.jsonl")]
    except OSError:
        print(m, "FAILED:", open(f"/tmp/bfcalib_{m}.log").read()[-1500:]); continue
    rates[m] = statistics.median([r["img_per_s"] for r in rows if r["step"] > 10] or [rows[-1]["img_per_s"]])
    print(f"{m}: {rates[m]:.0f} img/s (median after step 10, all models at once)")
json.dump(rates, open("/tmp/bfcalib.json", "w"))
EOF
  cp /tmp/bfcalib.json $OUT/ 2>/dev/null
  exit 0
fi

# -- train / finish ---------------------------------------------------------------------------------------
TRAIN_SECONDS=${TRAIN_SECONDS:?seconds of training}
start=$(date +%s)
[ "$MODE" = train ] && cache $(for m in $MODELS; do echo $RUNS/$m; done)  # every photo now: counted in TRAIN_SECONDS
pids=()
for m in $MODELS; do
  if [ "$MODE" = finish ]; then
    epochs=$(echo "${FINISH_EPOCHS:?model=epochs ...}" | tr ' ' '\n' | sed -n "s/^$m=//p")
    [ -n "$epochs" ] || continue
    echo "$m: resumed, the cosine re-planned to end at epoch $epochs"
    $PY -m blazeface train --resume $RUNS/$m/last.pth --epochs $epochs --out $RUNS/$m >> $RUNS/$m/train.log 2>&1 &
    pids+=($!)
    continue
  fi
  epochs=$($PY -c "
import json
try: r = json.load(open('/tmp/bfcalib.json'))['$m']
except Exception: r = {'blaze': 250}.get('$m', 300)  # no calibration (cold machine): a cautious guess
print(max(2, int(0.88 * r * ($TRAIN_SECONDS - ($(date +%s) - start) - 25) / $EPOCH_SIZE)))")
  echo "$m: $epochs epochs of $EPOCH_SIZE images"
  mkdir -p $RUNS/$m
  $PY -m blazeface train $(options $m) --epochs $epochs --log-every 10 --out $RUNS/$m \
    > $RUNS/$m/train.log 2>&1 & pids+=($!)
done
deadline=$((start + TRAIN_SECONDS))
while true; do
  sleep 20
  alive=0; for p in "${pids[@]}"; do kill -0 $p 2>/dev/null && alive=1; done
  for m in $MODELS; do pack $m; done
  [ $alive = 0 ] && break
  if [ "$(date +%s)" -ge $deadline ]; then
    echo "deadline: stopping the runs still going (they checkpoint on SIGTERM)"
    for p in "${pids[@]}"; do kill -TERM $p 2>/dev/null; done
    wait "${pids[@]}"
    break
  fi
done
for m in $MODELS; do
  pack $m
  echo "== $m: $(tail -1 $RUNS/$m/metrics.jsonl | cut -c1-200)"
  grep -v "it/s\]\|step/s\]\|s/step\]" $RUNS/$m/train.log | tail -3
done
echo "elapsed $(( $(date +%s) - start )) s"
