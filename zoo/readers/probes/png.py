"""Line charts as PNG files with numpy and zlib only (no plotting library to install).

Enough for the probing reports: a title, axes with tick labels, a few series with
markers (solid or dashed), and a legend, in a built-in 3x5 pixel font (upper case,
digits and some punctuation) drawn at twice its size.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_GLYPHS = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001010010",
    "8": "111101111101111", "9": "111101111001111", "A": "010101111101101", "B": "110101110101110",
    "C": "011100100100011", "D": "110101101101110", "E": "111100110100111", "F": "111100110100100",
    "G": "011100101101011", "H": "101101111101101", "I": "111010010010111", "J": "001001001101010",
    "K": "101101110101101", "L": "100100100100111", "M": "101111111101101", "N": "101111111111101",
    "O": "010101101101010", "P": "110101110100100", "Q": "010101101110011", "R": "110101110101101",
    "S": "011100010001110", "T": "111010010010010", "U": "101101101101111", "V": "101101101101010",
    "W": "101101111111101", "X": "101101010101101", "Y": "101101010010010", "Z": "111001010100111",
    " ": "000000000000000", ".": "000000000000010", ",": "000000000010100", "-": "000000111000000",
    "_": "000000000000111", ":": "000010000010000", "(": "001010010010001", ")": "100010010010100",
    "/": "001001010100100", "=": "000111000111000", "+": "000010111010000", "%": "101001010100101",
    "<": "001010100010001", ">": "100010001010100", "?": "111001010000010", "#": "101111101111101",
    "*": "101010101000000", "'": "010010000000000",
}
_SCALE = 2
CHAR_W = 4 * _SCALE  # glyph 3 wide + 1 spacing
CHAR_H = 5 * _SCALE

PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (0, 0, 128), (128, 0, 0),
]


class Canvas:
    def __init__(self, width: int, height: int):
        self.pixels = np.full((height, width, 3), 255, dtype=np.uint8)

    @property
    def width(self) -> int:
        return self.pixels.shape[1]

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    def rect(self, x0: int, y0: int, x1: int, y1: int, color) -> None:
        x0, x1 = sorted((max(0, int(x0)), min(self.width, int(x1))))
        y0, y1 = sorted((max(0, int(y0)), min(self.height, int(y1))))
        self.pixels[y0:y1, x0:x1] = color

    def line(self, x0: float, y0: float, x1: float, y1: float, color, width: int = 1, dash: int = 0) -> None:
        n = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
        t = np.linspace(0.0, 1.0, n)
        xs = np.round(x0 + (x1 - x0) * t).astype(int)
        ys = np.round(y0 + (y1 - y0) * t).astype(int)
        if dash:
            keep = (np.arange(n) // dash) % 2 == 0
            xs, ys = xs[keep], ys[keep]
        half = width // 2
        for dx in range(-half, width - half):
            for dy in range(-half, width - half):
                px, py = xs + dx, ys + dy
                ok = (px >= 0) & (px < self.width) & (py >= 0) & (py < self.height)
                self.pixels[py[ok], px[ok]] = color

    def text(self, x: int, y: int, text: str, color=(0, 0, 0)) -> None:
        for i, char in enumerate(text.upper()):
            glyph = _GLYPHS.get(char, _GLYPHS["?"])
            for bit, on in enumerate(glyph):
                if on == "1":
                    gx, gy = x + i * CHAR_W + (bit % 3) * _SCALE, y + (bit // 3) * _SCALE
                    self.rect(gx, gy, gx + _SCALE, gy + _SCALE, color)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_bytes(encode_png(self.pixels))
        return path


def text_width(text: str) -> int:
    return len(text) * CHAR_W


def encode_png(pixels: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of ``pixels [H, W, 3]`` (uint8)."""
    height, width, _ = pixels.shape
    raw = np.concatenate([np.zeros((height, 1), dtype=np.uint8), pixels.reshape(height, -1)], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


@dataclass(frozen=True)
class Series:
    label: str
    ys: Sequence[float]  # one per x position; NaN leaves a gap
    dashed: bool = False
    color: tuple[int, int, int] | None = None


def line_chart(
    path: str | Path,
    series: Sequence[Series],
    x_labels: Sequence[str],
    title: str = "",
    x_title: str = "",
    y_title: str = "",
    y_range: tuple[float, float] = (0.0, 1.0),
    width: int = 720,
    height: int = 420,
) -> Path:
    """A line chart with one point per x label for every series, saved as PNG."""
    legend_w = max([text_width(s.label) for s in series] + [0]) + 40
    left, right, top, bottom = 56, legend_w + 16, 36, 56
    canvas = Canvas(width + legend_w, height)
    x0, x1, y0, y1 = left, canvas.width - right, top, height - bottom
    lo, hi = y_range
    span = hi - lo if hi > lo else 1.0

    def px(i: int) -> float:
        return x0 + (x1 - x0) * ((i + 0.5) / max(len(x_labels), 1))

    def py(v: float) -> float:
        return y1 - (y1 - y0) * (min(max(v, lo), hi) - lo) / span

    canvas.text(left, 4, title)
    canvas.text(4, 20, y_title, (90, 90, 90))
    for k in range(5):
        value = lo + span * k / 4
        y = py(value)
        canvas.line(x0, y, x1, y, (225, 225, 225))
        label = f"{value:.2f}"
        canvas.text(x0 - text_width(label) - 4, int(y) - CHAR_H // 2, label)
    canvas.line(x0, y0, x0, y1, (0, 0, 0))
    canvas.line(x0, y1, x1, y1, (0, 0, 0))
    for i, label in enumerate(x_labels):
        x = px(i)
        canvas.line(x, y1, x, y1 + 4, (0, 0, 0))
        canvas.text(int(x - text_width(label) / 2), y1 + 8, label)
    canvas.text(int((x0 + x1) / 2 - text_width(x_title) / 2), y1 + 28, x_title)
    for n, s in enumerate(series):
        color = s.color or PALETTE[n % len(PALETTE)]
        dashed = s.dashed or (s.color is None and n >= len(PALETTE))  # the palette's second round is dashed
        points = [(px(i), py(v)) for i, v in enumerate(s.ys) if v is not None and np.isfinite(v)]
        ys = list(s.ys)
        for i in range(len(ys) - 1):
            a, b = ys[i], ys[i + 1]
            if a is not None and b is not None and np.isfinite(a) and np.isfinite(b):
                canvas.line(px(i), py(a), px(i + 1), py(b), color, width=2, dash=6 if dashed else 0)
        for x, y in points:
            canvas.rect(x - 3, y - 3, x + 4, y + 4, color)
        ly = top + 8 + n * (CHAR_H + 8)
        lx = x1 + 16
        canvas.line(lx, ly + CHAR_H // 2, lx + 18, ly + CHAR_H // 2, color, width=2, dash=4 if dashed else 0)
        canvas.text(lx + 24, ly, s.label)
    return canvas.save(path)
