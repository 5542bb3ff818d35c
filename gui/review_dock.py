"""The 'Review flagged tiles' dock: walk the flagged tiles of a detect grid, look at image
chips of each from the source layers, and record a verdict per tile.

Verdicts go to the grid's ``review`` / ``review_note`` fields through the data provider
at once (one small transaction per verdict), so nothing waits in an edit buffer and
closing QGIS loses nothing.

Review rounds: "Next tiles to review" draws a batch (engine/review_select.py: part
stratified random, part informative) and writes ``pick``, ``sample`` (numbered on) and
``stratum`` into the grid; each round adds to the sample.  A verdict on a tile no batch or
sample asked for gets ``pick = manual``.  The running estimate of the region's landslide
share (engine/design.py) follows each verdict.  "Adapt and re-score" (gui/rescore.py) adapts
the model to the verdicts and scores the same layers again in a background task.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from qgis.core import QgsCoordinateTransform, QgsFeatureRequest, QgsField, QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.gui import QgsCollapsibleGroupBox, QgsDockWidget, QgsMapLayerComboBox, QgsRubberBand
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QSize, Qt
from qgis.PyQt.QtGui import QColor, QKeySequence, QPixmap
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

try:
    from qgis.PyQt.QtWidgets import QShortcut
except ImportError:  # Qt6 without QGIS's re-export
    from qgis.PyQt.QtGui import QShortcut

from ..core.errors import InputError
from ..engine.design import estimate_share
from ..engine.review_rounds import batch_threshold, batch_values
from ..engine.review_select import next_batch
from ..engine.sampling import DEFAULT_PER_CLASS, extend_sample, sample_report, strata_of, stratum_to_record
from ..engine.verdicts import PICK_FIELD, PICK_MANUAL, PICK_RANDOM, STRATUM_FIELD, verdict_label
from ..rendering import render
from ..rendering.chips import S1_ROLES, ChipRenderer, Sources, chip_titles, finite_or_none, guess_sources
from ..rendering.compat import (
    CAN_ADD_FIELDS,
    CAN_CHANGE_VALUES,
    CRITICAL,
    INFO,
    INT,
    NO_GEOMETRY,
    POLYGON_FILTER,
    POLYGON_GEOMETRY,
    RASTER_FILTER,
    STRING,
    WARNING,
    is_null,
)

VERDICTS = ("confirmed", "rejected", "unsure")
REVIEW_FIELDS = ("review", "review_note")
REQUIRED_FIELDS = ("prob",)
SOURCE_LABELS = (("S2", "Sentinel-2 (R, G, B, NIR)"), ("S1_DESC_POST", "S1 descending, post-event"),
                 ("S1_DESC_PRE", "S1 descending, pre-event"), ("S1_ASC_POST", "S1 ascending, post-event"),
                 ("S1_ASC_PRE", "S1 ascending, pre-event"))
REVIEW_FILTERS = (("Any review state", None), ("Not reviewed", ""), ("Confirmed", "confirmed"),
                  ("Rejected", "rejected"), ("Unsure", "unsure"))
STATUS_FILTERS = (("Any status", None), ("ok", "ok"), ("nodata", "nodata"))
ORDERS = (("Highest probability first", "prob"), ("Most uncertain first", "uncertainty"))
VERDICT_COLOURS = {"confirmed": QColor(200, 30, 30), "rejected": QColor(90, 90, 90),
                   "unsure": QColor(220, 140, 0)}
CHIP_SIZE = 150
TITLE_ROW_H = CHIP_SIZE + render.TITLE_H + render.LEGEND_H + 12  # one row of chips
COL_TILE, COL_PROB, COL_REVIEW, COL_PICK = range(4)
DEFAULT_BATCH = 20
RANDOM_SHARE = 0.5  # half of each batch from the stratified random sample, half informative
FID_ROLE = Qt.ItemDataRole.UserRole


def _text(v) -> str:
    return "" if is_null(v) else str(v)


def pick_text(row) -> str:
    """How a listed tile was chosen: 'random #3' (sample number), 'informative', 'manual'..."""
    if row.sample:
        return f"{PICK_RANDOM} #{row.sample}"
    return row.pick


def is_grid_layer(layer) -> bool:
    """A polygon layer with the detect grid's probability field."""
    return (isinstance(layer, QgsVectorLayer) and layer.isValid()
            and layer.geometryType() == POLYGON_GEOMETRY
            and all(layer.fields().indexOf(f) >= 0 for f in REQUIRED_FIELDS))


@dataclass
class TileRow:
    fid: int
    tile_id: object
    row: object
    col: object
    prob: float | None
    flagged: bool
    status: str
    review: str
    uncertainty: float | None = None
    sample: int = 0  # number in the stratified random sample; 0 = not in it
    pick: str = ""  # how the tile was chosen for review (engine/verdicts.py PICK_*)
    stratum: int | None = None  # map class at the first stratified draw

    @property
    def label(self) -> str:
        rc = f" (r{self.row}, c{self.col})" if not is_null(self.row) else ""
        return f"{_text(self.tile_id) or self.fid}{rc}"


