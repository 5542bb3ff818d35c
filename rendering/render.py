"""Qt painting of chips, legends, member-probability bars and ROC / precision-recall
curves into QImages (no matplotlib).  Only QtGui is used, so the Processing algorithms
can call it headless (qgis_process, tests) as well as the review dock."""
from __future__ import annotations

import math

import numpy as np
from qgis.PyQt.QtCore import QPointF, QRectF, Qt
from qgis.PyQt.QtGui import QColor, QFont, QFontMetrics, QImage, QLinearGradient, QPainter, QPen, QPolygonF

from .chips import Chip

TITLE_H = 18
LEGEND_H = 30
BG = QColor(255, 255, 255)
INK = QColor(40, 40, 40)
MUTED = QColor(110, 110, 110)



def _flags(*flags) -> int:
    """OR of Qt flags as the int QPainter.drawText takes (PyQt5 ints, PyQt6 enum.Flag)."""
    out = 0
    for f in flags:
        out |= f.value if hasattr(f, "value") else int(f)
    return out


_ALIGN_LEFT = _flags(Qt.AlignmentFlag.AlignLeft, Qt.AlignmentFlag.AlignVCenter)
_ALIGN_CENTER = _flags(Qt.AlignmentFlag.AlignCenter)
_ALIGN_RIGHT = _flags(Qt.AlignmentFlag.AlignRight, Qt.AlignmentFlag.AlignVCenter)
_WRAP_CENTER = _flags(Qt.AlignmentFlag.AlignCenter, Qt.TextFlag.TextWordWrap)


def _font(px: int, bold: bool = False) -> QFont:
    f = QFont()
    f.setPixelSize(px)
    f.setBold(bold)
    return f


def _blank(w: int, h: int) -> QImage:
    img = QImage(int(w), int(h), QImage.Format.Format_ARGB32_Premultiplied)
    img.fill(BG)
    return img


