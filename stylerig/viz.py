"""Images for people: tensor -> uint8 conversion and labelled grids (rows and columns named)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "grid_cell_origin",
    "labelled_grid",
    "pair_grid",
    "plot_parameter_statistics",
    "plot_slot_profile",
    "titled_panels",
    "to_uint8",
]


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


def grid_cell_origin(
    row: int,
    col: int,
    cell_size: tuple[int, int],
    *,
    pad: int = 2,
    label_width: int = 110,
    label_height: int = 18,
    per_row_captions: bool = False,
) -> tuple[int, int]:
    """Top-left pixel (y, x) of cell (row, col) in a :func:`labelled_grid` with the same settings.

    Args:
        cell_size: (h, w) of each cell. per_row_captions: True when ``col_labels`` was given per row.
    """
    h, w = cell_size
    cap = label_height if per_row_captions else 0
    top = 0 if per_row_captions else label_height
    return top + pad + row * (h + cap + pad), label_width + pad + col * (w + pad)


def pair_grid(
    sources: np.ndarray | Sequence[np.ndarray],
    targets: np.ndarray | Sequence[np.ndarray],
    cells: np.ndarray | Sequence[Sequence[np.ndarray]],
    source_labels: Sequence[str],
    target_labels: Sequence[str],
    **grid_kw: int,
) -> np.ndarray:
    """The paper's transfer figure (Figures 5 and 9): sources down the left, targets across the top.

    Grid cell (0, 0) is blank; (0, j + 1) holds ``targets[j]``; (i + 1, 0) holds ``sources[i]``; and
    (i + 1, j + 1) holds ``cells[i][j]`` (target j given source i's parameters). Row labels are
    ``["target", *source_labels]``, column labels ``["source", *target_labels]``; positions follow
    :func:`grid_cell_origin`.

    Args:
        sources: S uint8 images [h, w, 3]; targets: T of them; cells: S rows of T images.
        grid_kw: ``pad``, ``label_width``, ``label_height`` of :func:`labelled_grid`.

    Returns:
        uint8 [H, W, 3].
    """
    S, T = len(sources), len(targets)
    if len(cells) != S or any(len(r) != T for r in cells):
        raise ValueError(f"pair_grid needs {S} rows of {T} cells")
    if len(source_labels) != S or len(target_labels) != T:
        raise ValueError("pair_grid needs one label per source and per target")
    blank = np.full_like(np.asarray(targets[0]), 24)
    rows = [[blank, *targets]] + [[sources[i], *cells[i]] for i in range(S)]
    return labelled_grid(rows, ["target", *source_labels], ["source", *target_labels], **grid_kw)


def titled_panels(
    panels: Sequence[np.ndarray], titles: Sequence[str], *, gap: int = 12, title_height: int = 20
) -> np.ndarray:
    """Images side by side, each under a title bar (heights padded to the tallest): uint8 [H, W, 3]."""
    if len(panels) != len(titles) or not panels:
        raise ValueError("titled_panels needs one title per panel")
    H = max(p.shape[0] for p in panels) + title_height
    W = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    out = np.full((H, W, 3), 24, np.uint8)
    x = 0
    for p, t in zip(panels, titles, strict=True):
        out[:title_height, x : x + p.shape[1]] = _text_image(t, p.shape[1], title_height)
        out[title_height : title_height + p.shape[0], x : x + p.shape[1]] = p
        x += p.shape[1] + gap
    return out


def _mark_slot_groups(ax: object, groups: dict[str, Sequence[int]]) -> None:
    colours = {"coarse": "#4c72b0", "middle": "#55a868", "fine": "#c44e52"}
    for name, slots in groups.items():
        if not len(slots):
            continue
        ax.axvspan(slots[0] - 0.5, slots[-1] + 0.5, color=colours.get(name, "#999999"), alpha=0.08)  # type: ignore[attr-defined]
        ax.text(  # type: ignore[attr-defined]
            (slots[0] + slots[-1]) / 2,
            1.0,
            name,
            ha="center",
            va="bottom",
            transform=ax.get_xaxis_transform(),
            fontsize=9,  # type: ignore[attr-defined]
        )


def plot_slot_profile(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    groups: dict[str, Sequence[int]],
    path: str | os.PathLike[str],
    *,
    title: str = "Change of each ws slot per edit (paper Fig. 4)",
) -> None:
    """Mean ± spread of ‖ŵ_i − w_i‖ per ws slot, one curve per rig / mode (the paper's Figure 4).

    Args:
        curves: label -> (mean float [S], std float [S]).
        groups: style-mixing group name -> slots (shaded and named: coarse / middle / fine).
        path: PNG file to write (atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.0), dpi=120)
    for label, (mean, std) in curves.items():
        x = np.arange(len(mean))
        line = ax.plot(x, mean, marker="o", ms=3, label=label)[0]
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    _mark_slot_groups(ax, groups)
    ax.set_xlabel("ws slot i")
    ax.set_ylabel("||ŵ_i − w_i||  (mean ± std)")
    ax.set_title(title, pad=16)
    ax.set_xticks(np.arange(max(len(m) for m, _ in curves.values())) if curves else [])
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save_figure(fig, path)


def plot_parameter_statistics(
    stats: dict[str, dict[str, np.ndarray]],
    path: str | os.PathLike[str],
    *,
    title: str = "Distribution of F(w) over the sample set (paper Fig. 6)",
) -> None:
    """Per-parameter mean (dots) and variance (bars) for each group (the paper's Figure 6).

    Args:
        stats: group -> {"mean": [k], "var": [k], optionally "truth_mean"/"truth_var": [k],
            "labels": [k] str}; rotation in degrees (variance in deg²).
        path: PNG file to write (atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(stats)
    fig, axes = plt.subplots(n, 2, figsize=(11, 2.6 * n), dpi=110, squeeze=False)
    for r, (group, s) in enumerate(stats.items()):
        x = np.arange(len(s["mean"]))
        unit = " (deg)" if group == "rotation" else ""
        for c, key in enumerate(("mean", "var")):
            ax = axes[r][c]
            ax.bar(
                x - 0.2 if "truth_" + key in s else x,
                s[key],
                width=0.4 if "truth_" + key in s else 0.8,
                label="F(w)",
            )
            if "truth_" + key in s:
                ax.bar(x + 0.2, s["truth_" + key], width=0.4, label="ground truth", alpha=0.7)
                ax.legend(fontsize=7)
            ax.set_title(
                f"{group}: {key}{unit if key == 'mean' else (' (deg²)' if group == 'rotation' else '')}",
                fontsize=9,
            )
            if len(x) <= 8:
                ax.set_xticks(x)
                ax.set_xticklabels([str(v) for v in s.get("labels", x)], fontsize=8)
            ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title)
    fig.tight_layout()
    _save_figure(fig, path)


def _save_figure(fig: object, path: str | os.PathLike[str]) -> None:
    import io

    import matplotlib.pyplot as plt

    from stylerig.outputs import atomic_write

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    atomic_write(path, buf.getvalue())