def filter_tiles(rows: list[TileRow], flagged_only=True, min_prob=0.0, status=None, review=None,
                 order="prob", sample_only=False, fids=None) -> list[TileRow]:
    """The tiles to review: highest probability first, or with ``order="uncertainty"`` the
    most uncertain first (engine/uncertainty.py); nodata tiles last.  ``sample_only``: only
    the tiles of the stratified accuracy sample (``sample`` field), flagged or not.
    ``fids``: only these tiles (a batch), flagged or not, in the batch's order."""
    if fids is not None:
        by_fid = {r.fid: r for r in rows}
        return [by_fid[f] for f in fids if f in by_fid
                and (status is None or by_fid[f].status == status) and (review is None or by_fid[f].review == review)]
    out = []
    for r in rows:
        if sample_only and not r.sample:
            continue
        if flagged_only and not sample_only and not r.flagged:
            continue
        if min_prob > 0 and (r.prob is None or r.prob < min_prob):
            continue
        if status is not None and r.status != status:
            continue
        if review is not None and r.review != review:
            continue
        out.append(r)
    if order == "uncertainty":
        out.sort(key=lambda r: (r.prob is None, r.uncertainty is None, -(r.uncertainty or 0.0), r.fid))
    else:
        out.sort(key=lambda r: (r.prob is None, -(r.prob or 0.0), r.fid))
    return out


