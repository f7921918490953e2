"""This project's models, through blazeface.benchmarking (the code ``blazeface bench`` runs), served
over the same protocol as the peers. Runs in the project's own environment.

--config: {"contenders": [{"model": "slim", "backend": "onnx", "weights": PATH or null, "name": optional}, ...]}
"""
import json

from _protocol import load_image, parse_args, serve


def build(args):
    from blazeface.benchmarking import BenchSession

    image = load_image(args.image)
    size = (image.shape[1], image.shape[0])
    contenders = {}
    for c in json.loads(args.config)["contenders"]:
        session = BenchSession(c["model"], c.get("weights"), c["backend"], size, args.threads, image, conf=args.conf)
        contenders[c.get("name", f"{c['model']}-{c['backend']}")] = lambda s=session: {**s.once(), "faces": s.result.faces}
    return contenders


if __name__ == "__main__":
    args = parse_args()
    serve(lambda: build(args), args.warmup)
