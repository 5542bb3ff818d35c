"""landslide:report: a PDF and/or HTML report of the flagged (or confirmed) tiles of a
detect grid, built with a QGIS print layout and atlas: an overview page, then one page per
tile with its image chips, probability, member probabilities and review verdict.

Runs headless: the layouts live in a QgsProject made here (never the analyst's project),
and nothing needs iface.  Layouts are QGraphicsScenes, so the algorithm asks Processing to
run it on the main thread (as QGIS's own layout export algorithms do).
"""
from __future__ import annotations

import html
import os
import shutil
from datetime import datetime
from pathlib import Path

from qgis.core import (
    QgsExpression,
    QgsFeatureRequest,
    QgsFillSymbol,
    QgsLayoutExporter,
    QgsLayoutFrame,
    QgsLayoutItemAttributeTable,
    QgsLayoutItemLabel,
    QgsLayoutItemLegend,
    QgsLayoutItemMap,
    QgsLayoutItemPicture,
    QgsLayoutItemScaleBar,
    QgsLayoutObject,
    QgsLayoutPoint,
    QgsLayoutSize,
    QgsLayoutTable,
    QgsLayoutTableColumn,
    QgsLegendRenderer,
    QgsLegendStyle,
    QgsPalLayerSettings,
    QgsPrintLayout,
    QgsProcessingException,
    QgsProcessingMultiStepFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBand,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorLayer,
    QgsProcessingUtils,
    QgsProject,
    QgsProperty,
    QgsRasterLayer,
    QgsRuleBasedRenderer,
    QgsTextFormat,
    QgsVectorLayerSimpleLabeling,
)
from qgis.PyQt.QtCore import QMarginsF, QSizeF
from qgis.PyQt.QtGui import QFont, QPageLayout, QPageSize, QPainter, QPdfWriter

from ..rendering import RESOURCES, render
from ..rendering.chips import (
    S1_ROLES,
    Chip,
    ChipRenderer,
    Sources,
    chip_titles,
    finite_or_none,
)
from ..rendering.compat import (
    FLAG_ADVANCED,
    LABEL_OVER_POINT,
    NO_THREADING,
    NUMBER_INTEGER,
    RASTER_PICTURE,
    VECTOR_POLYGON,
    is_null,
)
from .common import S1_PARAMS, S2_BANDS, LandslideAlgorithm

SELECTIONS = (
    ("Flagged tiles", '"flagged"'),
    ("Confirmed tiles (review verdict 'confirmed')", "\"review\" = 'confirmed'"),
    ("Flagged tiles not rejected in review", "\"flagged\" AND coalesce(\"review\", '') <> 'rejected'"),
)
PAGE_W, PAGE_H = 297.0, 210.0  # A4 landscape, mm
PDF_DPI = 200
HTML_DPI = 110


def _label(layout, text: str, x, y, w, h, size=10.0, bold=False) -> QgsLayoutItemLabel:
    item = QgsLayoutItemLabel(layout)
    item.setText(text)
    font = QFont()
    font.setPointSizeF(size)
    font.setBold(bold)
    if hasattr(item, "setTextFormat"):  # QGIS >= 3.24
        fmt = QgsTextFormat.fromQFont(font)
        fmt.setSize(size)
        item.setTextFormat(fmt)
    else:
        item.setFont(font)
    layout.addLayoutItem(item)
    item.attemptMove(QgsLayoutPoint(x, y))
    item.attemptResize(QgsLayoutSize(w, h))
    return item


def _page_setup(layout: QgsPrintLayout) -> None:
    layout.initializeDefaults()
    layout.pageCollection().page(0).setPageSize(QgsLayoutSize(PAGE_W, PAGE_H))


