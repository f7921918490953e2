"""Google's BlazeFace through ``mediapipe==0.10.21``, legacy ``solutions.face_detection``.

It resizes every frame to its own fixed input itself (short range: 128x128, model_selection=0; full
range: 192x192, model_selection=1); the BGR -> RGB conversion it needs is timed as part of it. Its
TFLite/XNNPACK graph picks its own threads (bench_peers.py still sets OMP_NUM_THREADS etc.).
"""
import json

from _protocol import load_image, parse_args, serve, timed


def build(args):
    import cv2
    import mediapipe as mp

    image = load_image(args.image)
    wanted = json.loads(args.config).get("models", ["short", "full"])
    contenders = {}
    for name, selection in (("short", 0), ("full", 1)):
        if name not in wanted:
            continue
        detector = mp.solutions.face_detection.FaceDetection(model_selection=selection,
                                                             min_detection_confidence=args.conf)

        def run(detector=detector):
            return len(detector.process(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)).detections or [])

        contenders[f"mediapipe-{name}"] = timed(run)
    return contenders


if __name__ == "__main__":
    args = parse_args()
    serve(lambda: build(args), args.warmup)
