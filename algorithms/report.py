"""landslide:report: a PDF and/or HTML report of the flagged (or confirmed) tiles of a
detect grid, built with a QGIS print layout and atlas: an overview page, then one page per
tile with its image chips, probability, member probabilities and review verdict.

Runs headless: the layouts live in a QgsProject made here (never the analyst's project),
and nothing needs iface.  Layouts are QGraphicsScenes, so the algorithm asks Processing to
run it on the main thread (as QGIS's own layout export algorithms do).
"""
from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

from qgis.core import (
    QgsExpression,
    QgsFeatureRequest,
    QgsProcessingException,
    QgsProcessingMultiStepFeedback,
    QgsProcessingParameterBand,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorLayer,
    QgsProcessingUtils,
    QgsProject,
    QgsRasterLayer,
)

from ..core.errors import InputError
from ..engine.accuracy import accuracy_table_html, accuracy_table_text
from ..rendering import render, report_layout
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
    NO_THREADING,
    NUMBER_INTEGER,
    VECTOR_POLYGON,
    is_null,
)
from .accuracy import accuracy_of_features
from .common import S1_PARAMS, S2_BANDS, LandslideAlgorithm

SELECTIONS = (
    ("Flagged tiles", '"flagged"'),
    ("Confirmed tiles (review verdict 'confirmed')", "\"review\" = 'confirmed'"),
    ("Flagged tiles not rejected in review", "\"flagged\" AND coalesce(\"review\", '') <> 'rejected'"),
)






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
        return self.short_help(
            "Writes a PDF and/or HTML report of a landslide grid's tiles with a QGIS print layout and atlas: "
            "an overview page, then one page per tile with its map, image chips, probabilities and review "
            "verdict.")

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
        self.add_outputs(("TILE_COUNT", "Tiles reported"), ("PAGES", "Pages"))

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
        self._accuracy = None  # the accuracy table, when the grid has a reviewed stratified sample
        if "sample" in names and "review" in names:
            try:
                self._accuracy = accuracy_of_features(list(grid.getFeatures()), names)
                feedback.pushInfo("Accuracy from the stratified sample:\n" + accuracy_table_text(self._accuracy))
            except InputError as exc:
                feedback.pushInfo(f"No accuracy table: {exc}")
        background = None
        if sources.s2:
            background = QgsRasterLayer(sources.s2, "Sentinel-2")
            if background.isValid():
                background.setRenderer(report_layout.rgb_renderer(background, sources.rgbn_bands()))
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
        except (QgsProcessingException, report_layout.ReportError) as exc:
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
        keys = report_layout.chip_keys(sources)
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
        counts = report_layout.tile_counts(grid)
        acc = self._accuracy
        if acc is not None:
            counts["accuracy_text"] = "Accuracy (stratified sample, Olofsson et al. 2014; 95 % CI): " + "; ".join(
                f"{m} {e} ({ci})" for m, e, ci in acc.rows())
        overview = report_layout.overview_layout(project, grid, background, title, label, expr, ids, counts)
        tiles = report_layout.atlas_layout(project, grid, background, title, atlas_filter, keys, chip_dir, members)
        atlas = tiles.atlas()
        if atlas.updateFeatures() != len(chosen):  # the atlas and our list must agree, or pages go missing
            raise QgsProcessingException(f"The atlas selects {atlas.count()} tiles, not the {len(chosen)} "
                                         f"expected (filter: {atlas_filter}).")

        steps.setCurrentStep(2)
        results = {"TILE_COUNT": len(chosen), "PAGES": 1 + len(chosen)}
        if pdf_path:
            report_layout.write_pdf(pdf_path, title, overview, tiles, steps)
            results[self.OUTPUT_PDF] = pdf_path
        if html_path:
            extra = "" if acc is None else "<h2>Accuracy from the stratified sample</h2>" + accuracy_table_html(acc)
            report_layout.write_html(html_path, title, overview, tiles, chosen, names, steps, extra)
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














