"""Image and video input with one-line errors that name the file."""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from .errors import BlazefaceError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}
# OpenCV refuses to decode images over this many pixels (OPENCV_IO_MAX_IMAGE_PIXELS moves the limit).
MAX_PIXELS = int(os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", 1 << 30))


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as a BGR uint8 array (H, W, 3), upright (EXIF orientation applied)."""
    return decode_image(path, cv2.IMREAD_COLOR)


def decode_image(path: str | Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """Decode an image file with OpenCV ``flags``; every failure (missing, a folder, empty, corrupt, over
    OpenCV's pixel limit) is a ``BlazefaceError`` naming the file."""
    path = Path(path)
    if not path.exists():
        raise BlazefaceError(f"{path}: no such file")
    if path.is_dir():
        raise BlazefaceError(f"{path}: is a folder, not an image")
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise BlazefaceError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if data.size == 0:
        raise BlazefaceError(f"{path}: empty file")
    try:
        image = cv2.imdecode(data, flags)
    except cv2.error as exc:
        if "limit" in str(exc).lower() or "CV_IO_MAX_IMAGE" in str(exc):
            raise BlazefaceError(f"{path}: image too large for OpenCV (over {MAX_PIXELS} pixels; the "
                                 f"OPENCV_IO_MAX_IMAGE_PIXELS variable raises the limit)") from None
        raise BlazefaceError(f"{path}: not a readable image ({str(exc).strip().splitlines()[-1][:120]})") from None
    except MemoryError:
        raise BlazefaceError(f"{path}: image too large to decode in memory") from None
    if image is None:
        raise BlazefaceError(f"{path}: not a readable image (corrupt, unsupported format or too large)")
    return image


COLOR_ORDERS = ("bgr", "rgb")


def as_bgr(image, color: str = "bgr") -> np.ndarray:
    """An image -> contiguous BGR uint8 array (H, W, 3).

    Accepts a path, a PIL image, or a uint8 numpy array: (H, W, 3) in ``color`` channel order ("bgr",
    OpenCV's, or "rgb"), (H, W, 4) with alpha (BGRA / RGBA) or (H, W) grayscale. Anything else (float
    arrays, channels-first (3, H, W), empty arrays, other types) is a one-line error saying what is
    expected: a silent conversion would quietly find fewer or no faces.
    """
    if color not in COLOR_ORDERS:
        raise BlazefaceError(f"color must be 'bgr' or 'rgb', got {color!r}")
    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, np.ndarray):
        return _array_to_bgr(image, color)
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image without importing PIL
        return _pil_to_bgr(image)
    raise BlazefaceError(f"cannot read an image from {type(image).__name__}: pass a path, a PIL image or a "
                         "uint8 numpy array (H, W, 3)")


def _pil_to_bgr(image) -> np.ndarray:
    mode = image.mode
    if image.size[0] * image.size[1] == 0:
        raise BlazefaceError(f"image is empty ({image.size[0]}x{image.size[1]} pixels)")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        # 16-bit grey (a 16-bit PNG or TIFF opened by PIL): to 8 bits as OpenCV reads such a file from its path.
        # PIL's own convert("RGB") clips every value over 255 to white, and the detector would see a blank.
        return cv2.cvtColor((np.asarray(image) >> 8).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    if mode in ("I", "F") or mode.startswith("I;"):
        kind = "floats" if mode == "F" else "integers"
        raise BlazefaceError(f"PIL image of mode {mode} ({kind}) has no fixed value range: convert it to 8 bits "
                             "first, e.g. Image.fromarray(np.clip(np.asarray(image) * SCALE, 0, 255)"
                             ".astype(np.uint8)) with the SCALE that maps its white to 255")
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def _array_to_bgr(image: np.ndarray, color: str) -> np.ndarray:
    expected = "expected a uint8 array (H, W, 3) with values 0..255"
    if image.dtype != np.uint8:
        hints = {"f": " (for a float image in 0..1 pass (image * 255).round().astype(np.uint8))",
                 "u": f" (for {image.dtype.itemsize * 8}-bit values pass (image >> {image.dtype.itemsize * 8 - 8})"
                      ".astype(np.uint8))"}
        hint = hints.get(image.dtype.kind, "")
        raise BlazefaceError(f"image array has dtype {image.dtype}: {expected}{hint}")
    if image.size == 0:
        raise BlazefaceError(f"image array is empty (shape {image.shape}): {expected}")
    if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[2] not in (1, 3, 4):
        raise BlazefaceError(f"image array has shape {image.shape}, which looks channels-first: {expected}, "
                             "e.g. image.transpose(1, 2, 0)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise BlazefaceError(f"image array has shape {image.shape}: {expected} (or (H, W) grayscale, "
                             "(H, W, 4) with alpha)")
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2BGR if color == "rgb" else cv2.COLOR_BGRA2BGR)
    if color == "rgb":
        return np.ascontiguousarray(image[:, :, ::-1])
    return np.ascontiguousarray(image)


def find_files(root: Path, suffixes: set[str]) -> list[Path]:
    """Files under ``root`` (recursive) with one of ``suffixes``, sorted."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (hard links and symlinks included; by resolved path when either is
    missing)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


# atomic_target's temporary beside a file: hidden, named for the file and the writing process.
PARTIAL_NAME = ".{name}.{pid}.partial"
_PARTIAL_PATTERN = re.compile(r"\.(?P<name>.+)\.\d+\.partial")


@contextmanager
def atomic_target(path: str | Path, durable: bool = False) -> Iterator[Path]:
    """A temporary name beside ``path`` to write to; renamed over ``path`` when the block succeeds, deleted
    when it fails, so that ``path`` always holds either its old or its complete new contents (a killed or
    failed writer never leaves a torn file where a good one was). ``durable``: fsync the new contents
    before the rename, so that a power cut cannot leave ``path`` renamed but empty (checkpoints)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(PARTIAL_NAME.format(name=path.name, pid=os.getpid()))
    try:
        yield partial
        if durable:
            with open(partial, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def stale_partials(folder: str | Path, names: Iterable[str]) -> list[Path]:
    """The temporaries that :func:`atomic_target` left in ``folder`` for files called one of ``names`` when its
    process was killed mid-write (``.NAME.PID.partial``). Only safe to delete when no writer is in flight."""
    wanted = set(names)
    found = []
    for partial in Path(folder).glob(".*.partial"):
        match = _PARTIAL_PATTERN.fullmatch(partial.name)
        if match and match["name"] in wanted and partial.is_file():
            found.append(partial)
    return sorted(found)


# The file a long-running writer of a folder (a training run, a judge) holds an advisory lock on.
FOLDER_LOCK_NAME = ".lock"


@contextmanager
def exclusive_folder(folder: str | Path, option: str = "--out") -> Iterator[Path]:
    """Hold ``folder`` for one process during the block: a second process (or a second holder in this one)
    gets a ``BlazefaceError`` naming the folder and the holder's process id instead of writing into it. Two
    runs resumed into one folder would otherwise delete each other's temporaries and write checkpoints over
    each other. The lock is the operating system's (``flock``), so a killed holder frees the folder at once
    and a stale lock file never blocks; where ``fcntl`` is missing (Windows) the block runs unguarded."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield folder
        return
    path = folder / FOLDER_LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            raise BlazefaceError(f"{option} {folder}: in use by another running process (pid {holder}); wait for "
                                 "it to end or choose another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield folder
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def check_folder_free(folder: str | Path, option: str = "--out") -> None:
    """Fail now, with :func:`exclusive_folder`'s message, when another process holds ``folder`` (before a
    caller spends minutes on set-up that the lock would refuse later); holds nothing afterwards."""
    if Path(folder).is_dir():
        with exclusive_folder(folder, option):
            pass