def array_to_qimage(rgb: np.ndarray) -> QImage:
    """(h, w, 3) uint8 -> an independent QImage (RGB888)."""
    a = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = a.shape[:2]
    return QImage(a.tobytes(), w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def chip_image(chip: Chip, size: int = 150) -> QImage:
    """Title, the chip scaled to ``size`` (nearest neighbour: pixels stay honest) with the
    tile outlined, and the chip's legend (or the reason it is missing)."""
    img = _blank(size, TITLE_H + size + LEGEND_H)
    p = QPainter(img)
    try:
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        p.setPen(INK)
        font = _font(11, True)
        p.setFont(font)
        title = QFontMetrics(font).elidedText(chip.title, Qt.TextElideMode.ElideRight, size)
        p.drawText(QRectF(0, 0, size, TITLE_H), _ALIGN_LEFT, title)
        box = QRectF(0, TITLE_H, size, size)
        if chip.ok:
            src = array_to_qimage(chip.rgb)
            sx, sy = size / src.width(), size / src.height()
            scaled = src.scaled(size, size, Qt.AspectRatioMode.IgnoreAspectRatio,
                                Qt.TransformationMode.FastTransformation)
            p.drawImage(box.topLeft(), scaled)
            x0, y0, x1, y1 = chip.tile_rect
            r = QRectF(x0 * sx, TITLE_H + y0 * sy, (x1 - x0) * sx, (y1 - y0) * sy)
            if r.width() > 0:
                p.setBrush(Qt.BrushStyle.NoBrush)
                p.setPen(QPen(QColor(0, 0, 0), 3))
                p.drawRect(r)
                pen = QPen(QColor(255, 255, 0), 1.4)
                pen.setStyle(Qt.PenStyle.DashLine)
                p.setPen(pen)
                p.drawRect(r)
        else:
            p.fillRect(box, QColor(238, 238, 238))
            p.setPen(QPen(QColor(200, 200, 200), 1))
            p.drawRect(box.adjusted(0.5, 0.5, -0.5, -0.5))
            p.setPen(MUTED)
            p.setFont(_font(11))
            p.drawText(box.adjusted(8, 8, -8, -8), _WRAP_CENTER,
                       chip.message or "Not available")
        _legend(p, chip, QRectF(0, TITLE_H + size + 4, size, LEGEND_H - 4))
    finally:
        p.end()
    return img


def _legend(p: QPainter, chip: Chip, rect: QRectF) -> None:
    p.setFont(_font(10))
    p.setPen(MUTED)
    if chip.legend is None:
        if chip.key == "s2_rgb" and chip.ok:
            p.drawText(rect, _ALIGN_LEFT, "2-98 % stretch, tile dashed")
        return
    lg = chip.legend
    bar = QRectF(rect.left() + 1, rect.top(), rect.width() - 2, 9)
    grad = QLinearGradient(bar.topLeft(), bar.topRight())
    for pos, (r, g, b) in lg.ramp:
        grad.setColorAt(pos, QColor(r, g, b))
    p.fillRect(bar, grad)
    p.setPen(QPen(QColor(150, 150, 150), 0.8))
    p.drawRect(bar)
    p.setPen(MUTED)
    ticks = lg.ticks()
    labels = [_fmt(t) for t in ticks]
    labels[-1] += f" {lg.unit}".rstrip()
    y = bar.bottom() + 1
    h = rect.bottom() - y
    third = rect.width() / 3
    p.drawText(QRectF(rect.left(), y, third, h), _ALIGN_LEFT, labels[0])
    p.drawText(QRectF(rect.left() + third, y, third, h), _ALIGN_CENTER, labels[1])
    p.drawText(QRectF(rect.left() + 2 * third, y, third, h), _ALIGN_RIGHT, labels[2])


def _fmt(v: float) -> str:
    return f"{v:+g}" if v != 0 else "0"


def chips_sheet(chips: list[Chip], size: int = 150, columns: int = 3, gap: int = 8) -> QImage:
    """All chips of a tile on one image (for reports)."""
    imgs = [chip_image(c, size) for c in chips]
    if not imgs:
        return _blank(1, 1)
    rows = math.ceil(len(imgs) / columns)
    cw, ch = imgs[0].width(), imgs[0].height()
    sheet = _blank(columns * cw + (columns - 1) * gap, rows * ch + (rows - 1) * gap)
    p = QPainter(sheet)
    try:
        for k, im in enumerate(imgs):
            p.drawImage(QPointF((k % columns) * (cw + gap), (k // columns) * (ch + gap)), im)
    finally:
        p.end()
    return sheet


def member_bars_image(members: dict, threshold: float | None = None, width: int = 300,
                      row_h: int = 18) -> QImage:
    """Horizontal bars of each member's probability, the ensemble threshold dashed."""
    names = list(members)
    label_w = int(width * 0.42)
    img = _blank(width, max(1, len(names)) * row_h + 6)
    p = QPainter(img)
    try:
        p.setFont(_font(11))
        bar_x, bar_w = label_w + 4, width - label_w - 48
        if not names:
            p.setPen(MUTED)
            p.drawText(QRectF(0, 0, width, row_h), _ALIGN_LEFT, "No member probabilities")
        for i, name in enumerate(names):
            y = 3 + i * row_h
            v = members[name]
            p.setPen(INK)
            p.drawText(QRectF(0, y, label_w, row_h), _ALIGN_LEFT, name)
            p.fillRect(QRectF(bar_x, y + 3, bar_w, row_h - 6), QColor(235, 235, 235))
            if v is not None and math.isfinite(v):
                col = QColor(215, 48, 39) if threshold is not None and v >= threshold else QColor(69, 117, 180)
                p.fillRect(QRectF(bar_x, y + 3, bar_w * min(max(v, 0.0), 1.0), row_h - 6), col)
                text = f"{v:.2f}"
            else:
                text = "n/a"
            p.drawText(QRectF(bar_x + bar_w + 4, y, 44, row_h), _ALIGN_LEFT, text)
        if threshold is not None and names:
            pen = QPen(INK, 1)
            pen.setStyle(Qt.PenStyle.DashLine)
            p.setPen(pen)
            x = bar_x + bar_w * threshold
            p.drawLine(QPointF(x, 1), QPointF(x, img.height() - 1))
    finally:
        p.end()
    return img


def curve_image(kind: str, x, y, title: str, point: tuple | None = None, baseline: float | None = None,
                size: tuple = (520, 460)) -> QImage:
    """A ROC (kind='roc': x = false positive rate, y = true positive rate) or
    precision-recall (kind='pr': x = recall, y = precision) curve on 0..1 axes.
    ``point``: the operating point (x, y, label); ``baseline``: PR chance level."""
    w, h = size
    img = _blank(w, h)
    left, top, right, bottom = 58, 40, 26, 50
    plot = QRectF(left, top, w - left - right, h - top - bottom)

    def to_px(xv, yv):
        return QPointF(plot.left() + xv * plot.width(), plot.bottom() - yv * plot.height())

    p = QPainter(img)
    try:
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        p.setPen(INK)
        p.setFont(_font(14, True))
        p.drawText(QRectF(0, 6, w, 26), _ALIGN_CENTER, title)
        p.setFont(_font(11))
        for k in range(6):
            v = k / 5
            p.setPen(QPen(QColor(225, 225, 225), 1))
            p.drawLine(to_px(v, 0), to_px(v, 1))
            p.drawLine(to_px(0, v), to_px(1, v))
            p.setPen(MUTED)
            a = to_px(v, 0)
            p.drawText(QRectF(a.x() - 20, a.y() + 4, 40, 16), _ALIGN_CENTER, f"{v:.1f}")
            b = to_px(0, v)
            p.drawText(QRectF(b.x() - 40, b.y() - 8, 34, 16), _ALIGN_RIGHT, f"{v:.1f}")
        p.setPen(QPen(INK, 1))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRect(plot)
        xl, yl = ("False positive rate", "True positive rate (recall)") if kind == "roc" else ("Recall", "Precision")
        p.setPen(INK)
        p.drawText(QRectF(plot.left(), h - 24, plot.width(), 18), _ALIGN_CENTER, xl)
        p.save()
        p.translate(14, plot.center().y())
        p.rotate(-90)
        p.drawText(QRectF(-plot.height() / 2, -8, plot.height(), 18), _ALIGN_CENTER, yl)
        p.restore()
        dash = QPen(QColor(150, 150, 150), 1.2)
        dash.setStyle(Qt.PenStyle.DashLine)
        p.setPen(dash)
        if kind == "roc":
            p.drawLine(to_px(0, 0), to_px(1, 1))
        elif baseline is not None and math.isfinite(baseline):
            p.drawLine(to_px(0, baseline), to_px(1, baseline))
        xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        ok = np.isfinite(xs) & np.isfinite(ys)
        if ok.sum() >= 2:
            xs, ys = xs[ok], ys[ok]
            if kind == "pr":  # precision is a step function of recall (as scikit-learn plots it)
                xs, ys = np.repeat(xs, 2)[1:], np.repeat(ys, 2)[:-1]
            poly = QPolygonF([to_px(a, b) for a, b in zip(xs, ys)])
            p.setPen(QPen(QColor(33, 102, 172), 2.2))
            p.drawPolyline(poly)
        else:
            p.setPen(MUTED)
            p.drawText(plot, _ALIGN_CENTER, "Undefined: the inventory gives a single class")
        if point is not None and all(math.isfinite(v) for v in point[:2]):
            c = to_px(point[0], point[1])
            p.setPen(QPen(QColor(0, 0, 0), 1))
            p.setBrush(QColor(215, 48, 39))
            p.drawEllipse(c, 5, 5)
            if len(point) > 2 and point[2]:
                p.setPen(INK)
                tx = c.x() + 8 if point[0] < 0.6 else c.x() - 208
                p.drawText(QRectF(tx, c.y() + 4, 200, 18),
                           _ALIGN_LEFT if point[0] < 0.6 else _ALIGN_RIGHT, point[2])
    finally:
        p.end()
    return img


def save_png(img: QImage, path: str) -> str:
    if not img.save(str(path), "PNG"):
        raise OSError(f"Could not write the image {path}")
    return str(path)
