"""Draw the latest description or answer onto a frame, for rqt_image_view / RViz."""
from __future__ import annotations

import textwrap

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX


def annotate(rgb: np.ndarray, text: str, max_lines: int = 4) -> np.ndarray:
    """A copy of `rgb` with `text` wrapped on a dark band across the top."""
    out = np.ascontiguousarray(rgb).copy()
    height, width = out.shape[:2]
    scale = max(0.35, width / 1280)
    thickness = 1 if scale < 0.8 else 2
    (char_w, char_h), baseline = cv2.getTextSize("M", FONT, scale, thickness)
    line_h = char_h + baseline + 4
    lines = textwrap.wrap(text, max(10, width // max(char_w, 1))) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines - 1] + [lines[max_lines - 1][:-3] + "..."]
    band = min(height, line_h * len(lines) + 6)
    out[:band] = (out[:band] * 0.35).astype(np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(out, line, (4, 4 + char_h + i * line_h), FONT, scale, (255, 255, 255),
                    thickness, cv2.LINE_AA)
    return out
