"""Video frames in (OpenCV) and out (the ffmpeg binary of ``imageio-ffmpeg``), with one-line errors naming
the file.

Outputs are H.264 in yuv420p (what every browser plays; VP9 for ``.webm``, which cannot hold H.264) at
about the input's bitrate, and keep the input's audio tracks. :class:`VideoOutput` writes beside the target
under a hidden name and moves the finished file into place, so a failure never leaves a partial video.
"""
from __future__ import annotations

import math
import os
import re
import subprocess
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from .errors import BlazefaceError

# A container's frame count is exact when it comes from an index (mp4, mov) and an estimate from the
# duration otherwise; a video this many frames short of it is cut, not mis-estimated.
TRUNCATION_TOLERANCE = 1


class VideoReader:
    """Frames of a video file (or a camera, given its index) as BGR uint8 arrays."""

    def __init__(self, source: str | Path | int):
        if isinstance(source, bool) or not isinstance(source, (str, Path, int)):
            raise BlazefaceError(f"video source {source!r}: expected a video file's path or a camera index (int)")
        if isinstance(source, int) and source < 0:
            # OpenCV reads -1 as "any camera" and crashes the process (SIGSEGV) when there is none.
            raise BlazefaceError(f"camera {source}: a camera index is >= 0 (0 is the first camera)")
        self.camera = isinstance(source, int)
        self.path = source if self.camera else Path(source)
        if not self.camera and not self.path.is_file():
            raise BlazefaceError(f"{self.path}: no such file")
        self.capture = cv2.VideoCapture(source if self.camera else str(self.path))
        if not self.capture.isOpened():
            raise BlazefaceError(f"{'camera ' if self.camera else ''}{self.path}: not a readable video")
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and math.isfinite(fps) and fps > 0 else 25.0
        self.size = (int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self.frame_count = 0 if self.camera else max(0, int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT)))
        self.frames_read = 0
        self.timestamps: list[float] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.capture.release()

    def __iter__(self) -> Iterator[np.ndarray]:
        start = time.monotonic()
        while True:
            ok, frame = self.capture.read()
            if not ok:
                break
            self.frames_read += 1
            if self.camera:
                self.timestamps.append(time.monotonic() - start)
            else:
                msec = self.capture.get(cv2.CAP_PROP_POS_MSEC)
                self.timestamps.append(msec / 1000 if msec > 0 or self.frames_read == 1
                                       else (self.frames_read - 1) / self.fps)
            yield frame
        if self.frames_read == 0:
            raise BlazefaceError(f"{self.path}: video holds no readable frames")
        if self.frame_count - self.frames_read > TRUNCATION_TOLERANCE:
            raise BlazefaceError(f"{self.path}: video is cut short or damaged: read {self.frames_read} of its "
                                 f"{self.frame_count} frames")

    def batches(self, size: int) -> Iterator[tuple[int, list[np.ndarray]]]:
        """(index of the first frame, frames) in groups of ``size``."""
        chunk, first = [], 0
        for frame in self:
            chunk.append(frame)
            if len(chunk) == size:
                yield first, chunk
                first += len(chunk)
                chunk = []
        if chunk:
            yield first, chunk


@dataclass
class StreamFrame:
    """One frame of :meth:`FaceDetector.stream`: its index, its time in seconds (from the container, or
    since the camera opened), the BGR image and what ``detect`` returned for it."""

    index: int
    timestamp: float
    image: np.ndarray
    faces: object

    def __iter__(self):  # index, timestamp, image, faces = frame
        return iter((self.index, self.timestamp, self.image, self.faces))


def stream_faces(detector, source: str | Path | int, batch_size: int = 8, reader: VideoReader | None = None
                 ) -> Iterator[StreamFrame]:
    """The one frame loop of the package: every frame of ``source`` (a video path or a camera index) with
    ``detector``'s faces, detected ``batch_size`` frames at a time. A video cut short raises
    :class:`BlazefaceError` after its last readable frame."""
    if batch_size < 1:
        raise BlazefaceError(f"batch size must be >= 1, got {batch_size}")
    own = reader is None
    reader = VideoReader(source) if own else reader
    try:
        for first, frames in reader.batches(1 if reader.camera else batch_size):
            for k, (frame, faces) in enumerate(zip(frames, detector.detect_batch(frames, batch_size))):
                yield StreamFrame(first + k, reader.timestamps[first + k], frame, faces)
    finally:
        if own:
            reader.capture.release()


