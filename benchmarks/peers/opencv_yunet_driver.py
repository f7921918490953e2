"""YuNet through OpenCV's ``cv2.FaceDetectorYN``, the way most people run it: the ONNX file of the
OpenCV model zoo (``yunet_n_dynamic.onnx``: dynamic input size), input size set to the image's, score
threshold --conf, NMS 0.3, top-k 5000 (OpenCV's defaults apart from the threshold).

--config: {"model": PATH to the YuNet .onnx}
"""
import json

from _protocol import load_image, parse_args, serve, timed


def build(args):
    import cv2

    cv2.setNumThreads(args.threads)
    model = json.loads(args.config)["model"]
    image = load_image(args.image)
    h, w = image.shape[:2]
    detector = cv2.FaceDetectorYN.create(model, "", (w, h), args.conf, 0.3, 5000)

    def run():
        _, faces = detector.detect(image)
        return 0 if faces is None else len(faces)

    return {"yunet-opencv": timed(run)}


if __name__ == "__main__":
    args = parse_args()
    serve(lambda: build(args), args.warmup)
