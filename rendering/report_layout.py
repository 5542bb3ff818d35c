"""The report's print layouts (QGIS, no Processing): the overview page (map, legend,
counts, tile table) and the atlas of tile pages with their chips, and their export to PDF
and HTML.  landslide:report (algorithms/report.py) chooses the tiles and renders the chips."""
from __future__ import annotations

import html
import os
from datetime import datetime
from pathlib import Path

from qgis.core import (
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
    QgsProperty,
    QgsRasterLayer,
    QgsRuleBasedRenderer,
    QgsTextFormat,
    QgsVectorLayerSimpleLabeling,
)
from qgis.PyQt.QtCore import QMarginsF, QSizeF
from qgis.PyQt.QtGui import QFont, QPageLayout, QPageSize, QPainter, QPdfWriter

from . import RESOURCES
from .chips import (
    Sources,
)
from .compat import (
    LABEL_OVER_POINT,
    RASTER_PICTURE,
    is_null,
)


class ReportError(Exception):
    """A report that cannot be written (or was cancelled), with a message for the analyst."""


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


def _cell(v) -> str:
    if is_null(v):
        return ""
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def rgb_renderer(layer: QgsRasterLayer, bands):
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


def chip_keys(sources: Sources) -> list[str]:
    """Chips for the sources given: S2 -> true colour and NDVI; an orbit with a post or pre
    layer -> its VV and VH change (saying which layer is missing if one is)."""
    keys = ["s2_rgb", "ndvi"] if sources.s2 else []
    for orbit in ("DESC", "ASC"):
        if sources.s1.get(f"S1_{orbit}_POST") or sources.s1.get(f"S1_{orbit}_PRE"):
            keys += [f"dvv_{orbit.lower()}", f"dvh_{orbit.lower()}"]
    return keys


def tile_counts(grid) -> dict:
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
def style_grid(grid, expr: str) -> None:
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


def _map(layout, grid, background, x, y, w, h) -> QgsLayoutItemMap:
    m = QgsLayoutItemMap(layout)
    m.setFrameEnabled(True)
    layout.addLayoutItem(m)
    m.attemptMove(QgsLayoutPoint(x, y))
    m.attemptResize(QgsLayoutSize(w, h))
    m.setLayers([grid] + ([background] if background is not None else []))
    m.setKeepLayerSet(True)
    m.setCrs(grid.crs())
    return m


def overview_layout(project, grid, background, title, label, expr, ids, c) -> QgsPrintLayout:
    style_grid(grid, expr)
    layout = QgsPrintLayout(project)
    _page_setup(layout)
    layout.setName("Overview")
    project.layoutManager().addLayout(layout)  # the project owns it: torn down in the right order
    _label(layout, html.escape(title), 10, 7, 277, 10, 18, True)
    _label(layout, f"Overview: {len(ids)} tile page(s) follow ({label.lower()}). "
                   f"Created {datetime.now():%Y-%m-%d %H:%M} by Sentinel Landslide.", 10, 17, 277, 6, 9)
    m = _map(layout, grid, background, 10, 25, 180, 160)
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
    if c.get("accuracy_text"):  # landslide:accuracy's table, under the map right of the scale bar
        _label(layout, c["accuracy_text"], 62, 186, 128, 20, 7)
    reviewed = c["confirmed"] + c["rejected"] + c["unsure"]
    summary = (f"Tiles in the grid: {c['tiles']} ({c['scored']} scored)\n"
               f"Flagged: {c['flagged']}\n"
               f"Reviewed: {reviewed} (confirmed {c['confirmed']}, rejected {c['rejected']}, "
               f"unsure {c['unsure']})\n"
               f"Tiles per mode: {c['mode'] or 'n/a'}\nModel: {c['model'] or 'n/a'}\n"
               f"Grid CRS: {grid.crs().authid() or grid.crs().description()}")
    _label(layout, summary, 196, 25, 91, 30, 9)
    _tile_table(layout, grid, expr, ids, 196, 58, 91, 78)
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


def atlas_layout(project, grid, background, title, atlas_filter, keys, chip_dir, members) -> QgsPrintLayout:
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
    m = _map(layout, grid, background, 10, 22, 95, 95)
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
    _picture_source(bars, chip_dir, "members")
    if keys:
        cols = 3
        cw = 56.0
        ch = cw * (18 + 220 + 30) / 220.0
        for k, key in enumerate(keys):
            pic = QgsLayoutItemPicture(layout)
            layout.addLayoutItem(pic)
            pic.attemptMove(QgsLayoutPoint(112 + (k % cols) * (cw + 4), 22 + (k // cols) * (ch + 4)))
            pic.attemptResize(QgsLayoutSize(cw, ch))
            _picture_source(pic, chip_dir, key)
    else:
        _label(layout, "No source layers were given: no image chips.", 112, 22, 175, 8, 10)
    _label(layout, "Chips: the tile (dashed) with a quarter tile of context on each side, on the grid's CRS. "
                   "SAR change = post-event minus pre-event backscatter, dB.", 112, 192, 175, 10, 7)
    return layout


def _picture_source(pic, chip_dir: Path, key: str) -> None:
    folder = str(chip_dir).replace("'", "''")
    if hasattr(pic, "setMode"):
        pic.setMode(RASTER_PICTURE)
    pic.setResizeMode(QgsLayoutItemPicture.ResizeMode.Zoom)
    pic.dataDefinedProperties().setProperty(
        QgsLayoutObject.DataDefinedProperty.PictureSource,
        QgsProperty.fromExpression(f"'{folder}/' || to_string(@atlas_featureid) || '_{key}.png'"))


# -- export --------------------------------------------------------------------------
def write_pdf(path: str, title: str, overview, tiles, feedback) -> None:
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
        raise ReportError(f"The PDF file cannot be written: {path}")
    atlas = tiles.atlas()
    done = False
    try:
        QgsLayoutExporter(overview).renderPage(painter, 0)
        exporter = QgsLayoutExporter(tiles)
        if atlas.beginRender():
            n = atlas.count()
            for i in range(n):
                if feedback.isCanceled():
                    raise ReportError("Cancelled: no PDF was written.")
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


def write_html(path: str, title: str, overview, tiles, chosen, names, feedback, extra_html: str = "") -> None:
    """Each page as a PNG in '<name>_files/' and an index page with a linked tile table."""
    out = Path(path)
    folder = out.with_name(out.stem + "_files")
    folder.mkdir(parents=True, exist_ok=True)
    settings = QgsLayoutExporter.ImageExportSettings()
    settings.dpi = HTML_DPI
    ok = QgsLayoutExporter.ExportResult.Success
    if QgsLayoutExporter(overview).exportToImage(str(folder / "page_000.png"), settings) != ok:
        raise ReportError(f"The report images cannot be written to {folder}")
    atlas = tiles.atlas()
    exporter = QgsLayoutExporter(tiles)
    pages = []
    if atlas.beginRender():
        for i in range(atlas.count()):
            if feedback.isCanceled():
                raise ReportError("Cancelled: the HTML report is incomplete.")
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
            f"<img src='{folder.name}/page_000.png' alt='Overview'>" + extra_html,
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