# --------------------------------------------------------------------------------------------------
# Writing

def ffmpeg_exe() -> str:
    """The ffmpeg binary of ``imageio-ffmpeg``."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        import shutil

        found = shutil.which("ffmpeg")
        if found:
            return found
    raise BlazefaceError("writing videos needs ffmpeg: pip install imageio-ffmpeg")


@lru_cache(maxsize=None)
def _encoders() -> frozenset[str]:
    result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-encoders"], capture_output=True, text=True,
                            errors="replace")
    return frozenset(m.group(1) for m in re.finditer(r"^\s*V\S*\s+(\S+)", result.stdout, re.MULTILINE))


# Browser-playable encoders, best first, per container family (``.webm`` cannot hold H.264).
_ENCODERS = {"webm": ("libvpx-vp9", "libvpx"), "other": ("libx264", "libopenh264", "libvpx-vp9", "mpeg4")}


def video_encoder(suffix: str) -> str:
    """The encoder ``VideoWriter`` uses for a container: libx264 (H.264) where the bundled ffmpeg has it,
    else the best browser-playable one it has."""
    family = "webm" if suffix.lower() == ".webm" else "other"
    available = _encoders()
    for name in _ENCODERS[family]:
        if name in available:
            if family == "other" and name != "libx264":
                _warn_once(f"the ffmpeg binary ({ffmpeg_exe()}) has no libx264: writing videos with {name}")
            return name
    raise BlazefaceError(f"the ffmpeg binary ({ffmpeg_exe()}) has none of the encoders "
                         f"{', '.join(_ENCODERS[family])} for {suffix or 'suffix-less'} videos")


@lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    import sys

    print(f"blazeface: warning: {message}", file=sys.stderr)


def probe(path: str | Path) -> dict:
    """What ffmpeg says of a media file: ``{"video_codec", "pix_fmt", "video_kbps", "kbps", "audio"}``
    (None where it does not say)."""
    result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True,
                            text=True, errors="replace")
    info = {"video_codec": None, "pix_fmt": None, "video_kbps": None, "kbps": None,
            "audio": re.search(r"^\s*Stream #\d+:\d+.*?: Audio:", result.stderr, re.MULTILINE) is not None}
    total = re.search(r"bitrate: (\d+) kb/s", result.stderr)
    if total:
        info["kbps"] = int(total.group(1))
    video = re.search(r"^\s*Stream #\d+:\d+.*?: Video: (\w+)[^,\n]*, (\w+)(.*)$", result.stderr, re.MULTILINE)
    if video:
        info["video_codec"], info["pix_fmt"] = video.group(1), video.group(2)
        rate = re.search(r"(\d+) kb/s", video.group(3))
        if rate:
            info["video_kbps"] = int(rate.group(1))
    return info


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no message"


class VideoWriter:
    """BGR frames -> a video file through ffmpeg: H.264 yuv420p (see :func:`video_encoder`), ``kbps`` the
    target bitrate (None: the encoder's default quality). Odd sizes are padded by one pixel (yuv420p
    needs even ones)."""

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int], kbps: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.size = (int(size[0]), int(size[1]))
        self.encoder = video_encoder(self.path.suffix)
        command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", "-f", "rawvideo",
                   "-pix_fmt", "bgr24", "-s", f"{self.size[0]}x{self.size[1]}", "-r", f"{fps:.6g}", "-i", "-",
                   "-an", "-c:v", self.encoder, "-pix_fmt", "yuv420p",
                   "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"]
        if kbps:
            command += ["-b:v", f"{kbps}k", "-maxrate", f"{2 * kbps}k", "-bufsize", f"{2 * kbps}k"]
        elif self.encoder == "libx264":
            command += ["-crf", "18"]
        if self.path.suffix.lower() in (".mp4", ".m4v", ".mov"):
            command += ["-movflags", "+faststart"]
        command.append(str(self.path))
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)

    def write(self, frame: np.ndarray) -> None:
        if frame.shape[:2] != (self.size[1], self.size[0]):
            raise BlazefaceError(f"{self.path}: frame of {frame.shape[1]}x{frame.shape[0]} in a "
                                 f"{self.size[0]}x{self.size[1]} video")
        try:
            self._process.stdin.write(np.ascontiguousarray(frame, np.uint8).tobytes())
        except BrokenPipeError:
            self.close()  # raises with ffmpeg's message

    def close(self) -> None:
        if self._process.stdin and not self._process.stdin.closed:
            try:
                self._process.stdin.close()
            except BrokenPipeError:
                pass
        error = self._process.stderr.read().decode(errors="replace")
        self._process.stderr.close()
        if self._process.wait() != 0:
            raise BlazefaceError(f"{self.path}: ffmpeg could not encode the video ({_last_line(error)})")

    def abort(self) -> None:
        self._process.kill()
        self._process.wait()
        for stream in (self._process.stdin, self._process.stderr):
            try:
                stream.close()
            except OSError:
                pass


def mux_audio(video: str | Path, audio_source: str | Path, out: str | Path) -> None:
    """Write ``out``: the video stream of ``video`` (copied) and every audio stream of ``audio_source``
    (copied; re-encoded with the container's default codec when the container cannot hold it)."""
    base = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", "-i", str(video), "-i",
            str(audio_source), "-map", "0:v:0", "-map", "1:a", "-c:v", "copy"]
    if Path(out).suffix.lower() in (".mp4", ".m4v", ".mov"):
        base += ["-movflags", "+faststart"]
    for audio in (["-c:a", "copy"], []):
        result = subprocess.run(base + audio + ["-f", _muxer(out), str(out)], capture_output=True, text=True,
                                errors="replace")
        if result.returncode == 0:
            return
    Path(out).unlink(missing_ok=True)
    raise BlazefaceError(f"{audio_source}: could not copy the audio track ({_last_line(result.stderr)})")


_MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}


def _muxer(path: str | Path) -> str:
    return _MUXERS.get(Path(path).suffix.lower(), "mp4")


class VideoOutput:
    """The video ``dst`` written like ``like`` (its frame rate, about its bitrate, its audio tracks), frame
    by frame; it appears at ``dst`` only when :meth:`close` succeeds. Used as a context manager, an
    exception inside the block removes everything written so far.

    >>> with VideoOutput("out.mp4", like="in.mp4", fps=25) as out:
    ...     for frame in frames: out.write(frame)
    """

    def __init__(self, dst: str | Path, like: str | Path | None = None, fps: float = 25.0):
        self.dst = Path(dst)
        self.like = None if like is None or isinstance(like, int) else Path(like)
        self.fps = fps
        self.dst.parent.mkdir(parents=True, exist_ok=True)
        self._video = self.dst.with_name(f".{self.dst.name}.{os.getpid()}.video{self.dst.suffix}")
        self._muxed = self.dst.with_name(f".{self.dst.name}.{os.getpid()}.muxed{self.dst.suffix}")
        self._writer: VideoWriter | None = None
        self.source = probe(self.like) if self.like is not None else {}
        self.audio = bool(self.source.get("audio"))

    def _kbps(self) -> int | None:
        video, total = self.source.get("video_kbps"), self.source.get("kbps")
        if video:
            return video
        # No per-stream figure (e.g. Matroska): the container's rate, less a typical audio track's.
        return max(total - (128 if self.audio else 0), total // 2) if total else None

    def write(self, frame: np.ndarray) -> None:
        if self._writer is None:  # sized by the decoded frames (rotated videos come upright)
            self._writer = VideoWriter(self._video, self.fps, (frame.shape[1], frame.shape[0]), self._kbps())
        self._writer.write(frame)

    def close(self) -> None:
        """Finish encoding, copy the audio back and move the result to ``dst``."""
        try:
            if self._writer is None:
                raise BlazefaceError(f"{self.dst}: no frames to write")
            self._writer.close()
            if self.audio:
                mux_audio(self._video, self.like, self._muxed)
                os.replace(self._muxed, self.dst)
            else:
                os.replace(self._video, self.dst)
        finally:
            self._cleanup()

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()
        self._cleanup()

    def _cleanup(self) -> None:
        for path in (self._video, self._muxed):
            path.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
