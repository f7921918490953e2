#!/bin/bash
# Distillation runs of slim, rfb and mnet at once on a lent GPU machine (one H200, 16 cores), in three calls of
# the workplace's device tool, because one call carries at most 64 MiB of working tree (the repository's
# ~12 MiB included) and the payload is ~135 MiB: the training photos as WebP in two parts and YuNet's
# candidates of every photo, computed here and packed. Prepare it here (D=../shared/data):
#
#   python tools/compact_training_data.py --out .gpudata --quality 50 --parts 2 \
#       $D/widerface/train $D/facemask $D/mtfl/train
#   mkdir -p .gpudata/part0/teachers && cp $D/teachers/yunet_n_dynamic.onnx \
#       $D/reference_weights/mobilenet0.25_Final.pth .gpudata/part0/teachers/
#   rm -rf /tmp/bfdata /tmp/bfshared
#   DEVICE=cpu PY=.venv/bin/python bash tools/device_train.sh candidates   # ~7 min on 2 cores
#
# (both parts merged under the same /tmp/bfdata the machine uses: the candidates' key holds the photos' and
# the teacher's paths; they are packed into .gpudata/cand). Then, each call within the machine's 30 s warm
# window of the one before (the device tool carries the ignored folder named in `carry`; /tmp survives
# between calls on a warm machine):
#
#   1. carry .gpudata/cand:   bash tools/device_train.sh stash       (the machine's facts; unpacks, ~20 s)
#   2. carry .gpudata/part0:  bash tools/device_train.sh calibrate   (every model a few steps at once, ~1 min)
#   3. carry .gpudata/part1:  TRAIN_SECONDS=480 bash tools/device_train.sh train   (timeout_s 560)
#   4. if time is left and a run was stopped before its cosine ended:
#      FINISH_EPOCHS="slim=25 rfb=25 mnet=25" TRAIN_SECONDS=150 bash tools/device_train.sh finish
#
# Back here, judge each run and its soup with the weights it started from (session 46: a mosaic length alone
# trades easy AP for hard, its soup keeps the hard gain): `python tools/average_weights.py
# src/blazeface/weights/M.pth RUN/weights.pth --model M --write SOUP.pth`, then benchmarks/judge_candidate.py
# on RUN/weights.pth and on SOUP.pth.
#
# train gives each model as many epochs as its calibrated rate fits in TRAIN_SECONDS (the cosine then ends on
# time) and packs each run (weights.pth, last.pth, metrics, log) as $OUT/<model>.tar every 20 s and at the end;
# a run still going at the deadline is stopped with SIGTERM (it checkpoints). Every mode appends what it prints
# to $OUT/device.log as it goes, so a call cut by its timeout still brings back where it stood.
#
# History. Session 11 (dense teachers, no candidates): start ~35 s, calibrate 52 s, train 554 s, finish 165 s.
# Session 44 carried the photos only and let the machine compute the candidates (meant: a pool of 16 processes):
# the step had not finished after 230 s (calibrate) nor after 9 minutes (train), and the whole 15 minutes went
# with no step trained and no log back (the output was piped to `tail`). The cause: `--cache-processes $(nproc)`
# under `OMP_NUM_THREADS=1`, which nproc obeys: one process, not 16. Hence `nproc --all`, the candidates
# computed here and carried (the machine computes them only where none were carried, ~1 min on 16 cores), the
# machine's facts first and the logs in $OUT. Never `pkill -f "blazeface train"` in a command line: it matches
# the command's own shell (`pkill -f "[b]lazeface train"` does not).
set -u
MODE=${1:?candidates, stash, calibrate, train or finish}
R=/tmp/bfdata
T=$R/teachers
RUNS=/tmp/bfruns
OUT=${OUT:-/tmp/bfout}
MODELS=${MODELS:-"slim rfb mnet"}
EPOCH_SIZE=4000
PY=${PY:-python3}  # the device image's python3 holds torch with CUDA
SHARED=/tmp/bfshared  # train --teacher-cache: YuNet's candidates of every photo, made once
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1

mkdir -p $R $RUNS $OUT $SHARED
exec > >(tee -a $OUT/device.log) 2>&1  # a call cut by its timeout still brings its log back
echo "== $MODE $(date -u +%T)"
for part in .gpudata/part*/; do [ -d "$part" ] && cp -r "$part". $R/; done  # the parts this call carried
if [ "$MODE" != candidates ] && [ -f .gpudata/cand/candidates.npz ]; then
  $PY tools/pack_teacher_candidates.py unpack .gpudata/cand/candidates.npz --shared-dir $SHARED || exit 1
fi
echo "data: $(find $R -name '*.webp' | wc -l) images under $R; candidates: $(ls $SHARED)"
if [ "$MODE" = stash ]; then
  echo "cores: $(nproc --all) (nproc reads OMP_NUM_THREADS: $(nproc)); cgroup cpu.max: $(cat /sys/fs/cgroup/cpu.max 2>/dev/null)"
  grep -m1 "model name" /proc/cpuinfo; free -g | head -2; nvidia-smi -L
  $PY -c "import torch, cv2, onnxruntime; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'cv2', cv2.__version__, 'onnxruntime', onnxruntime.__version__)"
  exit 0
fi

