"""Video frames in and out (OpenCV), with one-line errors naming the file."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from .errors import BlazefaceError


class VideoReader:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise BlazefaceError(f"{self.path}: no such file")
        self.capture = cv2.VideoCapture(str(self.path))
        if not self.capture.isOpened():
            raise BlazefaceError(f"{self.path}: not a readable video")
        self.fps = self.capture.get(cv2.CAP_PROP_FPS) or 25.0
        self.size = (int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self.frame_count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frames_read = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.capture.release()

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            ok, frame = self.capture.read()
            if not ok:
                break
            self.frames_read += 1
            yield frame
        if self.frames_read == 0:
            raise BlazefaceError(f"{self.path}: video holds no readable frames")

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


# OpenCV encoders per container (those its bundled FFmpeg can write); anything else gets mp4v.
FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "XVID", ".webm": "VP80"}


class VideoWriter:
    """OpenCV video writer choosing the codec for the container its suffix names."""

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fourcc = FOURCC.get(self.path.suffix.lower(), "mp4v")
        self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if not self.writer.isOpened():
            raise BlazefaceError(f"{self.path}: cannot open for writing ({fourcc} in {self.path.suffix or 'no'} "
                                 "container)")

    def write(self, frame: np.ndarray) -> None:
        self.writer.write(frame)

    def close(self) -> None:
        self.writer.release()
