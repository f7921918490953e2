"""Where the commands' outputs go, so that an output never replaces an input nor another output.

Folder inputs keep their structure under ``--out``, starting with the folder's own name (``detect a/ b/
--out o`` writes ``o/a/x.jpg`` and ``o/b/x.jpg``); single files go to the top of ``--out``. An output
that would be an input is refused; two inputs that still map to one output (``clip.mp4`` and ``clip.mov``
both becoming ``clip.mp4``) get distinct names (``clip-2.mp4``).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from ..errors import BlazefaceError
from ..io import IMAGE_SUFFIXES, VIDEO_SUFFIXES, find_files, same_file


JSON_SUFFIXES = {".json", ".jsonl", ".ndjson"}  # what --json writes; any other name stays an input


def earlier_outputs(folder: Path, out: Path | None, json_target: str | None = None) -> list[Path]:
    """Where inside input ``folder`` this command writes, relative to it: ``--out`` when it lies inside the
    folder, else the folder's own subtree under ``--out`` (``photos --out photos`` writes ``photos/photos/``),
    and the ``--json`` file (when it is named as JSON; a photo named by ``--json`` stays an input, which
    ``check_json_target`` refuses). A rerun must not read them as inputs: it would blur the blurred copies one
    level deeper on every run, or report its own JSON Lines as an unreadable input."""
    root = folder.resolve()
    written = []
    if out is not None:
        out = out.resolve()
        written += [d for d in (out, out / root.name) if d != root and d.is_relative_to(root)][:1]
    if json_target and json_target != "-" and Path(json_target).suffix.lower() in JSON_SUFFIXES:
        written.append(Path(json_target).resolve())
    return [w.relative_to(root) for w in written if w.is_relative_to(root)]


def expand_inputs(inputs: list[str], suffixes: set[str] | str | None = None, out: Path | None = None,
                  json_target: str | None = None) -> tuple[list[tuple[Path, Path]], list[str]]:
    """-> ([(path, its path under --out)], [error lines]). Folders are searched (recursively) for
    ``suffixes`` (default: images and videos; ``"all"``: every file but hidden ones), leaving out what
    :func:`earlier_outputs` names; an input file of any type is kept (it fails later, with a message, if
    unreadable)."""
    suffixes = IMAGE_SUFFIXES | VIDEO_SUFFIXES if suffixes is None else suffixes
    found, errors = [], []
    for text in inputs:
        if "\0" in text:
            errors.append(f"{text!r}: not a valid path")
            continue
        path = Path(text)
        if path.is_dir():
            files = (find_files(path, suffixes) if suffixes != "all" else
                     sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")))
            written = earlier_outputs(path, out, json_target)
            kept = [f for f in files if not any(f.relative_to(path).is_relative_to(w) for w in written)]
            if len(kept) < len(files):
                print(f"blazeface: note: {path}: left out {len(files) - len(kept)} file(s) under "
                      f"{', '.join(str(path / w) for w in written)}, where this command writes", file=sys.stderr)
            files = kept
            if not files:
                errors.append(f"{path}: folder holds no images or videos")
            root = Path(path.resolve().name)
            found.extend((f, root / f.relative_to(path)) for f in files)
        elif path.exists():
            found.append((path, Path(path.name)))
        else:
            errors.append(f"{path}: no such file or folder")
    return found, errors


class OutputPlan:
    """Hands out output paths: ``target(input, wanted)`` -> the path to write (``wanted`` or a distinct
    variant of it), or raises ``BlazefaceError`` when it would be one of the inputs."""

    def __init__(self, inputs: list[Path]):
        self._inputs = {p.resolve() for p in inputs}
        self._taken: dict[Path, Path] = {}  # resolved output -> the input writing it

    def target(self, source: Path, wanted: Path) -> Path:
        candidate, n = wanted, 1
        while True:
            key = candidate.resolve()
            if key in self._inputs or (candidate.exists() and same_file(candidate, source)):
                raise BlazefaceError(f"{source}: the output {candidate} would overwrite "
                                     f"{'the' if same_file(candidate, source) else 'an'} input; choose another "
                                     f"--out folder")
            if key not in self._taken:
                self._taken[key] = source
                return candidate
            n += 1
            candidate = wanted.with_name(f"{wanted.stem}-{n}{wanted.suffix}")


def check_out_folder(out: Path | None) -> None:
    """``--out`` must be a folder (made if missing), not a file."""
    if out is None:
        return
    if out.exists() and not out.is_dir():
        raise BlazefaceError(f"--out {out}: is a file; --out names a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BlazefaceError(f"--out {out}: cannot make this folder ({exc.strerror or exc})") from None


def check_json_target(target: str | None, inputs: list[Path] = (), outputs: list[Path] = ()) -> None:
    """``--json`` must name a writable file (or ``-``) that is neither one of the ``inputs`` (opening it
    would empty the photo before it is read) nor one of the ``outputs`` the command is about to write."""
    if not target or target == "-":
        return
    path = Path(target)
    if path.is_dir():
        raise BlazefaceError(f"--json {path}: is a folder; --json names a file (or '-' for stdout)")
    if not path.parent.is_dir():
        raise BlazefaceError(f"--json {path}: no folder {path.parent} to write it in")
    for source in inputs:
        if same_file(path, source):
            raise BlazefaceError(f"--json {path}: is an input; name a new file for the JSON Lines")
    for output in outputs:
        if path.resolve() == Path(output).resolve():
            raise BlazefaceError(f"--json {path}: is where an annotated or anonymised copy goes; name another "
                                 f"file for the JSON Lines")


def plan_targets(files: list[tuple[Path, Path]], wanted: Callable[[Path, Path], Path],
                 extra_inputs: list[Path] = ()) -> list[tuple[Path, Path | None, str | None]]:
    """[(input, output or None, error or None)] for every input, ``wanted(path, rel)`` naming its output."""
    plan = OutputPlan([p for p, _ in files] + list(extra_inputs))
    out = []
    for path, rel in files:
        want = wanted(path, rel)
        try:
            target = plan.target(path, want)
        except BlazefaceError as exc:
            out.append((path, None, str(exc)))
            continue
        if target != want:
            print(f"blazeface: note: {path} -> {target} ({want} is another input's output)", file=sys.stderr)
        out.append((path, target, None))
    return out