YUNET="--teacher yunet:$T/yunet_n_dynamic.onnx --map-teacher-priors --yunet-scales 1 2 --cache-teacher"
options() {  # model epochs -> its training options
  # The lineage recipe of the CPU runs (batch 32, lr 2e-3: the rate whose lengths kept every subset), made
  # long: mosaics for the first three quarters (the lever that moved hard AP on slim, rfb and mnet, sessions
  # 23-24), plain crops for the last quarter. Students start from the shipped weights.
  # PLAIN="rfb ...": those models without mosaics (the control of a mosaic run).
  local close=$(( $2 / 4 > 0 ? $2 / 4 : 1 )) mosaic=0.5
  case " ${PLAIN:-} " in *" $1 "*) close=0 mosaic=0 ;; esac
  local common="--data $R/widerface/train:4000 --data $R/facemask:400 --data $R/mtfl/train:600
    --epoch-size $EPOCH_SIZE --batch-size 32 --device ${DEVICE:-cuda} --threads 1 --eval-every 0 --checkpoint-minutes 1
    --init-weights src/blazeface/weights/$1.pth --cache-images $YUNET --teacher-cache $SHARED --epochs $2 --mosaic-p $mosaic --close-mosaic $close
    --lr ${LR:-2e-3} --warmup-epochs 0.2 --workers ${WORKERS:-4} --seed 45"
  case $1 in
    # YuNet-n at 1x and 2x, carried onto each student's priors, is the strongest teacher measured on every prior
    # layout (docs/MODELS.md "Session 21 runs"). mnet keeps its lineage's imitation of its MIT original's
    # features (sessions 32-40: its easy and medium gains); slim and rfb imitating theirs gave up tiny faces
    # (session 35), so they go without.
    mnet) echo "$common --model mnet --feature-teacher mnet:$T/mobilenet0.25_Final.pth --kd-feature-weight 10" ;;
    slim|slimlite|rfb) echo "$common --model $1" ;;
    # blaze's lineage: the mnet original's features at weight 15, AdamW at a quarter of the rate (the later
    # --lr wins).
    blaze|blazelite) echo "$common --model $1 --feature-teacher mnet:$T/mobilenet0.25_Final.pth --kd-feature-weight 15 --lr 5e-4" ;;
  esac
}

candidates() {  # YuNet's candidates of the photos under $R into $SHARED (a no-op where they are there)
  local log=$OUT/candidates.log
  rm -rf /tmp/bfcache
  timeout ${CANDIDATE_SECONDS:-900} $PY -m blazeface train $(options slim 2) --max-steps 0 \
    --cache-processes $(nproc --all) --out /tmp/bfcache > $log 2>&1 || { tail -5 $log; exit 1; }
  grep "teacher candidates" $log | tail -1
  ls -la $SHARED
}

plan_epochs() {  # model seconds-left -> the epochs its calibrated rate fits, so that the cosine ends on time
  $PY - "$1" "$2" "$EPOCH_SIZE" "${CALIBRATION:-/tmp/bfcalib.json}" <<'EOF'
import json, sys
model, seconds, epoch_size, path = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
try:
    rate = json.load(open(path))[model]
except (OSError, KeyError, ValueError):
    rate = {"blaze": 250, "blazelite": 250}.get(model, 300)  # no calibration (a cold machine): a cautious guess
print(max(2, int(0.95 * rate * (seconds - 25) / epoch_size)))
EOF
}

pack() {  # model -> $OUT/<model>.tar (atomic)
  local d=$RUNS/$1
  [ -f $d/weights.pth ] || return 0
  tar -cf $OUT/.$1.tar -C $d $(cd $d && ls weights.pth last.pth metrics.jsonl options.json train.log 2>/dev/null) \
    && mv $OUT/.$1.tar $OUT/$1.tar
}

if [ "$MODE" = candidates ]; then  # here, not on the machine: compute, then pack for the carry
  CANDIDATE_SECONDS=${CANDIDATE_SECONDS:-1800} candidates
  rm -f .gpudata/cand/candidates.npz
  $PY tools/pack_teacher_candidates.py pack /tmp/bfcache/teacher_candidates.npz .gpudata/cand/candidates.npz
  exit $?
fi

if [ "$MODE" = calibrate ]; then
  $PY -c "import torch, cv2; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'cv2', cv2.__version__)"
  for m in $MODELS; do rm -rf /tmp/bfcalib/$m; done  # throw-away runs (train refuses to write over an earlier one)
  # Carried candidates are checked by key here (a mismatch would stall every run). Without any, each calibration
  # run makes its own of the photos present, which train does not keep (some photos are missing).
  [ -n "$(ls -A $SHARED)" ] && CANDIDATE_SECONDS=${CANDIDATE_SECONDS:-60} candidates
  pids=()
  for m in $MODELS; do
    $PY -m blazeface train $(options $m 2) --max-steps ${CALIB_STEPS:-40} --log-every 5 --out /tmp/bfcalib/$m \
      > $OUT/calib_$m.log 2>&1 & pids+=($!)
  done
  wait "${pids[@]}"
  $PY - "$MODELS" "$OUT" <<'EOF'
import json, statistics, sys
rates = {}
for m in sys.argv[1].split():
    try:
        rows = [json.loads(l) for l in open(f"/tmp/bfcalib/{m}/metrics.jsonl")]
    except OSError:
        print(m, "FAILED:", open(f"{sys.argv[2]}/calib_{m}.log").read()[-1500:]); continue
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
[ "$MODE" = train ] && CANDIDATE_SECONDS=${CANDIDATE_SECONDS:-300} candidates  # counted in TRAIN_SECONDS
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
  epochs=$(plan_epochs $m $((TRAIN_SECONDS - ($(date +%s) - start))))
  echo "$m: $epochs epochs of $EPOCH_SIZE images"
  mkdir -p $RUNS/$m
  $PY -m blazeface train $(options $m $epochs) --log-every 10 --out $RUNS/$m \
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