class ReviewDock(QgsDockWidget):
    """Review flagged tiles of a ``landslide:detect`` grid."""

    def __init__(self, iface, parent=None):
        super().__init__(parent)
        self.iface = iface
        self.setObjectName("SentinelLandslideReviewDock")
        self.setWindowTitle("Sentinel Landslide: review flagged tiles")
        self.layer: QgsVectorLayer | None = None
        self.rows: list[TileRow] = []
        self.renderer: ChipRenderer | None = None
        self.rubber_band = None
        self.last_chips = []
        self._member_fields: list[str] = []
        self._warned: set = set()
        self._shown_fid = None
        self._build_ui()
        self._install_shortcuts()
        project = QgsProject.instance()
        project.layersAdded.connect(self.refresh_layers)
        project.layersRemoved.connect(self.refresh_layers)
        self.refresh_layers()
        if self.layer is None:  # the combo may have picked a layer before we listened
            self.set_layer(self.grid_combo.currentLayer())

    # -- UI ------------------------------------------------------------------------------
    def _build_ui(self):
        main = QWidget(self)
        lay = QVBoxLayout(main)
        lay.setContentsMargins(4, 4, 4, 4)

        form = QFormLayout()
        self.grid_combo = QgsMapLayerComboBox(main)
        self.grid_combo.setFilters(POLYGON_FILTER)
        self.grid_combo.setAllowEmptyLayer(True)
        self.grid_combo.setToolTip("A tile grid written by 'Detect landslides (Sentinel-1/2)'")
        form.addRow("Grid", self.grid_combo)
        self.zoom_check = QCheckBox("Zoom the map to each tile", main)
        self.zoom_check.setChecked(True)
        form.addRow("", self.zoom_check)
        lay.addLayout(form)

        self.sources_box = QgsCollapsibleGroupBox("Source layers for the chips", main)
        sform = QFormLayout(self.sources_box)
        self.source_combos = {}
        for role, label in SOURCE_LABELS:
            cb = QgsMapLayerComboBox(self.sources_box)
            cb.setFilters(RASTER_FILTER)
            cb.setAllowEmptyLayer(True)
            cb.setLayer(None)
            cb.layerChanged.connect(self._sources_changed)
            self.source_combos[role] = cb
            sform.addRow(label, cb)
        lay.addWidget(self.sources_box)

        filt = QHBoxLayout()
        self.flagged_only = QCheckBox("Flagged only", main)
        self.flagged_only.setChecked(True)
        self.min_prob = QDoubleSpinBox(main)
        self.min_prob.setRange(0.0, 1.0)
        self.min_prob.setSingleStep(0.05)  # 3 decimals: weak models score low
        self.min_prob.setDecimals(3)
        self.min_prob.setPrefix("prob >= ")
        self.min_prob.setToolTip("List only tiles with at least this probability")
        self.status_filter = QComboBox(main)
        for text, value in STATUS_FILTERS:
            self.status_filter.addItem(text, value)
        self.review_filter = QComboBox(main)
        for text, value in REVIEW_FILTERS:
            self.review_filter.addItem(text, value)
        for w in (self.flagged_only, self.min_prob, self.status_filter, self.review_filter):
            filt.addWidget(w)
        lay.addLayout(filt)
        filt2 = QHBoxLayout()
        self.order_combo = QComboBox(main)
        self.order_combo.setObjectName("order")
        for text, value in ORDERS:
            self.order_combo.addItem(text, value)
        self.order_combo.setToolTip("Order of the list; 'Most uncertain first' needs the grid's 'uncertainty' field")
        self.sample_only = QCheckBox("Sample tiles only", main)
        self.sample_only.setToolTip("List only the tiles of the stratified accuracy sample ('sample' field), "
                                    "flagged or not: review them all for landslide:accuracy")
        self.sample_button = QPushButton("Draw accuracy sample", main)
        self.sample_button.setToolTip("Mark a seeded stratified random sample of flagged and unflagged tiles in the "
                                      "grid's 'sample' field and list only them. An earlier sample is kept and "
                                      "topped up to this size per map class")
        self.sample_size = QDoubleSpinBox(main)
        self.sample_size.setDecimals(0)
        self.sample_size.setRange(2, 10000)
        self.sample_size.setValue(DEFAULT_PER_CLASS)
        self.sample_size.setPrefix("per class: ")
        for w in (self.order_combo, self.sample_only, self.sample_size, self.sample_button):
            filt2.addWidget(w)
        lay.addLayout(filt2)
        lay.addWidget(self._build_rounds(main))

        split = QSplitter(Qt.Orientation.Vertical, main)
        self.tree = QTreeWidget(split)
        self.tree.setHeaderLabels(["Tile", "Probability", "Review", "Picked"])
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.header().setSectionResizeMode(COL_TILE, QHeaderView.ResizeMode.Stretch)
        self.tree.setMinimumHeight(90)

        detail = QWidget(split)
        dl = QVBoxLayout(detail)
        dl.setContentsMargins(0, 0, 0, 0)
        self.info = QLabel("Choose a grid layer", detail)
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        dl.addWidget(self.info)
        chips_widget = QWidget()
        grid = QGridLayout(chips_widget)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(6)
        self.chip_labels = {}
        for k, (key, title) in enumerate(chip_titles()):
            lbl = QLabel(chips_widget)
            lbl.setObjectName(f"chip_{key}")
            lbl.setToolTip(title)
            lbl.setMinimumSize(QSize(CHIP_SIZE, CHIP_SIZE))
            lbl.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
            grid.addWidget(lbl, k // 3, k % 3)
            self.chip_labels[key] = lbl
        self.members_label = QLabel(chips_widget)
        self.members_label.setObjectName("member_probabilities")
        self.members_label.setToolTip("Probability of each ensemble member for this tile")
        grid.addWidget(QLabel("<b>Member probabilities</b>", chips_widget), 2, 0, 1, 3)
        grid.addWidget(self.members_label, 3, 0, 1, 3)
        grid.setRowStretch(4, 1)
        grid.setColumnStretch(3, 1)
        scroll = QScrollArea(detail)
        scroll.setWidgetResizable(True)
        scroll.setMinimumHeight(TITLE_ROW_H)
        scroll.setWidget(chips_widget)
        dl.addWidget(scroll, 1)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 3)
        split.setSizes([160, 2 * TITLE_ROW_H + 60])
        lay.addWidget(split, 1)

        self.note = QLineEdit(main)
        self.note.setPlaceholderText("Note for this tile (saved with the verdict)")
        self.note.editingFinished.connect(self._note_edited)
        lay.addWidget(self.note)

        buttons = QHBoxLayout()
        self.buttons = {}
        for key, text, tip in (("confirmed", "&Confirm", "Landslide confirmed (C)"),
                               ("rejected", "&Reject", "Not a landslide (R)"),
                               ("unsure", "&Unsure", "Cannot decide (U)"),
                               ("previous", "&Previous", "Previous tile (P or Up)"),
                               ("next", "&Next", "Next tile (N or Down)"),
                               ("clear", "Clear", "Remove this tile's verdict")):
            b = QPushButton(text.replace("&", ""), main)
            b.setToolTip(tip)
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # keep the keys going to the shortcuts
            b.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
            buttons.addWidget(b)
            self.buttons[key] = b
        lay.addLayout(buttons)
        for v in VERDICTS:
            self.buttons[v].clicked.connect(lambda _=False, v=v: self.set_verdict(v))
        self.buttons["clear"].clicked.connect(lambda: self.set_verdict(None))
        self.buttons["next"].clicked.connect(self.next_tile)
        self.buttons["previous"].clicked.connect(self.previous_tile)

        prog = QHBoxLayout()
        self.progress_label = QLabel("", main)
        self.progress = QProgressBar(main)
        self.progress.setTextVisible(False)
        self.progress.setMaximumHeight(10)
        prog.addWidget(self.progress_label)
        prog.addWidget(self.progress, 1)
        lay.addLayout(prog)
        self.setWidget(main)
        self.visibilityChanged.connect(lambda visible: visible or self._clear_highlight())

        self.grid_combo.layerChanged.connect(self.set_layer)
        self.flagged_only.toggled.connect(self.reload_tiles)
        self.min_prob.valueChanged.connect(self.reload_tiles)
        self.status_filter.currentIndexChanged.connect(self.reload_tiles)
        self.review_filter.currentIndexChanged.connect(self.reload_tiles)
        self.order_combo.currentIndexChanged.connect(self.reload_tiles)
        self.sample_only.toggled.connect(self.reload_tiles)
        self.sample_button.clicked.connect(lambda: self.draw_sample())
        self.batch_only.toggled.connect(self.reload_tiles)
        self.batch_button.clicked.connect(lambda: self.next_tiles())
        self.rescore_button.clicked.connect(lambda: self.adapt_and_rescore())
        self.cancel_button.clicked.connect(self.cancel_rescore)
        self.tree.currentItemChanged.connect(self._current_changed)

    def _build_rounds(self, parent) -> QWidget:
        """'Review rounds': the batch button, the running share estimate, Adapt and re-score."""
        box = QgsCollapsibleGroupBox("Review rounds", parent)
        box.setObjectName("review_rounds")
        v = QVBoxLayout(box)
        row = QHBoxLayout()
        self.batch_size = QSpinBox(box)
        self.batch_size.setObjectName("batch_size")
        self.batch_size.setRange(1, 1000)
        self.batch_size.setValue(DEFAULT_BATCH)
        self.batch_size.setPrefix("batch: ")
        self.batch_size.setToolTip("Tiles per batch: half drawn at random within each map class (the stratified "
                                   "sample, which keeps the estimates honest), half the most informative for the "
                                   "model (uncertain and unlike the tiles already reviewed)")
        self.batch_button = QPushButton("Next tiles to review", box)
        self.batch_button.setObjectName("next_batch")
        self.batch_button.setToolTip(self.batch_size.toolTip() + ". Each batch adds to the sample.")
        self.batch_only = QCheckBox("Batch only", box)
        self.batch_only.setToolTip("List only the tiles of the last batch (or, after a restart, the tiles picked "
                                   "for review that have no verdict yet)")
        self.rescore_button = QPushButton("Adapt and re-score", box)
        self.rescore_button.setObjectName("adapt_rescore")
        self.rescore_button.setToolTip("Adapt the model to the verdicts so far, then score the same layers again "
                                       "with it (in the background); the new grid opens with the verdicts carried "
                                       "over and the old one is kept")
        for w in (self.batch_size, self.batch_button, self.batch_only, self.rescore_button):
            row.addWidget(w)
        v.addLayout(row)
        self.share_label = QLabel(box)
        self.share_label.setObjectName("share_estimate")
        self.share_label.setWordWrap(True)
        self.share_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        v.addWidget(self.share_label)
        task_row = QHBoxLayout()
        self.task_progress = QProgressBar(box)
        self.task_progress.setRange(0, 100)
        self.task_progress.setFormat("Adapt and re-score: %p %")
        self.cancel_button = QPushButton("Cancel", box)
        task_row.addWidget(self.task_progress, 1)
        task_row.addWidget(self.cancel_button)
        v.addLayout(task_row)
        self.task_progress.hide()
        self.cancel_button.hide()
        self.batch_fids: list | None = None
        self.task = None
        return box

    def _install_shortcuts(self):
        """Single keys, active only while the focus is inside this dock (so they never
        steal C, R, U, N, P from the rest of QGIS); typing in the note field is unaffected."""
        self.shortcuts = []
        table = [("C", lambda: self.set_verdict("confirmed")), ("R", lambda: self.set_verdict("rejected")),
                 ("U", lambda: self.set_verdict("unsure")), ("N", self.next_tile), ("Down", self.next_tile),
                 ("P", self.previous_tile), ("Up", self.previous_tile)]
        for key, slot in table:
            sc = QShortcut(QKeySequence(key), self)
            sc.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            sc.activated.connect(slot)
            self.shortcuts.append(sc)

    # -- layers --------------------------------------------------------------------------
    def refresh_layers(self, *_):
        """Hide non-grid polygon layers from the grid picker; prefill empty source pickers."""
        project = QgsProject.instance()
        layers = list(project.mapLayers().values())
        self.grid_combo.setExceptedLayerList([lyr for lyr in layers if isinstance(lyr, QgsVectorLayer)
                                              and not is_grid_layer(lyr)])
        if self.grid_combo.currentLayer() is None:
            grids = [lyr for lyr in layers if is_grid_layer(lyr)]
            if grids:
                self.grid_combo.setLayer(grids[-1])
        rasters = [(lyr.id(), f"{lyr.name()} {os.path.basename(lyr.source().split('|')[0])}")
                   for lyr in layers if isinstance(lyr, QgsRasterLayer)]
        guesses = guess_sources(rasters)
        for role, cb in self.source_combos.items():
            if cb.currentLayer() is None and role in guesses:
                cb.setLayer(project.mapLayer(guesses[role]))
        # all sources found: fold the pickers away to leave room for the chips
        self.sources_box.setCollapsed(all(cb.currentLayer() is not None for cb in self.source_combos.values()))

    def sources(self) -> Sources:
        def path(role):
            layer = self.source_combos[role].currentLayer()
            if layer is None or not layer.isValid():
                return None
            return layer.source() if layer.providerType() == "gdal" else None

        return Sources(s2=path("S2"), s1={r: path(r) for r in S1_ROLES})

    def set_layer(self, layer=None):
        if layer is not None and not is_grid_layer(layer):
            layer = None
        self._flush_note()
        self._shown_fid = None
        self.layer = layer
        self.batch_fids = None  # a batch belongs to its grid: another grid lists its own pending picks
        self.renderer = None
        self._clear_highlight()
        if layer is not None:
            self._ensure_review_fields(layer)
            self._member_fields = [f.name() for f in layer.fields() if f.name().startswith("p_")]
            self.renderer = ChipRenderer(self.sources(), layer.crs().toWkt())
        self.reload_tiles()

    def _ensure_review_fields(self, layer):
        missing = [f for f in REVIEW_FIELDS if layer.fields().indexOf(f) < 0]
        if not missing:
            return
        prov = layer.dataProvider()
        if not prov.capabilities() & CAN_ADD_FIELDS:
            self._message(f"The grid layer has no {', '.join(missing)} field and its format cannot add "
                          "one: save it as a GeoPackage to record verdicts.", WARNING)
            return
        prov.addAttributes([QgsField(f, STRING) for f in missing])
        layer.updateFields()

    def _sources_changed(self, *_):
        if self.layer is not None:
            self.renderer = ChipRenderer(self.sources(), self.layer.crs().toWkt())
            self._show_current()

    # -- the tile list -------------------------------------------------------------------
    def _read_rows(self) -> list[TileRow]:
        lyr = self.layer
        names = [f.name() for f in lyr.fields()]
        req = QgsFeatureRequest()
        req.setFlags(NO_GEOMETRY)
        wanted = [n for n in ("tile_id", "row", "col", "prob", "flagged", "status", "review", "uncertainty", "sample",
                              PICK_FIELD, STRATUM_FIELD) if n in names]
        req.setSubsetOfAttributes(wanted, lyr.fields())
        rows = []
        for f in lyr.getFeatures(req):
            def get(n, f=f):  # bind this feature now, not the loop's last one
                return f[n] if n in names else None
            prob = finite_or_none(None if is_null(get("prob")) else get("prob"))
            flagged = get("flagged")
            unc, sample, stratum = get("uncertainty"), get("sample"), get(STRATUM_FIELD)
            rows.append(TileRow(f.id(), get("tile_id"), get("row"), get("col"), prob,
                                bool(flagged) if not is_null(flagged) else False,
                                _text(get("status")) or ("ok" if prob is not None else "nodata"),
                                _text(get("review")), finite_or_none(None if is_null(unc) else unc),
                                0 if is_null(sample) or not sample else max(1, int(sample)),
                                _text(get(PICK_FIELD)), None if is_null(stratum) else int(stratum)))
        return rows

    def reload_tiles(self, *_):
        current = self.current_fid()
        self.tree.blockSignals(True)
        self.tree.clear()
        self.rows = []
        self.all_rows = []
        if self.layer is not None:
            self.all_rows = self._read_rows()
            fids = None
            if self.batch_only.isChecked():
                fids = self.batch_fids if self.batch_fids is not None else [
                    r.fid for r in self.all_rows if r.pick and r.pick != PICK_MANUAL and not r.review]
            self.rows = filter_tiles(self.all_rows, self.flagged_only.isChecked(), self.min_prob.value(),
                                     self.status_filter.currentData(), self.review_filter.currentData(),
                                     self.order_combo.currentData(), self.sample_only.isChecked(), fids)
        select = None
        for r in self.rows:
            it = QTreeWidgetItem([r.label, "" if r.prob is None else f"{r.prob:.3f}", r.review, pick_text(r)])
            it.setData(COL_TILE, FID_ROLE, r.fid)
            it.setTextAlignment(COL_PROB, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self._colour_item(it, r.review)
            self.tree.addTopLevelItem(it)
            if r.fid == current:
                select = it
        self.tree.blockSignals(False)
        if select is None and self.tree.topLevelItemCount():
            select = self.tree.topLevelItem(0)
        if select is not None:
            self.tree.setCurrentItem(select)
        else:
            self._show_current()
        self._update_progress()

    @staticmethod
    def _colour_item(item, review):
        colour = VERDICT_COLOURS.get(review)
        item.setForeground(COL_REVIEW, colour if colour is not None else QColor(0, 0, 0))

    def current_fid(self):
        it = self.tree.currentItem()
        return None if it is None else it.data(COL_TILE, FID_ROLE)

    def select_index(self, i: int) -> None:
        n = self.tree.topLevelItemCount()
        if n:
            self.tree.setCurrentItem(self.tree.topLevelItem(max(0, min(n - 1, i))))

    def next_tile(self):
        it = self.tree.currentItem()
        self.select_index(0 if it is None else self.tree.indexOfTopLevelItem(it) + 1)

    def previous_tile(self):
        it = self.tree.currentItem()
        self.select_index(0 if it is None else self.tree.indexOfTopLevelItem(it) - 1)

    def reviewed_count(self) -> tuple[int, int]:
        n = self.tree.topLevelItemCount()
        done = sum(1 for i in range(n) if self.tree.topLevelItem(i).text(COL_REVIEW))
        return done, n

    def _update_progress(self):
        done, n = self.reviewed_count()
        self.progress_label.setText(f"{done} of {n} reviewed")
        self.progress.setRange(0, max(n, 1))
        self.progress.setValue(done)
        self.update_share()

    def share_estimate(self):
        """The running estimate of the region's landslide share from the verdicts so far
        (engine/design.py); None without a grid."""
        rows = getattr(self, "all_rows", [])
        if self.layer is None or not rows:
            return None
        labels = [np.nan if (v := verdict_label(r.review)) is None else v for r in rows]
        picks = [r.pick or (PICK_RANDOM if r.sample else "") for r in rows]
        scored = [r.status == "ok" and r.prob is not None for r in rows]
        stratum = strata_of([r.flagged for r in rows], scored, [r.stratum for r in rows])
        return estimate_share(labels, picks, stratum, scored)

    def update_share(self):
        est = self.share_estimate()
        if est is None:
            self.share_label.setText("")
            return
        if not math.isfinite(est.share):
            self.share_label.setText(f"<b>Landslide share of the region</b>: not known yet. {est.note}.")
            return
        text = (f"<b>Landslide share of the region</b>: {100 * est.share:.1f} % "
                f"(95 % interval {100 * est.lo:.1f} - {100 * est.hi:.1f} %), about <b>{est.count:.0f}</b> of "
                f"{est.n_scored} tiles ({est.count_lo:.0f} - {est.count_hi:.0f}); from {est.n_random} random and "
                f"{est.n_purposive} purposive verdicts.")
        flagged = sum(1 for r in self.all_rows if r.flagged and r.status == "ok")
        text += f" The map flags {flagged}."
        if est.note:
            text += f" <i>{est.note}.</i>"
        self.share_label.setText(text)

    # -- the current tile ----------------------------------------------------------------
    def _current_changed(self, *_):
        self._show_current()

    def _show_current(self):
        self._flush_note()
        fid = self.current_fid()
        self._shown_fid = fid
        if self.layer is None or fid is None:
            self.info.setText("Choose a grid layer" if self.layer is None else "No tile matches the filters")
            for lbl in self.chip_labels.values():
                lbl.clear()
            self.members_label.clear()
            self.note.clear()
            self._clear_highlight()
            return
        f = self.layer.getFeature(fid)
        names = f.fields().names()
        get = (lambda n: f[n] if n in names else None)  # noqa: E731
        prob = finite_or_none(get("prob"))
        parts = [f"<b>Tile {_text(get('tile_id')) or fid}</b>"]
        if not is_null(get("row")):
            parts.append(f"row {get('row')}, col {get('col')}")
        parts.append("probability " + ("n/a" if prob is None else f"<b>{prob:.3f}</b>"))
        if not is_null(get("flagged")):
            parts.append("flagged" if get("flagged") else "not flagged")
        for name, label in (("status", "status"), ("mode", "mode")):
            if not is_null(get(name)):
                parts.append(f"{label} {get(name)}")
        vf = finite_or_none(get("valid_frac"))
        if vf is not None:
            parts.append(f"valid {vf:.0%}")
        for name, label in (("s2_valid", "S2 valid"), ("sar_valid", "SAR valid")):
            v = finite_or_none(get(name))
            if v is not None:
                parts.append(f"{label} {v:.0%}")
        parts.append("verdict: " + (_text(get("review")) or "<i>not reviewed</i>"))
        self.info.setText(" &middot; ".join(parts))
        self.note.setText(_text(get("review_note")))
        self._highlight(f.geometry())
        self._render_chips(f.geometry())
        members = {n[2:]: finite_or_none(get(n)) for n in self._member_fields}
        self.members_label.setPixmap(QPixmap.fromImage(render.member_bars_image(members, None, 3 * CHIP_SIZE + 12)))

    def _render_chips(self, geom):
        if self.renderer is None:
            self.renderer = ChipRenderer(self.sources(), self.layer.crs().toWkt())
        bb = geom.boundingBox()
        try:
            self.last_chips = self.renderer.render((bb.xMinimum(), bb.yMinimum(), bb.xMaximum(), bb.yMaximum()))
        except Exception as exc:  # noqa: BLE001 - a chip failure must not block the review
            self.last_chips = []
            self._message(f"Chips could not be drawn: {exc}", WARNING)
        by_key = {c.key: c for c in self.last_chips}
        for key, lbl in self.chip_labels.items():
            chip = by_key.get(key)
            if chip is None:
                lbl.clear()
            else:
                lbl.setPixmap(QPixmap.fromImage(render.chip_image(chip, CHIP_SIZE)))

    def _highlight(self, geom):
        canvas = self.iface.mapCanvas() if self.iface is not None else None
        if canvas is None or geom is None or geom.isEmpty():
            return
        if self.rubber_band is None:
            self.rubber_band = QgsRubberBand(canvas, POLYGON_GEOMETRY)
            self.rubber_band.setColor(QColor(255, 255, 0, 220))
            self.rubber_band.setFillColor(QColor(255, 255, 0, 40))
            self.rubber_band.setWidth(3)
        self.rubber_band.setToGeometry(geom, self.layer)
        if not self.zoom_check.isChecked():
            return
        try:
            ct = QgsCoordinateTransform(self.layer.crs(), canvas.mapSettings().destinationCrs(), QgsProject.instance())
            rect = ct.transformBoundingBox(geom.boundingBox())
        except Exception:  # noqa: BLE001 - no valid transform: leave the view alone
            return
        canvas.setExtent(rect.buffered(rect.width() * 1.5))
        canvas.refresh()

    def _clear_highlight(self):
        if self.rubber_band is not None:
            self.rubber_band.reset(POLYGON_GEOMETRY)

    # -- verdicts ------------------------------------------------------------------------
    def set_verdict(self, verdict: str | None, advance: bool = True) -> bool:
        """Write ``verdict`` (None clears it) and the note for the current tile, then move on."""
        fid = self.current_fid()
        if self.layer is None or fid is None:
            return False
        if not self._write(fid, verdict, self.note.text().strip()):
            return False
        it = self.tree.currentItem()
        for r in getattr(self, "all_rows", []):
            if r.fid == fid:
                r.review = verdict or ""
                it.setText(COL_PICK, pick_text(r))
        it.setText(COL_REVIEW, verdict or "")
        self._colour_item(it, verdict)
        self._update_progress()
        if advance and verdict is not None:
            idx = self.tree.indexOfTopLevelItem(it)
            if idx + 1 < self.tree.topLevelItemCount():
                self.select_index(idx + 1)
            else:
                self._show_current()
                end = (" Batch done: 'Next tiles to review' for another, or 'Adapt and re-score'."
                       if self.batch_only.isChecked() else "")
                self._message(f"Last tile reached: {self.progress_label.text()}.{end}", INFO)
        else:
            self._show_current()
        return True

    def _note_edited(self):
        self._flush_note()

    def _flush_note(self):
        """A note typed or changed after the verdict is saved too (on leaving the field or
        the tile); before a verdict it waits for the verdict."""
        fid = self._shown_fid
        if fid is None or self.layer is None or sip.isdeleted(self.layer) \
                or self.layer.fields().indexOf("review_note") < 0:
            return
        f = self.layer.getFeature(fid)
        if not f.isValid() or is_null(f["review"]):
            return
        text = self.note.text().strip()
        if _text(f["review_note"]) != text:
            self._write(fid, _text(f["review"]), text)

    def _write(self, fid, verdict, note) -> bool:
        lyr = self.layer
        idx = [lyr.fields().indexOf(f) for f in REVIEW_FIELDS]
        if min(idx) < 0:
            self._ensure_review_fields(lyr)
            idx = [lyr.fields().indexOf(f) for f in REVIEW_FIELDS]
            if min(idx) < 0:
                return False
        prov = lyr.dataProvider()
        if not prov.capabilities() & CAN_CHANGE_VALUES:
            self._message("The grid layer is read-only: verdicts cannot be saved. Save it as a GeoPackage.",
                          CRITICAL)
            return False
        change = {idx[0]: verdict, idx[1]: note or None}
        change.update(self._manual_pick(fid, verdict))
        # the provider writes to the file at once: no edit buffer to forget to save
        ok = prov.changeAttributeValues({fid: change})
        if not ok:
            err = "; ".join(prov.errors()) if hasattr(prov, "errors") else ""
            self._message(f"The verdict could not be saved to {lyr.name()}: {err}", CRITICAL)
            return False
        if lyr.providerType() == "memory" and lyr.id() not in self._warned:
            self._warned.add(lyr.id())
            self._message("This grid is a temporary layer: verdicts are lost when QGIS closes. "
                          "Save it to a GeoPackage to keep them.", WARNING)
        lyr.triggerRepaint()
        return True

    def _manual_pick(self, fid, verdict) -> dict:
        """{field index: value}: ``pick = manual`` for a verdict on a tile no batch or sample
        asked for; cleared again when that verdict is cleared."""
        row = next((r for r in getattr(self, "all_rows", []) if r.fid == fid), None)
        if row is None or row.sample or (row.pick and row.pick != PICK_MANUAL):
            return {}
        want = PICK_MANUAL if verdict else ""
        if want == row.pick:
            return {}
        idx = self._field_index(PICK_FIELD, STRING)
        if idx < 0:
            return {}
        row.pick = want
        return {idx: want or None}

    def _field_index(self, name, kind) -> int:
        """Index of a field of the grid, added when missing (-1 where it cannot be)."""
        lyr = self.layer
        if lyr.fields().indexOf(name) < 0:
            prov = lyr.dataProvider()
            if not prov.capabilities() & CAN_ADD_FIELDS or not prov.addAttributes([QgsField(name, kind)]):
                return -1
            lyr.updateFields()
        return lyr.fields().indexOf(name)

    def _write_fields(self, values: dict, rows: list) -> bool:
        """Write {field: {row index: value}} through the provider at once (one transaction)."""
        lyr = self.layer
        prov = lyr.dataProvider()
        if not prov.capabilities() & CAN_CHANGE_VALUES:
            self._message("The grid layer is read-only: the batch cannot be saved. Save it as a GeoPackage.", CRITICAL)
            return False
        kinds = {PICK_FIELD: STRING, "sample": INT, STRATUM_FIELD: INT}
        changes: dict = {}
        for name, per_row in values.items():
            idx = self._field_index(name, kinds.get(name, STRING))
            if idx < 0:
                self._message(f"The grid has no '{name}' field and one cannot be added: save it as a GeoPackage.",
                              CRITICAL)
                return False
            for i, v in per_row.items():
                changes.setdefault(rows[i].fid, {})[idx] = v
        if changes and not prov.changeAttributeValues(changes):
            self._message("The batch could not be saved to the grid.", CRITICAL)
            return False
        lyr.triggerRepaint()
        return True

    def next_tiles(self, n: int | None = None) -> list:
        """Draw the next batch (engine/review_select.py: half stratified random, half
        informative), write ``pick``, ``sample`` and ``stratum`` into the grid, and list the
        batch, first tile selected.  Returns the batch's fids ([] when nothing is left)."""
        if self.layer is None:
            return []
        self._flush_note()
        n = int(n if n is not None else self.batch_size.value())
        rows = self._read_rows()
        names = [f.name() for f in self.layer.fields()]
        prob = np.array([np.nan if r.prob is None else r.prob for r in rows], dtype=np.float64)
        flagged = np.array([r.flagged for r in rows], dtype=bool)
        scored = np.array([r.status == "ok" and r.prob is not None for r in rows], dtype=bool)
        sample = np.array([r.sample for r in rows], dtype=np.int64)
        recorded = [r.stratum for r in rows] if STRATUM_FIELD in names else None
        stratum = strata_of(flagged, scored, recorded)
        verdict = np.array([verdict_label(r.review) is not None for r in rows], dtype=bool)
        asked = np.array([bool(r.pick) or r.sample > 0 for r in rows], dtype=bool)
        in_random = np.array([r.pick == PICK_RANDOM or r.sample > 0 for r in rows], dtype=bool)
        members = [n_ for n_ in names if n_.startswith("p_")]
        features = None
        if members:
            req = QgsFeatureRequest()
            req.setFlags(NO_GEOMETRY)
            req.setSubsetOfAttributes(members, self.layer.fields())
            by_fid = {f.id(): [np.nan if is_null(f[m]) else float(f[m]) for m in members]
                      for f in self.layer.getFeatures(req)}
            features = np.array([by_fid[r.fid] for r in rows], dtype=np.float64)
        chosen, picks = next_batch(prob, stratum, scored, verdict | asked, features, n,
                                   threshold=batch_threshold(prob, flagged), random_share=RANDOM_SHARE,
                                   seed=int(asked.sum()), in_random=in_random)
        if not len(chosen):
            self._message("Every scored tile has been picked or reviewed: no tile left for a batch.", INFO)
            return []
        values = batch_values(flagged, scored, sample, recorded, chosen, picks)
        if not self._write_fields(values, rows):
            return []
        self.batch_fids = [rows[i].fid for i in chosen]
        n_rand = sum(1 for p in picks if p == PICK_RANDOM)
        self._message(f"Next {len(chosen)} tiles to review: {n_rand} drawn at random (sample now "
                      f"{int((sample > 0).sum()) + n_rand} tiles), {len(chosen) - n_rand} informative.", INFO)
        self.sample_only.blockSignals(True)
        self.sample_only.setChecked(False)
        self.sample_only.blockSignals(False)
        if self.review_filter.currentData() is not None:
            self.review_filter.setCurrentIndex(0)
        if self.batch_only.isChecked():
            self.reload_tiles()
        else:
            self.batch_only.setChecked(True)  # lists the batch (reload_tiles via the signal)
        self.select_index(0)
        return list(self.batch_fids)

    # -- adapt and re-score --------------------------------------------------------------
    def grid_path(self) -> str | None:
        lyr = self.layer
        if lyr is None or lyr.providerType() != "ogr":
            return None
        path = lyr.source().split("|")[0]
        return path if os.path.isfile(path) else None

    def adapt_and_rescore(self, inputs=None, threads: int = 2, rounds_scale: float = 1.0):
        """Start the background task (gui/rescore.py).  ``inputs``: (DetectOptions, model
        folder); None: the grid's run record, else asked in a dialog.  Returns the task (None
        when it was not started)."""
        from .rescore import AdaptRescoreTask, InputsDialog, has_inputs, next_round_paths, recorded_inputs

        if self.task is not None:
            self._message("Adapt and re-score is already running.", INFO)
            return None
        grid = self.grid_path()
        if grid is None:
            self._message("Adapt and re-score needs the grid in a file: save it as a GeoPackage first.", WARNING)
            return None
        self._flush_note()
        if inputs is None:
            inputs = recorded_inputs(grid)
        if inputs is None:
            dlg = InputsDialog({role: cb.currentLayer() for role, cb in self.source_combos.items()}, self)
            if not dlg.exec():
                return None
            inputs = dlg.options()
        opts, model = inputs
        if not has_inputs(opts):
            self._message("Choose at least one Sentinel-1 or Sentinel-2 layer to re-score.", WARNING)
            return None
        new_grid, package = next_round_paths(grid)
        task = AdaptRescoreTask(grid, opts, model, str(package), str(new_grid), on_done=self._rescore_done,
                                threads=threads, rounds_scale=rounds_scale)
        task.progressChanged.connect(lambda v: self.task_progress.setValue(int(v)))
        self.task = task
        self.task_progress.setValue(0)
        self.task_progress.show()
        self.cancel_button.show()
        self.rescore_button.setEnabled(False)
        task.start()
        return task

    def cancel_rescore(self):
        if self.task is not None:
            self.task.cancel()

    def _rescore_done(self, task, ok: bool):
        self.task = None
        if sip.isdeleted(self):
            return
        self.task_progress.hide()
        self.cancel_button.hide()
        self.rescore_button.setEnabled(True)
        if not ok:
            self._message(task.error or "Adapt and re-score failed.", WARNING)
            return
        res = task.result
        old = self.layer
        new = QgsVectorLayer(res["grid"], f"{old.name() if old is not None else 'grid'} (re-scored)", "ogr")
        if not new.isValid():
            self._message(f"The re-scored grid {res['grid']} could not be opened.", CRITICAL)
            return
        from ..rendering import RESOURCES

        new.loadNamedStyle(str(RESOURCES / "landslide_grid.qml"))
        QgsProject.instance().addMapLayer(new)
        self.grid_combo.setLayer(new)
        lost = f"; {res['lost']} reviewed tile(s) found no tile in the new grid" if res["lost"] else ""
        self._message(f"Adapted to {res['confirmed']} confirmed and {res['rejected']} rejected verdicts (threshold "
                      f"{res['threshold']:.3f}); the new grid flags {res['flagged']} of {res['tiles']} tiles, "
                      f"{res['carried']} verdicts carried over{lost}. The previous grid is kept.", INFO)

    def draw_sample(self, per_class: int | None = None, seed: int = 42) -> int:
        """Mark a seeded stratified random sample (engine/sampling.py) in the grid's
        ``sample`` field (numbered; ``pick = random``, ``stratum`` recorded), then list only
        the sample tiles.  An earlier sample is kept and topped up to ``per_class`` tiles per
        stratum (ADD_RULE).  Returns the number of tiles added (0 on failure or when the
        sample is already that large)."""
        lyr = self.layer
        if lyr is None:
            return 0
        n = int(per_class if per_class is not None else self.sample_size.value())
        rows = self._read_rows()
        flagged = [r.flagged for r in rows]
        scored = [r.status == "ok" and r.prob is not None for r in rows]
        sample = np.array([r.sample for r in rows], dtype=np.int64)
        recorded = [r.stratum for r in rows] if lyr.fields().indexOf(STRATUM_FIELD) >= 0 else None
        purposive = [verdict_label(r.review) is not None and r.pick != PICK_RANDOM and not r.sample for r in rows]
        try:
            chosen, numbers = extend_sample(flagged, scored, sample, n, n, seed=seed, stratum=recorded,
                                            exclude=purposive)
        except InputError as exc:
            self._message(str(exc), WARNING)
            return 0
        values = {"sample": {int(i): int(k) for i, k in zip(chosen, numbers)},
                  PICK_FIELD: {int(i): PICK_RANDOM for i in chosen},
                  STRATUM_FIELD: stratum_to_record(flagged, scored, recorded)}
        if not self._write_fields({k: v for k, v in values.items() if v}, rows):
            return 0
        sample[chosen] = numbers
        strata = strata_of(flagged, scored, recorded)
        self._message(sample_report(strata == 1, scored, np.flatnonzero(sample > 0)) + f" ({len(chosen)} added, "
                      f"seed {seed}); review them all, then run 'Accuracy from a stratified sample'.", INFO)
        self.batch_only.blockSignals(True)
        self.batch_only.setChecked(False)
        self.batch_only.blockSignals(False)
        if self.sample_only.isChecked():
            self.reload_tiles()
        else:
            self.sample_only.setChecked(True)  # lists them (reload_tiles via the signal)
        return len(chosen)

    def _message(self, text: str, level=INFO):
        bar = self.iface.messageBar() if self.iface is not None else None
        if bar is not None:
            bar.pushMessage("Sentinel Landslide", text, level, 6)

    def cleanup(self):
        """Disconnect from the project and remove canvas items (plugin unload); a running
        Adapt and re-score is cancelled (it writes no grid then)."""
        if self.task is not None:
            self.task.on_done = None
            self.task.cancel()
            self.task = None
        project = QgsProject.instance()
        for sig, slot in ((project.layersAdded, self.refresh_layers), (project.layersRemoved, self.refresh_layers)):
            try:
                sig.disconnect(slot)
            except (TypeError, RuntimeError):
                pass
        if self.rubber_band is not None:
            canvas = self.iface.mapCanvas()
            canvas.scene().removeItem(self.rubber_band)
            self.rubber_band = None
