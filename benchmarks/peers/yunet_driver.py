"""libfacedetection / YuNet through the PyPI package ``yuface`` (its weights are compiled in).

yuface.detect takes the BGR uint8 image as it is and runs at that size; its OpenMP threads follow
OMP_NUM_THREADS, which bench_peers.py sets.
"""
from _protocol import load_image, parse_args, serve, timed


def build(args):
    import yuface

    image = load_image(args.image)
    return {"yunet": timed(lambda: len(yuface.detect(image, conf=args.conf)[0]))}


if __name__ == "__main__":
    args = parse_args()
    serve(lambda: build(args), args.warmup)
