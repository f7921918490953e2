"""OpenCV's Haar cascade (haarcascade_frontalface_default.xml, shipped in opencv-python-headless 4.x),
with the usual settings: grayscale, scaleFactor 1.1, minNeighbors 5, minSize 20x20."""
from _protocol import load_image, parse_args, serve, timed


def build(args):
    import cv2

    cv2.setNumThreads(args.threads)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    if cascade.empty():
        raise RuntimeError("haarcascade_frontalface_default.xml not found in this OpenCV")
    image = load_image(args.image)

    def run():
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        return len(cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(20, 20)))

    return {"haar": timed(run)}


if __name__ == "__main__":
    args = parse_args()
    serve(lambda: build(args), args.warmup)
