"""The ``blazeface`` command: a thin argparse layer over the library.

Each sub-command lives in its own module exposing ``add_parser(subparsers)`` (which sets
``func=run`` on its parser) and ``run(args) -> int``. A ``BlazefaceError`` anywhere becomes one line on
stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from .. import defaults
from ..errors import BlazefaceError
from ..version import __version__

COMMANDS = ("detect", "evaluate", "train", "export", "profile", "bench", "web", "blur", "align")


class OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (``blazeface detect: error: argument --conf: ...``)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="blazeface", description="Tiny, fast face detectors with five landmarks.")
    parser.add_argument("--version", action="version", version=f"blazeface {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}_cmd")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}_cmd":
                raise
            continue  # command not built yet
        module.add_parser(sub)
    add_threads_option(parser)
    return parser


THREADS_HELP = ("CPU threads for torch, ONNX Runtime, ncnn and OpenCV alike, set once for the process "
                "(default: 1, the fastest measured for single images, batches and video on a shared machine; "
                "never more than the cores available)")


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads`` on every command that has none of its own: one option, one policy
    (:mod:`blazeface.threads`), without each command's parser having to declare it."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in subparsers:
        for child in action.choices.values():
            add_threads_option(child)
    if not subparsers and "--threads" not in parser._option_string_actions:
        parser.add_argument("--threads", type=int, default=None, metavar="N", help=THREADS_HELP)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed on one line
        return exc.code if isinstance(exc.code, int) else 2
    try:
        from ..threads import configure

        # Training keeps the libraries' defaults unless told otherwise: torch honours OMP_NUM_THREADS, which
        # torchrun sets for each of its processes, and one process uses every core for its big batches.
        if args.command != "train" or args.threads:
            configure(args.threads)
        return int(args.func(args) or 0)
    except BlazefaceError as exc:
        print(f"blazeface {args.command}: error: {cli_message(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"blazeface {args.command}: interrupted", file=sys.stderr)
        return 130


def run_script(main: Callable[[], int | None]) -> None:
    """Run a script's ``main()`` (benchmarks/, tools/) as the CLI runs a command: a library error is one line
    on stderr naming the script, exit status 2; Ctrl-C is one line and 130. Exits with ``main()``'s status."""
    prog = os.path.basename(sys.argv[0]) or "script"
    try:
        code = main()
    except BlazefaceError as exc:
        print(f"{prog}: error: {cli_message(str(exc))}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code or 0)


# Library errors name Python arguments (``pass model='slim'``, ``conf must be ...``); the CLI says flags.
_ARGUMENTS = ("model", "weights", "backend", "conf", "nms", "long_side", "top_k", "keep_top_k", "batch_size",
              "threads", "device", "fp16", "int8", "calibration", "color", "data", "allow_missing")
_ASSIGNMENT = re.compile(r"\b(" + "|".join(_ARGUMENTS) + r")=('([^']*)'|\S+)")
_SUBJECT = re.compile(r"^(" + "|".join(_ARGUMENTS) + r") must be\b")


def cli_message(text: str) -> str:
    """A library error in CLI terms: ``model='slim'`` -> ``--model slim``, ``long_side must`` ->
    ``--long-side must``, ``fp16=True`` -> ``--fp16``."""
    def flag(name: str) -> str:
        return "--" + name.replace("_", "-")

    def assignment(m: re.Match) -> str:
        value = m.group(3) if m.group(3) is not None else m.group(2)
        return flag(m.group(1)) if value == "True" else f"{flag(m.group(1))} {value}"

    text = _ASSIGNMENT.sub(assignment, text)
    return _SUBJECT.sub(lambda m: f"{flag(m.group(1))} must be", text)


def parse_size(text: str) -> tuple[int, int]:
    """'320x240' -> (320, 240): WIDTHxHEIGHT."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, e.g. 320x240, not {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, not {text!r}")
    return w, h


def add_model_args(parser: argparse.ArgumentParser, backend: bool = True) -> None:
    """--model / --weights (and --backend), shared by every command that runs a detector."""
    parser.add_argument("--model", default=None,
                        help=f"{' | '.join(defaults.MODELS)} (default: the one the weights file names, else blaze)")
    parser.add_argument("--weights", default=None,
                        help="a checkpoint (.pth), an exported .onnx or an ncnn .param "
                             "(default: the weights shipped in the package)")
    if backend:
        parser.add_argument("--backend", default=None, choices=list(defaults.BACKENDS),
                            help="inference backend (default: the one the --weights suffix names, else onnx when "
                                 "onnxruntime is installed, the fastest here, else torch); onnx and ncnn export a "
                                 "checkpoint on first use and cache it in ~/.cache/blazeface/exports")


@contextmanager
def jsonl_writer(target: str | None) -> Iterator[Callable[[dict], None]]:
    """``emit(record)`` writing JSON Lines to ``target``: a path, ``"-"`` (stdout) or None (nowhere)."""
    if not target:
        yield lambda record: None
        return
    try:
        stream = sys.stdout if target == "-" else open(target, "w")
    except OSError as exc:
        raise BlazefaceError(f"--json {target}: cannot write ({exc.strerror or exc})") from None
    try:
        yield lambda record: stream.write(json.dumps(record) + "\n")
    finally:
        if stream is not sys.stdout:
            stream.close()

