"""Drawing detections onto images (boxes, scores, the five landmarks)."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

# BGR colours of left eye, right eye, nose, left mouth corner, right mouth corner.
LANDMARK_COLOURS = ((255, 0, 0), (0, 255, 255), (255, 0, 255), (0, 255, 0), (0, 128, 255))
BOX_COLOUR = (0, 0, 255)


def draw_faces(image: np.ndarray, faces: Sequence, thickness: int | None = None) -> np.ndarray:
    """Return a copy of ``image`` with every face drawn (works for any object with box/score/landmarks)."""
    out = image.copy()
    t = thickness or max(1, round(max(image.shape[:2]) / 400))
    for face in faces:
        x1, y1, x2, y2 = (int(round(float(v))) for v in face.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), BOX_COLOUR, t)
        cv2.putText(out, f"{face.score:.2f}", (x1, max(0, y1 - 3)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.35 * t, (255, 255, 255), max(1, t // 2), cv2.LINE_AA)
        for (x, y), colour in zip(face.landmarks, LANDMARK_COLOURS):
            cv2.circle(out, (int(round(float(x))), int(round(float(y)))), t + 1, colour, -1)
    return out