class ReportAlgorithm(LandslideAlgorithm):
    GRID = "GRID"
    TILES = "TILES"
    MAX_TILES = "MAX_TILES"
    TITLE = "TITLE"
    OUTPUT_PDF = "OUTPUT_PDF"
    OUTPUT_HTML = "OUTPUT_HTML"

    NAME = "report"
    DISPLAY = "Landslide tile report (PDF / HTML)"
    GROUP_ID = "evaluation"

    def flags(self):
        # print layouts are QGraphicsScenes: keep them on the main thread
        return super().flags() | NO_THREADING

    def shortHelpString(self):
        return self.tr(
            "Writes a report of the tiles of a landslide probability grid (the output of 'Detect landslides'), "
            "built with a QGIS print layout and atlas.\n\n"
            "Page 1 is an overview: a map of the grid with the reported tiles outlined and numbered, the counts "
            "of flagged and reviewed tiles, and a table of the reported tiles. Then one page per tile, highest "
            "probability first: a map of the tile and its neighbours, image chips (Sentinel-2 true colour, "
            "NDVI, and the SAR VV / VH change, post minus pre in dB, for each orbit given), the probability, "
            "each ensemble member's probability and the review verdict and note recorded in the review panel "
            "(Plugins > Sentinel Landslide > Review flagged tiles).\n\n"
            "Tiles: the flagged tiles, the tiles confirmed in review, or the flagged tiles not rejected. "
            "Maximum number of tile pages: the highest-probability tiles are kept (0: no limit).\n\n"
            "Source layers are optional: without them the tile pages show the map and the numbers only. "
            "Give a PDF file, an HTML file or both; the HTML report shows the same pages as images (in a "
            "folder next to it) with a linked table of the tiles.")

    def initAlgorithm(self, config=None):
        adv = FLAG_ADVANCED
        self.addParameter(QgsProcessingParameterVectorLayer(
            self.GRID, self.tr("Landslide probability grid (output of detect)"), [VECTOR_POLYGON]))
        self.addParameter(QgsProcessingParameterEnum(
            self.TILES, self.tr("Tiles to report"), [s for s, _ in SELECTIONS], defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            self.MAX_TILES, self.tr("Maximum number of tile pages (0: no limit)"),
            NUMBER_INTEGER, 100, minValue=0))
        self.addParameter(QgsProcessingParameterString(self.TITLE, self.tr("Report title"), "Landslide report"))
        self.addParameter(QgsProcessingParameterRasterLayer(
            "S2", self.tr("Sentinel-2 post-event image (R, G, B, NIR) for the chips"), optional=True))
        for name, label, default in S2_BANDS:
            p = QgsProcessingParameterBand(
                name, self.tr(f"{label} (empty: from the band names, else {default})"), None, "S2", optional=True)
            p.setFlags(p.flags() | adv)
            self.addParameter(p)
        for role in S1_ROLES:
            self.addParameter(QgsProcessingParameterRasterLayer(role, self.tr(dict(S1_PARAMS)[role]), optional=True))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_PDF, self.tr("PDF report"), self.tr("PDF files (*.pdf)"), optional=True))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_HTML, self.tr("HTML report"), self.tr("HTML files (*.html)"), optional=True,
            createByDefault=False))
        self.addOutput(QgsProcessingOutputNumber("TILE_COUNT", self.tr("Tiles reported")))
        self.addOutput(QgsProcessingOutputNumber("PAGES", self.tr("Pages")))

    # -- processing ----------------------------------------------------------------------
    def processAlgorithm(self, parameters, context, feedback):
        pdf_path = self.parameterAsFileOutput(parameters, self.OUTPUT_PDF, context)
        html_path = self.parameterAsFileOutput(parameters, self.OUTPUT_HTML, context)
        if not pdf_path and not html_path:
            raise QgsProcessingException("Give a PDF file, an HTML file or both for the report.")
        source = self.parameterAsVectorLayer(parameters, self.GRID, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.GRID))
        names = source.fields().names()
        if "prob" not in names:
            raise QgsProcessingException(
                "The grid has no 'prob' field: choose the output of 'Detect landslides (Sentinel-1/2)'.")
        which = self.parameterAsEnum(parameters, self.TILES, context)
        label, expr = SELECTIONS[which]
        needed = {0: ["flagged"], 1: ["review"], 2: ["flagged"]}[which]
        missing = [n for n in needed if n not in names]
        if missing:
            raise QgsProcessingException(f"The grid has no '{missing[0]}' field, needed to report '{label}'.")
        max_tiles = self.parameterAsInt(parameters, self.MAX_TILES, context)
        title = self.parameterAsString(parameters, self.TITLE, context) or "Landslide report"
        sources = self._sources(parameters, context)
        steps = QgsProcessingMultiStepFeedback(3, feedback)

        # a private project: the analyst's project (and iface) are never touched
        project = QgsProject()
        project.setCrs(source.crs())
        grid = source.materialize(QgsFeatureRequest().addOrderBy('"prob"', False, False))  # most probable first
        grid.setName("Landslide probability grid")
        project.addMapLayer(grid)
        background = None
        if sources.s2:
            background = QgsRasterLayer(sources.s2, "Sentinel-2")
            if background.isValid():
                background.setRenderer(_rgb_renderer(background, sources.rgbn_bands()))
                project.addMapLayer(background)
            else:
                background = None

        req = QgsFeatureRequest(QgsExpression(expr))
        req.addOrderBy('"prob"', False, False)
        chosen = list(grid.getFeatures(req))
        truncated = bool(max_tiles) and len(chosen) > max_tiles
        if truncated:
            feedback.pushWarning(f"{len(chosen)} tiles match '{label}'; the report keeps the {max_tiles} "
                                 "with the highest probability (raise 'Maximum number of tile pages' for all).")
            chosen = chosen[:max_tiles]
        if not chosen:
            feedback.pushWarning(f"No tile matches '{label}': the report has the overview page only.")
        ids = [f.id() for f in chosen]
        atlas_filter = f"{expr} AND $id IN ({','.join(str(i) for i in ids)})" if truncated else expr
        feedback.pushInfo(f"{len(chosen)} tile page(s): {label}.")

        chip_dir = Path(QgsProcessingUtils.tempFolder()) / f"landslide_report_{id(self)}_{datetime.now():%H%M%S%f}"
        chip_dir.mkdir(parents=True, exist_ok=True)
        error = None
        try:
            return self._report(project, grid, background, sources, chosen, ids, names, expr, label, atlas_filter,
                                title, chip_dir, pdf_path, html_path, steps)
        except QgsProcessingException as exc:
            error = str(exc)  # re-raised below, once the layouts and layers are gone
        finally:
            shutil.rmtree(chip_dir, ignore_errors=True)
        # the failed report's traceback would keep the private project, its layers and
        # layouts alive past QGIS's shutdown (a crash on exit): release them first
        project.removeAllMapLayers()
        del project, grid, background, chosen, steps
        raise QgsProcessingException(error)

    def _report(self, project, grid, background, sources, chosen, ids, names, expr, label, atlas_filter, title,
                chip_dir, pdf_path, html_path, steps) -> dict:
        # chips, rendered to PNG for the atlas pictures
        steps.setCurrentStep(0)
        keys = self._chip_keys(sources)
        renderer = ChipRenderer(sources, grid.crs().toWkt()) if keys else None
        members = [n for n in names if n.startswith("p_")]
        for i, f in enumerate(chosen):
            if steps.isCanceled():
                raise QgsProcessingException(self.tr("Cancelled: no report was written."))
            if renderer is not None:
                bb = f.geometry().boundingBox()
                try:
                    chips = {c.key: c for c in renderer.render((bb.xMinimum(), bb.yMinimum(), bb.xMaximum(),
                                                                bb.yMaximum()))}
                except Exception as exc:  # noqa: BLE001 - one unreadable window must not sink the report
                    chips = {k: Chip(k, t, message=str(exc)) for k, t in chip_titles()}
                for key in keys:
                    render.save_png(render.chip_image(chips[key], 220), chip_dir / f"{f.id()}_{key}.png")
            probs = {n[2:]: finite_or_none(f[n]) for n in members}
            render.save_png(render.member_bars_image(probs, None, 420, 22), chip_dir / f"{f.id()}_members.png")
            steps.setProgress(100.0 * (i + 1) / max(1, len(chosen)))

        steps.setCurrentStep(1)
        counts = self._counts(grid)
        overview = self._overview_layout(project, grid, background, title, label, expr, ids, counts)
        tiles = self._atlas_layout(project, grid, background, title, atlas_filter, keys, chip_dir, members)
        atlas = tiles.atlas()
        if atlas.updateFeatures() != len(chosen):  # the atlas and our list must agree, or pages go missing
            raise QgsProcessingException(f"The atlas selects {atlas.count()} tiles, not the {len(chosen)} "
                                         f"expected (filter: {atlas_filter}).")

        steps.setCurrentStep(2)
        results = {"TILE_COUNT": len(chosen), "PAGES": 1 + len(chosen)}
        if pdf_path:
            self._write_pdf(pdf_path, title, overview, tiles, steps)
            results[self.OUTPUT_PDF] = pdf_path
        if html_path:
            self._write_html(html_path, title, overview, tiles, chosen, names, steps)
            results[self.OUTPUT_HTML] = html_path
        return results

    # -- inputs --------------------------------------------------------------------------
    def _sources(self, parameters, context) -> Sources:
        def path(name, label):
            layer = self.parameterAsRasterLayer(parameters, name, context)
            if layer is None:
                if not is_null(parameters.get(name)):
                    raise QgsProcessingException(f"The {label} layer could not be loaded: {parameters.get(name)}")
                return None
            if layer.providerType() != "gdal":
                raise QgsProcessingException(f"The {label} layer is not a file-based (GDAL) raster.")
            return layer.source()

        given = [None if is_null(parameters.get(n)) else self.parameterAsInt(parameters, n, context)
                 for n, _, _ in S2_BANDS]
        bands = None if all(g is None for g in given) else tuple(g or d for g, (_, _, d) in zip(given, S2_BANDS))
        return Sources(s2=path("S2", "Sentinel-2"), s2_bands=bands,
                       s1={r: path(r, dict(S1_PARAMS)[r].split(" (")[0]) for r in S1_ROLES})

    @staticmethod
    def _chip_keys(sources: Sources) -> list[str]:
        """Chips for the sources given: S2 -> true colour and NDVI; an orbit with a post or pre
        layer -> its VV and VH change (saying which layer is missing if one is)."""
        keys = ["s2_rgb", "ndvi"] if sources.s2 else []
        for orbit in ("DESC", "ASC"):
            if sources.s1.get(f"S1_{orbit}_POST") or sources.s1.get(f"S1_{orbit}_PRE"):
                keys += [f"dvv_{orbit.lower()}", f"dvh_{orbit.lower()}"]
        return keys

    @staticmethod
    def _counts(grid) -> dict:
        names = grid.fields().names()
        c = {"tiles": 0, "scored": 0, "flagged": 0, "confirmed": 0, "rejected": 0, "unsure": 0}
        for f in grid.getFeatures():
            c["tiles"] += 1
            if not is_null(f["prob"]):
                c["scored"] += 1
            if "flagged" in names and not is_null(f["flagged"]) and f["flagged"]:
                c["flagged"] += 1
            if "review" in names and f["review"] in ("confirmed", "rejected", "unsure"):
                c[f["review"]] += 1
        c["model"] = ""
        if "model" in names:
            c["model"] = ", ".join(sorted({str(f["model"]) for f in grid.getFeatures() if not is_null(f["model"])}))
        # tiles per mode (each tile's combination; nodata tiles have none), most first
        c["mode"] = ""
        if "mode" in names:
            per: dict = {}
            for f in grid.getFeatures():
                k = "nodata" if is_null(f["mode"]) or ("status" in names and f["status"] == "nodata") else str(f["mode"])
                per[k] = per.get(k, 0) + 1
            c["mode"] = ", ".join(f"{k} {v}" for k, v in sorted(per.items(), key=lambda kv: (kv[0] == "nodata", -kv[1])))
        return c

    # -- layouts -------------------------------------------------------------------------
    @staticmethod
    def _style_grid(grid, expr: str) -> None:
        """Overview (no atlas feature): the bundled probability classes.  Tile pages: the
        imagery shows through, tiles drawn as outlines.  Both: reported tiles outlined and
        numbered; on a tile page its own tile thick blue."""
        grid.loadNamedStyle(str(RESOURCES / "landslide_grid.qml"))
        converted = QgsRuleBasedRenderer.convertFromRenderer(grid.renderer())  # owns its rules: keep it
        root = QgsRuleBasedRenderer.Rule(None)
        overview = QgsRuleBasedRenderer.Rule(None, 0, 0, "@atlas_featureid IS NULL", "probability")
        for child in list(converted.rootRule().children()):
            overview.appendChild(child.clone())
        root.appendChild(overview)
        for filt, props, lbl in (
                ("@atlas_featureid IS NOT NULL", {"style": "no", "outline_color": "#b0ffffff", "outline_width": "0.2"},
                 "tile"),
                (expr, {"style": "no", "outline_color": "#000000", "outline_width": "0.5"}, "reported tile"),
                ("@atlas_featureid = $id", {"style": "no", "outline_color": "#1f78b4", "outline_width": "1.4"},
                 "this tile")):
            root.appendChild(QgsRuleBasedRenderer.Rule(QgsFillSymbol.createSimple(props), 0, 0, filt, lbl))
        grid.setRenderer(QgsRuleBasedRenderer(root))
        if "tile_id" in grid.fields().names():
            pal = QgsPalLayerSettings()
            pal.isExpression = True
            pal.fieldName = f'if({expr}, "tile_id", NULL)'
            fmt = QgsTextFormat()
            fmt.setSize(8)
            buf = fmt.buffer()
            buf.setEnabled(True)
            buf.setSize(0.8)
            fmt.setBuffer(buf)
            pal.setFormat(fmt)
            pal.placement = LABEL_OVER_POINT
            grid.setLabeling(QgsVectorLayerSimpleLabeling(pal))
            grid.setLabelsEnabled(True)

    def _map(self, layout, grid, background, x, y, w, h) -> QgsLayoutItemMap:
        m = QgsLayoutItemMap(layout)
        m.setFrameEnabled(True)
        layout.addLayoutItem(m)
        m.attemptMove(QgsLayoutPoint(x, y))
        m.attemptResize(QgsLayoutSize(w, h))
        m.setLayers([grid] + ([background] if background is not None else []))
        m.setKeepLayerSet(True)
        m.setCrs(grid.crs())
        return m

    def _overview_layout(self, project, grid, background, title, label, expr, ids, c) -> QgsPrintLayout:
        self._style_grid(grid, expr)
        layout = QgsPrintLayout(project)
        _page_setup(layout)
        layout.setName("Overview")
        project.layoutManager().addLayout(layout)  # the project owns it: torn down in the right order
        _label(layout, html.escape(title), 10, 7, 277, 10, 18, True)
        _label(layout, f"Overview: {len(ids)} tile page(s) follow ({label.lower()}). "
                       f"Created {datetime.now():%Y-%m-%d %H:%M} by Sentinel Landslide.", 10, 17, 277, 6, 9)
        m = self._map(layout, grid, background, 10, 25, 180, 160)
        ext = grid.extent()
        ext = ext.buffered(max(ext.width(), ext.height()) * 0.03)
        m.setExtent(ext)  # zoomToExtent alone needs an extent to take the aspect ratio from
        m.zoomToExtent(ext)
        bar = QgsLayoutItemScaleBar(layout)
        bar.setLinkedMap(m)
        bar.setStyle("Single Box")
        bar.applyDefaultSize()
        layout.addLayoutItem(bar)
        bar.attemptMove(QgsLayoutPoint(10, 188))
        reviewed = c["confirmed"] + c["rejected"] + c["unsure"]
        summary = (f"Tiles in the grid: {c['tiles']} ({c['scored']} scored)\n"
                   f"Flagged: {c['flagged']}\n"
                   f"Reviewed: {reviewed} (confirmed {c['confirmed']}, rejected {c['rejected']}, "
                   f"unsure {c['unsure']})\n"
                   f"Tiles per mode: {c['mode'] or 'n/a'}\nModel: {c['model'] or 'n/a'}\n"
                   f"Grid CRS: {grid.crs().authid() or grid.crs().description()}")
        _label(layout, summary, 196, 25, 91, 30, 9)
        self._tile_table(layout, grid, expr, ids, 196, 58, 91, 78)
        legend = QgsLayoutItemLegend(layout)
        legend.setTitle("Landslide probability")
        legend.setLinkedMap(m)
        legend.setAutoUpdateModel(False)
        root = legend.model().rootGroup()
        root.clear()
        node = root.addLayer(grid)
        QgsLegendRenderer.setNodeLegendStyle(node, QgsLegendStyle.Style.Hidden)
        legend.setLegendFilterByMapEnabled(True)  # leaves out the tile-page-only symbols
        legend.setSymbolWidth(6)
        legend.setSymbolHeight(3.5)
        for style, size in ((QgsLegendStyle.Style.Title, 10), (QgsLegendStyle.Style.SymbolLabel, 8)):
            st = legend.rstyle(style)
            if hasattr(st, "setTextFormat"):  # QGIS >= 3.30
                fmt = st.textFormat()
                fmt.setSize(size)
                st.setTextFormat(fmt)
            else:
                font = st.font()
                font.setPointSizeF(size)
                st.setFont(font)
        layout.addLayoutItem(legend)
        legend.attemptMove(QgsLayoutPoint(196, 140))
        legend.setResizeToContents(True)
        return layout

    @staticmethod
    def _tile_table(layout, grid, expr, ids, x, y, w, h, rows: int = 12) -> None:
        """The reported tiles, most probable first."""
        table = QgsLayoutItemAttributeTable.create(layout)
        table.setVectorLayer(grid)
        table.setFilterFeatures(True)
        table.setFeatureFilter(f"{expr} AND $id IN ({','.join(str(i) for i in ids)})" if ids else "FALSE")
        names = grid.fields().names()
        columns = []  # built afresh: table.columns() hands out wrappers of internals setColumns frees
        for n in ("tile_id", "row", "col", "prob", "review"):
            if n in names:
                col = QgsLayoutTableColumn(n)
                col.setAttribute('format_number("prob", 3)' if n == "prob" else f'"{n}"')
                columns.append(col)
        table.setColumns(columns)
        # no setSortingColumns (it crashes QGIS 3.22 from Python): the grid copy is already
        # in descending probability order, which the table follows
        table.setMaximumNumberOfFeatures(rows)
        table.setEmptyTableBehavior(QgsLayoutTable.EmptyTableMode.ShowMessage)
        table.setEmptyTableMessage("No tile to report")
        for setter, bold in ((table.setHeaderTextFormat, True), (table.setContentTextFormat, False)):
            font = QFont()
            font.setBold(bold)
            fmt = QgsTextFormat.fromQFont(font)
            fmt.setSize(8)
            setter(fmt)
        layout.addMultiFrame(table)
        frame = QgsLayoutFrame(layout, table)
        frame.attemptMove(QgsLayoutPoint(x, y))
        frame.attemptResize(QgsLayoutSize(w, h))
        table.addFrame(frame)
        if len(ids) > rows:
            _label(layout, f"The {rows} most probable of {len(ids)} reported tiles.", x, y + h - 5, w, 5, 7)

    def _atlas_layout(self, project, grid, background, title, atlas_filter, keys, chip_dir, members) -> QgsPrintLayout:
        layout = QgsPrintLayout(project)
        _page_setup(layout)
        layout.setName("Tiles")
        project.layoutManager().addLayout(layout)
        atlas = layout.atlas()
        atlas.setCoverageLayer(grid)
        atlas.setEnabled(True)
        atlas.setFilterFeatures(True)
        atlas.setFilterExpression(atlas_filter)
        atlas.setSortFeatures(True)
        atlas.setSortExpression('"prob"')
        atlas.setSortAscending(False)
        names = grid.fields().names()
        tid = '[% "tile_id" %]' if "tile_id" in names else "[% @atlas_featureid %]"
        rc = ' (row [% "row" %], col [% "col" %])' if "row" in names else ""
        _label(layout, f"Tile {tid}{rc}", 10, 7, 200, 10, 18, True)
        _label(layout, html.escape(title) + " - page [% @atlas_featurenumber + 1 %] of [% @atlas_totalfeatures + 1 %]",
               190, 9, 97, 6, 8)
        m = self._map(layout, grid, background, 10, 22, 95, 95)
        m.setAtlasDriven(True)
        m.setAtlasScalingMode(QgsLayoutItemMap.AtlasScalingMode.Auto)
        m.setAtlasMargin(1.2)
        info = ['Probability: [% format_number("prob", 3) %]']
        if "flagged" in names:
            info.append("Flagged: [% if(\"flagged\", 'yes', 'no') %]")
        for n, lbl in (("status", "Status"), ("mode", "Mode"), ("model", "Model")):
            if n in names:
                info.append(f'{lbl}: [% "{n}" %]')
        if "valid_frac" in names:
            info.append('Valid pixels: [% format_number("valid_frac" * 100, 0) %] %')
        if "review" in names:
            info.append("Review: [% coalesce(\"review\", 'not reviewed') %]")
        if "review_note" in names:
            info.append("Note: [% coalesce(\"review_note\", '') %]")
        _label(layout, "\n".join(info), 10, 120, 95, 45, 10)
        _label(layout, "Member probabilities", 10, 166, 95, 6, 10, True)
        bars = QgsLayoutItemPicture(layout)
        layout.addLayoutItem(bars)
        bars.attemptMove(QgsLayoutPoint(10, 172))
        bars.attemptResize(QgsLayoutSize(95, max(8, 5.6 * len(members) + 2)))
        self._picture_source(bars, chip_dir, "members")
        if keys:
            cols = 3
            cw = 56.0
            ch = cw * (18 + 220 + 30) / 220.0
            for k, key in enumerate(keys):
                pic = QgsLayoutItemPicture(layout)
                layout.addLayoutItem(pic)
                pic.attemptMove(QgsLayoutPoint(112 + (k % cols) * (cw + 4), 22 + (k // cols) * (ch + 4)))
                pic.attemptResize(QgsLayoutSize(cw, ch))
                self._picture_source(pic, chip_dir, key)
        else:
            _label(layout, "No source layers were given: no image chips.", 112, 22, 175, 8, 10)
        _label(layout, "Chips: the tile (dashed) with a quarter tile of context on each side, on the grid's CRS. "
                       "SAR change = post-event minus pre-event backscatter, dB.", 112, 192, 175, 10, 7)
        return layout

    @staticmethod
    def _picture_source(pic, chip_dir: Path, key: str) -> None:
        folder = str(chip_dir).replace("'", "''")
        if hasattr(pic, "setMode"):
            pic.setMode(RASTER_PICTURE)
        pic.setResizeMode(QgsLayoutItemPicture.ResizeMode.Zoom)
        pic.dataDefinedProperties().setProperty(
            QgsLayoutObject.PictureSource,
            QgsProperty.fromExpression(f"'{folder}/' || to_string(@atlas_featureid) || '_{key}.png'"))

    # -- export --------------------------------------------------------------------------
    @staticmethod
    def _write_pdf(path: str, title: str, overview, tiles, feedback) -> None:
        """One PDF: the overview page, then the atlas pages, painted on one QPdfWriter.
        Written under a temporary name and moved into place at the end: a cancelled or
        failed export leaves no half PDF behind."""
        part = path + ".part"
        writer = QPdfWriter(part)
        writer.setTitle(title)
        writer.setCreator("Sentinel Landslide (QGIS)")
        writer.setResolution(PDF_DPI)
        writer.setPageLayout(QPageLayout(QPageSize(QSizeF(PAGE_W, PAGE_H), QPageSize.Unit.Millimeter),
                                         QPageLayout.Orientation.Portrait, QMarginsF(0, 0, 0, 0)))
        for layout in (overview, tiles):
            layout.renderContext().setDpi(PDF_DPI)
        painter = QPainter()
        if not painter.begin(writer):
            raise QgsProcessingException(f"The PDF file cannot be written: {path}")
        atlas = tiles.atlas()
        done = False
        try:
            QgsLayoutExporter(overview).renderPage(painter, 0)
            exporter = QgsLayoutExporter(tiles)
            if atlas.beginRender():
                n = atlas.count()
                for i in range(n):
                    if feedback.isCanceled():
                        raise QgsProcessingException("Cancelled: no PDF was written.")
                    atlas.seekTo(i)
                    writer.newPage()
                    exporter.renderPage(painter, 0)
                    feedback.setProgress(100.0 * (i + 1) / max(1, n))
                atlas.endRender()
            done = True
        finally:
            painter.end()
            del writer  # closes the file
            if done:
                os.replace(part, path)
            elif os.path.exists(part):
                os.remove(part)

    @staticmethod
    def _write_html(path: str, title: str, overview, tiles, chosen, names, feedback) -> None:
        """Each page as a PNG in '<name>_files/' and an index page with a linked tile table."""
        out = Path(path)
        folder = out.with_name(out.stem + "_files")
        folder.mkdir(parents=True, exist_ok=True)
        settings = QgsLayoutExporter.ImageExportSettings()
        settings.dpi = HTML_DPI
        ok = QgsLayoutExporter.ExportResult.Success
        if QgsLayoutExporter(overview).exportToImage(str(folder / "page_000.png"), settings) != ok:
            raise QgsProcessingException(f"The report images cannot be written to {folder}")
        atlas = tiles.atlas()
        exporter = QgsLayoutExporter(tiles)
        pages = []
        if atlas.beginRender():
            for i in range(atlas.count()):
                if feedback.isCanceled():
                    raise QgsProcessingException("Cancelled: the HTML report is incomplete.")
                atlas.seekTo(i)
                fid = atlas.layout().reportContext().feature().id()
                png = folder / f"page_{i + 1:03d}.png"
                exporter.exportToImage(str(png), settings)
                pages.append((fid, png.name))
            atlas.endRender()
        by_id = {f.id(): f for f in chosen}
        cols = [n for n in ("tile_id", "row", "col", "prob", "flagged", "status", "review", "review_note")
                if n in names]
        rows = []
        for k, (fid, _png) in enumerate(pages):
            f = by_id.get(fid)
            cells = "".join(f"<td>{html.escape(_cell(f[c]) if f is not None else '')}</td>" for c in cols)
            rows.append(f'<tr><td><a href="#page{k + 1}">{k + 1}</a></td>{cells}</tr>')
        body = [f"<h1>{html.escape(title)}</h1>",
                f"<p class='meta'>Created {datetime.now():%Y-%m-%d %H:%M} by Sentinel Landslide "
                "(<code>landslide:report</code>)</p>",
                f"<img src='{folder.name}/page_000.png' alt='Overview'>",
                "<h2>Reported tiles</h2><table><tr><th>Page</th>"
                + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>" + "".join(rows) + "</table>"]
        for k, (_fid, png) in enumerate(pages):
            body.append(f"<h2 id='page{k + 1}'>Page {k + 1}</h2>"
                        f"<img src='{folder.name}/{png}' alt='Tile page {k + 1}'>")
        out.write_text(
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>body{{font-family:'DejaVu Sans',Arial,sans-serif;"
            "max-width:1300px;margin:2em auto;color:#222}img{max-width:100%;border:1px solid #ccc}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em}"
            ".meta{color:#666}</style></head><body>" + "\n".join(body) + "</body></html>", encoding="utf-8")


def _cell(v) -> str:
    if is_null(v):
        return ""
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def _rgb_renderer(layer: QgsRasterLayer, bands):
    """True colour with a 2-98 % cumulative cut per band (as QGIS's default stretch)."""
    from qgis.core import QgsContrastEnhancement, QgsMultiBandColorRenderer

    r = QgsMultiBandColorRenderer(layer.dataProvider(), bands[0], bands[1], bands[2])
    setters = (r.setRedContrastEnhancement, r.setGreenContrastEnhancement, r.setBlueContrastEnhancement)
    for band, setter in zip(bands[:3], setters):
        if band > layer.bandCount():
            continue
        lo, hi = layer.dataProvider().cumulativeCut(band, 0.02, 0.98, layer.extent(), 250000)
        ce = QgsContrastEnhancement(layer.dataProvider().dataType(band))
        ce.setContrastEnhancementAlgorithm(
            QgsContrastEnhancement.ContrastEnhancementAlgorithm.StretchToMinimumMaximum, True)
        ce.setMinimumValue(lo)
        ce.setMaximumValue(hi)
        setter(ce)
    return r
