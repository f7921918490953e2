"""Dev AP of what a student is distilled towards: one same-prior teacher, or several averaged exactly as
``blazeface train --teacher A --teacher B`` averages them (training.teachers.mean_dense_outputs).

    python benchmarks/teacher_ap.py --model slim --teacher slim:../shared/data/reference_weights/slim_Final.pth \
        --teacher rfb:../shared/data/reference_weights/RBF_Final.pth
    python benchmarks/teacher_ap.py --model blaze --map-priors --teacher slim:... --teacher rfb:...   # on blaze's priors
    python benchmarks/teacher_ap.py --model blaze --map-priors --teacher yunet:.../yunet_n_dynamic.onnx
    python benchmarks/teacher_ap.py --model blaze --map-priors --teacher yunet:... --yunet-scales 1 2   # and at 2x
    python benchmarks/teacher_ap.py --model blaze --map-priors --teacher yunet:... --yunet-scales 1 2 \
        --teacher centerface:.../centerface.onnx   # the two grid teachers' candidates pooled

Evaluates as ``blazeface evaluate widerface`` does (the 263-image dev split, long side 640, conf 0.01, NMS 0.4,
the official protocol) and prints one JSON object; ``--save-predictions DIR`` keeps the predictions for
``benchmarks/recall_by_size.py``. One thread, so a training run beside it is disturbed as little as possible.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="the student, whose priors every teacher must share")
    p.add_argument("--teacher", action="append", required=True, metavar="MODEL:WEIGHTS|yunet:PATH")
    p.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    p.add_argument("--map-priors", action="store_true",
                   help="teachers of other priors and YuNet too, carried onto the student's as "
                        "`train --map-teacher-priors` carries them")
    p.add_argument("--yunet-scales", type=float, nargs="+", default=[1.0], metavar="S",
                   help="as `train --yunet-scales`: YuNet also on the image enlarged by these factors")
    p.add_argument("--centerface-scales", type=float, nargs="+", default=[1.0], metavar="S",
                   help="as `train --centerface-scales`")
    p.add_argument("--long-side", type=int, default=640)
    p.add_argument("--save-predictions", type=Path, metavar="DIR")
    args = p.parse_args()
    wider = args.data / "widerface"
    if not wider.is_dir():
        print(f"skipped: {wider} not found", file=sys.stderr)
        return 0
    import torch

    from blazeface.errors import BlazefaceError
    from blazeface.evaluation import widerface as wf
    from blazeface.inference import FaceDetector
    from blazeface.training.teachers import DenseEnsembleRunner, load_teacher, teaches_per_prior

    torch.set_num_threads(1)
    teachers = [load_teacher(spec, yunet_scales=args.yunet_scales, centerface_scales=args.centerface_scales)
                for spec in args.teacher]
    for spec, teacher in zip(args.teacher, teachers):
        if not teaches_per_prior(teacher, args.model, args.map_priors):
            raise BlazefaceError(f"--teacher {spec}: not a dense teacher of {args.model} (other priors or "
                                 "YuNet, CenterFace: --map-priors)")
    detector = FaceDetector(args.model, runner=DenseEnsembleRunner(teachers, args.model), long_side=args.long_side,
                            conf=0.01, nms=0.4)
    gt = wf.load_ground_truth(wider / "ground_truth")
    keys = wf.read_image_list(wider / "val" / "wider_val.txt", gt)
    predictions = wf.predict_folder(detector, wider / "val" / "images", keys, progress=False)
    if args.save_predictions is not None:
        wf.write_predictions(args.save_predictions, predictions)
    result = wf.evaluate_predictions(predictions, gt)
    print(json.dumps({"model": args.model, "teachers": args.teacher, "map_priors": args.map_priors,
                      "long_side": args.long_side,
                      **{k: round(v, 4) for k, v in result.to_dict().items() if k != "images"},
                      "images": result.images}))
    return 0


if __name__ == "__main__":
    from blazeface.cli import run_script

    run_script(main)
