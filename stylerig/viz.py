"""Images for people: tensor -> uint8 conversion and labelled grids (rows and columns named)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["labelled_grid", "to_uint8"]


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1] -> uint8 arrays.

    Args:
        images: float [B, 3, H, W] in [-1, 1] (values outside are clamped).

    Returns:
        uint8 numpy array [B, H, W, 3] (``round((x + 1) * 127.5)``).
    """
    x = ((images.detach().float().clamp(-1, 1) + 1.0) * 127.5).round()
    return x.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _text_image(text: str, width: int, height: int, *, rotate: bool = False) -> np.ndarray:
    """White text on a dark background, uint8 [height, width, 3]."""
    from PIL import Image, ImageDraw, ImageFont

    w, h = (height, width) if rotate else (width, height)
    img = Image.new("RGB", (w, h), (24, 24, 24))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    box = draw.textbbox((0, 0), text, font=font)
    tw, th = box[2] - box[0], box[3] - box[1]
    draw.text(((w - tw) / 2 - box[0], (h - th) / 2 - box[1]), text, fill=(235, 235, 235), font=font)
    if rotate:
        img = img.rotate(90, expand=True)
    return np.asarray(img)


def labelled_grid(
    cells: Sequence[Sequence[np.ndarray]],
    row_labels: Sequence[str],
    col_labels: Sequence[str] | Sequence[Sequence[str]],
    *,
    pad: int = 2,
    label_width: int = 110,
    label_height: int = 18,
) -> np.ndarray:
    """Assemble a grid image with a label for every row (left) and column (top).

    Args:
        cells: rows of uint8 images [h, w, 3], all the same size; ``cells[i][j]`` is row i, column j.
        row_labels: one label per row.
        col_labels: one label per column, or one list of labels per row (then each row carries its
            own column captions under the cells).
        pad: pixels between cells.
        label_width, label_height: size of the row-label column and the column-label bar.

    Returns:
        uint8 [H, W, 3].
    """
    n_rows = len(cells)
    n_cols = max(len(r) for r in cells)
    h, w = cells[0][0].shape[:2]
    per_row = bool(col_labels) and not isinstance(col_labels[0], str)
    cap = label_height if per_row else 0
    top = 0 if per_row else label_height
    H = top + n_rows * (h + cap + pad) + pad
    W = label_width + n_cols * (w + pad) + pad
    out = np.full((H, W, 3), 24, np.uint8)
    if not per_row:
        for j, lab in enumerate(col_labels):
            x = label_width + pad + j * (w + pad)
            out[0:label_height, x : x + w] = _text_image(str(lab), w, label_height)
    for i, row in enumerate(cells):
        y = top + pad + i * (h + cap + pad)
        out[y : y + h, 0:label_width] = _text_image(str(row_labels[i]), label_width, h)
        for j, cell in enumerate(row):
            x = label_width + pad + j * (w + pad)
            out[y : y + h, x : x + w] = cell
            if per_row:
                out[y + h : y + h + cap, x : x + w] = _text_image(str(col_labels[i][j]), w, cap)
    return out
