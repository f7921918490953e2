"""How far a student follows its per-prior teacher where the teacher sees a face, by prior size, on training
photos and on dev photos: does it under-fit the teacher, or fail to carry what it fits to new photos?

    python benchmarks/teacher_agreement.py --model slim [--weights W] [--photos 50] [--threshold 0.5]

Whole photos at long side 640, as the evaluation sees them (``--photos`` drawn from WIDER's training part and
as many from the dev split, seed 0). The teacher is the runs' YuNet-n at 1x and 2x carried onto the student's
priors (what ``benchmarks/teacher_ap.py --map-priors`` evaluates). For each prior size group: the priors where
the teacher's face probability is at least ``--threshold``, the student's mean face probability there and the
share where it is at least 0.3. Prints one JSON object. Needs ../shared/data.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
WIDER = DATA / "widerface"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="slim")
    p.add_argument("--weights", type=Path, default=None, help="the student (default: the shipped weights)")
    p.add_argument("--photos", type=int, default=50, help="photos of each part")
    p.add_argument("--threshold", type=float, default=0.5, help="the teacher's face probability that counts")
    args = p.parse_args()
    if not WIDER.is_dir():
        print(f"skipped: {WIDER} not found", file=sys.stderr)
        return 0
    import cv2
    import numpy as np
    import torch

    from blazeface.inference import FaceDetector
    from blazeface.priors import prior_size_groups
    from blazeface.training.teachers import DenseEnsembleRunner, load_teacher

    torch.set_num_threads(1)
    teacher = DenseEnsembleRunner([load_teacher(f"yunet:{DATA / 'teachers' / 'yunet_n_dynamic.onnx'}",
                                                yunet_scales=(1, 2))], args.model)
    student = FaceDetector(args.model, args.weights, backend="torch", threads=1)
    sizes = [s for level in student.config.priors.min_sizes for s in level]
    report = {"model": args.model, "weights": str(args.weights or "shipped"), "threshold": args.threshold,
              "prior_sizes": sizes}
    for part, folder in (("train", WIDER / "train" / "images"), ("dev", WIDER / "val" / "images")):
        photos = sorted(folder.glob("*/*.jpg"))
        random.Random(0).shuffle(photos)
        seen = np.zeros(len(sizes), np.int64)
        student_sum = np.zeros(len(sizes))
        student_high = np.zeros(len(sizes), np.int64)
        for path in photos[:args.photos]:
            image = cv2.imread(str(path))
            if image is None:
                raise SystemExit(f"{path}: unreadable")
            batch, _ = student.input_batch([image], 640)
            student_p = np.asarray(student.runner(batch)[1])[0, :, 1]
            teacher_p = np.asarray(teacher(batch)[1])[0, :, 1]
            groups = prior_size_groups(student.config.priors, batch.shape[2], batch.shape[3])
            face = teacher_p >= args.threshold
            np.add.at(seen, groups[face], 1)
            np.add.at(student_sum, groups[face], student_p[face])
            np.add.at(student_high, groups[face], (student_p[face] >= 0.3).astype(np.int64))
        report[part] = {"priors": seen.tolist(),
                        "student_mean_p": (student_sum / np.maximum(seen, 1)).round(3).tolist(),
                        "student_p_at_least_0.3": (student_high / np.maximum(seen, 1)).round(3).tolist()}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    from blazeface.cli import run_script

    run_script(main)
