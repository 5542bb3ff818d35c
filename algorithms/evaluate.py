"""landslide:evaluate: a detect grid and a landslide inventory in; precision, recall, F1,
AUC and confusion counts out (as numbers models can chain), plus the grid with a
``truth`` field, ROC and precision-recall curves (PNG) and an HTML report; with a per
input-combination breakdown (the grid's ``mode``) in the log, a CSV, a JSON output and the report."""
from __future__ import annotations

import base64
import csv
import html
import json
import math
from datetime import datetime
from pathlib import Path
from string import Template

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsFeature,
    QgsFeatureRequest,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsFillSymbol,
    QgsGeometry,
    QgsMapRendererCustomPainterJob,
    QgsMapSettings,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingMultiStepFeedback,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsRendererCategory,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QBuffer, QByteArray, QIODevice, QSize
from qgis.PyQt.QtGui import QColor, QImage, QPainter

from ..core.errors import Cancelled, InputError
from ..engine.evaluation import evaluate_tiles, pr_curve, roc_curve
from ..rendering import RESOURCES, render
from ..rendering.compat import BOOL, DOUBLE, NUMBER_DOUBLE, STRING, VECTOR_POLYGON, is_null
from .common import LandslideAlgorithm

OUTCOME_STYLE = (  # outcome, colour, legend label
    ("TP", "#1a9641", "TP: detected landslide"),
    ("FN", "#d7191c", "FN: missed landslide"),
    ("FP", "#fdae61", "FP: false alarm"),
    ("TN", "#f0f0f0", "TN: correctly quiet"),
    ("nodata", "#bdbdbd", "nodata: not evaluated"),
)
NUMBER_OUTPUTS = (
    ("PRECISION", "Precision"), ("RECALL", "Recall"), ("F1", "F1 score"),
    ("AUC", "Area under the ROC curve (empty when the inventory gives one class only)"),
    ("AVERAGE_PRECISION", "Average precision (area under the precision-recall curve)"),
    ("ACCURACY", "Accuracy"), ("TP", "True positives (tiles)"), ("FP", "False positives (tiles)"),
    ("TN", "True negatives (tiles)"), ("FN", "False negatives (tiles)"),
    ("EVALUATED", "Tiles evaluated"), ("NODATA", "Nodata tiles excluded"),
    ("POSITIVES", "Tiles the inventory makes positive"),
)
BY_MODE_COLUMNS = ("mode", "tiles", "evaluated", "positives", "tp", "fp", "fn", "tn", "precision", "recall", "f1")
ADDED_FIELDS = (("truth", BOOL), ("area_frac", DOUBLE), ("outcome", STRING))


def outcome_renderer() -> QgsCategorizedSymbolRenderer:
    cats = []
    for value, colour, label in OUTCOME_STYLE:
        sym = QgsFillSymbol.createSimple({"color": colour, "outline_color": "#606060", "outline_width": "0.1"})
        if value == "nodata":
            sym = QgsFillSymbol.createSimple({"color": colour, "style": "fdiagonal", "outline_color": "#909090",
                                              "outline_width": "0.1"})
        cats.append(QgsRendererCategory(value, sym, label))
    return QgsCategorizedSymbolRenderer("outcome", cats)


class _OutcomeStyle(QgsProcessingLayerPostProcessorInterface):
    instances = []  # keep the Python wrappers alive until QGIS has called them

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API)
        if layer is not None and layer.isValid():
            layer.setRenderer(outcome_renderer())
            layer.triggerRepaint()


class EvaluateAlgorithm(LandslideAlgorithm):
    GRID = "GRID"
    INVENTORY = "INVENTORY"
    MIN_FRACTION = "MIN_FRACTION"
    THRESHOLD = "THRESHOLD"
    OUTPUT = "OUTPUT"
    OUTPUT_ROC = "OUTPUT_ROC"
    OUTPUT_PR = "OUTPUT_PR"
    OUTPUT_HTML = "OUTPUT_HTML"
    OUTPUT_MODES = "OUTPUT_MODES"
    BY_MODE = "BY_MODE"

    NAME = "evaluate"
    DISPLAY = "Evaluate against a landslide inventory"
    GROUP_ID = "evaluation"

    def shortHelpString(self):
        return self.short_help(
            "Scores a landslide probability grid against a landslide inventory: precision, recall, F1, ROC "
            "AUC and confusion counts, overall and per input combination, with the grid styled by outcome, "
            "curves and an HTML report.")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.GRID, self.tr("Landslide probability grid (output of detect)"), [VECTOR_POLYGON]))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.INVENTORY, self.tr("Landslide inventory (polygons)"), [VECTOR_POLYGON]))
        self.addParameter(QgsProcessingParameterNumber(
            self.MIN_FRACTION, self.tr("Minimum landslide area fraction for a positive tile"),
            NUMBER_DOUBLE, 0.01, minValue=0.0, maxValue=1.0))
        self.addParameter(QgsProcessingParameterNumber(
            self.THRESHOLD, self.tr("Probability threshold (empty: the grid's 'flagged' field)"),
            NUMBER_DOUBLE, None, optional=True, minValue=0.0, maxValue=1.0))
        self.addParameter(QgsProcessingParameterFeatureSink(
            self.OUTPUT, self.tr("Evaluated grid"), VECTOR_POLYGON))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_ROC, self.tr("ROC curve"), self.tr("PNG files (*.png)"), optional=True))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_PR, self.tr("Precision-recall curve"), self.tr("PNG files (*.png)"), optional=True))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_HTML, self.tr("Evaluation report"), self.tr("HTML files (*.html)"), optional=True))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_MODES, self.tr("Metrics per input combination (mode)"), self.tr("CSV files (*.csv)"),
            optional=True, createByDefault=False))
        self.add_outputs((self.BY_MODE, "Metrics per input combination (JSON list; empty without a 'mode' field)", str),
                         *NUMBER_OUTPUTS)

    # -- processing ----------------------------------------------------------------------
    def processAlgorithm(self, parameters, context, feedback):
        steps = QgsProcessingMultiStepFeedback(4, feedback)
        grid = self.parameterAsSource(parameters, self.GRID, context)
        if grid is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.GRID))
        inventory = self.parameterAsSource(parameters, self.INVENTORY, context)
        if inventory is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.INVENTORY))
        names = grid.fields().names()
        if "prob" not in names:
            raise QgsProcessingException(
                "The grid has no 'prob' field: choose the output of 'Detect landslides (Sentinel-1/2)'.")
        min_frac = self.parameterAsDouble(parameters, self.MIN_FRACTION, context)
        threshold = None
        if not is_null(parameters.get(self.THRESHOLD)):
            threshold = self.parameterAsDouble(parameters, self.THRESHOLD, context)
        if threshold is None and "flagged" not in names:
            threshold = 0.5
            feedback.pushWarning("The grid has no 'flagged' field and no threshold was given: using 0.5.")
        rule = (f"prob >= {threshold:g}" if threshold is not None
                else "the grid's 'flagged' field (the threshold detect used)")
        feedback.pushInfo(f"Predicted positive: {rule}. Truth: landslide area >= {min_frac:.1%} of the tile.")

        # the inventory, in the grid's CRS
        steps.setCurrentStep(0)
        req = QgsFeatureRequest().setDestinationCrs(grid.sourceCrs(), context.transformContext())
        req.setNoAttributes()
        inv_wkb, skipped = [], 0
        for f in inventory.getFeatures(req):
            if feedback.isCanceled():
                raise QgsProcessingException(self.tr("Cancelled: no output was written."))
            g = f.geometry()
            if g is None or g.isEmpty():
                skipped += 1
                continue
            inv_wkb.append(bytes(g.asWkb()))
        if skipped:
            feedback.pushWarning(f"{skipped} inventory feature(s) without geometry were ignored.")

        # the grid
        feats, tiles_wkb = [], []
        n_total = grid.featureCount()
        for i, f in enumerate(grid.getFeatures()):
            if feedback.isCanceled():
                raise QgsProcessingException(self.tr("Cancelled: no output was written."))
            feats.append(f)
            tiles_wkb.append(bytes(f.geometry().asWkb()) if f.hasGeometry() else b"")
            if n_total > 0 and i % 1000 == 0:
                steps.setProgress(100.0 * i / n_total)
        probs = [math.nan if is_null(f["prob"]) else float(f["prob"]) for f in feats]
        status = [None if "status" not in names or is_null(f["status"]) else str(f["status"]) for f in feats]
        flagged = ([not is_null(f["flagged"]) and bool(f["flagged"]) for f in feats]
                   if threshold is None else None)
        modes = ([None if is_null(f["mode"]) else str(f["mode"]) for f in feats] if "mode" in names else None)
        if modes is None:
            feedback.pushInfo("The grid has no 'mode' field: no breakdown per input combination.")

        steps.setCurrentStep(1)
        try:
            ev = evaluate_tiles(tiles_wkb, inv_wkb, probs, status, flagged, threshold, min_frac,
                                progress=lambda x: steps.setProgress(100.0 * x), is_cancelled=feedback.isCanceled,
                                modes=modes)
        except Cancelled:
            raise QgsProcessingException(self.tr("Cancelled: no output was written.")) from None
        except InputError as exc:
            raise QgsProcessingException(str(exc)) from None
        for w in ev.warnings:
            feedback.pushWarning(w)
        m, n_nodata, truth, frac, outcome = ev.metrics, ev.n_nodata, ev.truth, ev.frac, ev.outcome
        y, score = ev.y, ev.score
        feedback.pushInfo(f"{m.n} tiles evaluated, {n_nodata} nodata tile(s) excluded; "
                          f"{m.positives} positive in the inventory.")
        feedback.pushInfo(f"TP {m.tp}, FP {m.fp}, TN {m.tn}, FN {m.fn}; precision {m.precision:.3f}, "
                          f"recall {m.recall:.3f}, F1 {m.f1:.3f}, AUC {m.auc:.3f}, AP {m.average_precision:.3f}")
        if math.isnan(m.auc):
            feedback.pushWarning("AUC is undefined: the inventory makes every evaluated tile positive, or none.")
        for r in ev.by_mode or []:
            feedback.pushInfo(f"mode {r.mode}: {r.tiles} tiles" + ("" if r.mode == "nodata" else
                              f", TP {r.tp}, FP {r.fp}, FN {r.fn}, TN {r.tn}; precision {r.precision:.3f}, "
                              f"recall {r.recall:.3f}, F1 {r.f1:.3f}"))

        # figures (drawn before anything is written)
        steps.setCurrentStep(2)
        fpr, tpr, _ = roc_curve(y, score)
        prec, rec, _ = pr_curve(y, score)
        op_label = "threshold " + (f"{threshold:g}" if threshold is not None else "of detect (flagged)")
        fpr_op = m.fp / (m.fp + m.tn) if (m.fp + m.tn) else float("nan")
        roc_img = render.curve_image("roc", fpr, tpr, f"ROC curve: AUC {_fmt(m.auc)}",
                                     point=(fpr_op, m.recall, op_label))
        pr_img = render.curve_image("pr", rec, prec, f"Precision-recall: AP {_fmt(m.average_precision)}",
                                    point=(m.recall, m.precision, op_label),
                                    baseline=m.positives / m.n if m.n else None)
        if feedback.isCanceled():
            raise QgsProcessingException(self.tr("Cancelled: no output was written."))
        map_img = self._map_image(grid, feats, outcome, inv_wkb)

        # outputs
        steps.setCurrentStep(3)
        fields = QgsFields()
        added = {n for n, _ in ADDED_FIELDS}
        for fld in grid.fields():
            if fld.name() not in added:
                fields.append(fld)
        for name, kind in ADDED_FIELDS:
            fields.append(QgsField(name, kind))
        sink, dest_id = self.parameterAsSink(parameters, self.OUTPUT, context, fields, grid.wkbType(),
                                             grid.sourceCrs())
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        keep = [n for n in names if n not in added]
        for i, f in enumerate(feats):
            out = QgsFeature(fields)
            out.setGeometry(f.geometry())
            out.setAttributes([f[n] for n in keep] + [bool(truth[i]), round(float(frac[i]), 6), outcome[i]])
            sink.addFeature(out, QgsFeatureSink.Flag.FastInsert)
            if i % 2000 == 0:
                steps.setProgress(100.0 * i / len(feats))
        if context.willLoadLayerOnCompletion(dest_id):
            style = _OutcomeStyle()
            _OutcomeStyle.instances.append(style)
            context.layerToLoadOnCompletionDetails(dest_id).setPostProcessor(style)

        roc_path = self.parameterAsFileOutput(parameters, self.OUTPUT_ROC, context)
        pr_path = self.parameterAsFileOutput(parameters, self.OUTPUT_PR, context)
        html_path = self.parameterAsFileOutput(parameters, self.OUTPUT_HTML, context)
        modes_path = self.parameterAsFileOutput(parameters, self.OUTPUT_MODES, context)
        by_mode = [r.as_dict() for r in ev.by_mode] if ev.by_mode is not None else None
        results = {self.OUTPUT: dest_id, self.BY_MODE: json.dumps(by_mode) if by_mode is not None else ""}
        if modes_path:
            with open(modes_path, "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(BY_MODE_COLUMNS)
                for r in by_mode or []:
                    w.writerow([r[k] if not isinstance(r[k], float) else f"{r[k]:.6g}" for k in BY_MODE_COLUMNS])
            results[self.OUTPUT_MODES] = modes_path
        for key, path, img in ((self.OUTPUT_ROC, roc_path, roc_img), (self.OUTPUT_PR, pr_path, pr_img)):
            if path:
                render.save_png(img, path)
                results[key] = path
        if html_path:
            Path(html_path).write_text(self._html(parameters, context, grid, inventory, m, n_nodata, min_frac, rule,
                                                  roc_img, pr_img, map_img, ev.by_mode), encoding="utf-8")
            results[self.OUTPUT_HTML] = html_path
        values = {"PRECISION": m.precision, "RECALL": m.recall, "F1": m.f1, "ACCURACY": m.accuracy,
                  "AUC": None if math.isnan(m.auc) else m.auc,
                  "AVERAGE_PRECISION": None if math.isnan(m.average_precision) else m.average_precision,
                  "TP": m.tp, "FP": m.fp, "TN": m.tn, "FN": m.fn, "EVALUATED": m.n, "NODATA": n_nodata,
                  "POSITIVES": m.positives}
        results.update(values)
        return results

    # -- figures -------------------------------------------------------------------------
    @staticmethod
    def _map_image(grid, feats, outcome, inv_wkb, size=(900, 700)) -> QImage:
        """The tiles coloured by outcome with the inventory outlines, and a legend."""
        crs = grid.sourceCrs()
        tiles = QgsVectorLayer("Polygon", "outcome", "memory")
        tiles.setCrs(crs)
        tiles.dataProvider().addAttributes([QgsField("outcome", STRING)])
        tiles.updateFields()
        batch = []
        for f, o in zip(feats, outcome):
            nf = QgsFeature(tiles.fields())
            nf.setGeometry(f.geometry())
            nf.setAttributes([o])
            batch.append(nf)
        tiles.dataProvider().addFeatures(batch)
        tiles.updateExtents()
        tiles.setRenderer(outcome_renderer())
        inv = QgsVectorLayer("MultiPolygon", "inventory", "memory")
        inv.setCrs(crs)
        inv_feats = []
        for w in inv_wkb:
            g = QgsGeometry()
            g.fromWkb(w)
            nf = QgsFeature()
            nf.setGeometry(g)
            inv_feats.append(nf)
        inv.dataProvider().addFeatures(inv_feats)
        inv.updateExtents()
        inv.renderer().setSymbol(QgsFillSymbol.createSimple(
            {"style": "no", "outline_color": "#000000", "outline_width": "0.45"}))

        w, h = size
        legend_h = 52
        img = QImage(w, h, QImage.Format.Format_ARGB32_Premultiplied)
        img.fill(QColor(255, 255, 255))
        settings = QgsMapSettings()
        settings.setDestinationCrs(crs)
        settings.setLayers([inv, tiles])
        settings.setOutputSize(QSize(w, h - legend_h))
        settings.setBackgroundColor(QColor(255, 255, 255))
        settings.setExtent(tiles.extent().buffered(max(tiles.extent().width(), tiles.extent().height()) * 0.03))
        p = QPainter(img)
        try:
            p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
            job = QgsMapRendererCustomPainterJob(settings, p)
            job.renderSynchronously()
            entries = [(label, QColor(colour)) for _v, colour, label in OUTCOME_STYLE] + [("inventory", None)]
            x, y = 8, h - legend_h + 4
            for label, colour in entries:
                adv = 22 + p.fontMetrics().horizontalAdvance(label) + 18
                if x + adv > w:  # wrap onto a second row
                    x, y = 8, y + 22
                if colour is None:
                    p.setPen(QColor(0, 0, 0))
                    p.drawLine(x, y + 7, x + 16, y + 7)
                else:
                    p.fillRect(x, y, 16, 14, colour)
                    p.setPen(QColor(90, 90, 90))
                    p.drawRect(x, y, 16, 14)
                p.setPen(QColor(30, 30, 30))
                p.drawText(x + 22, y + 12, label)
                x += adv
        finally:
            p.end()
        return img

    def _html(self, parameters, context, grid, inventory, m, n_nodata, min_frac, rule, roc_img, pr_img,
              map_img, by_mode=None) -> str:
        grid_layer = self.parameterAsVectorLayer(parameters, self.GRID, context)
        inv_layer = self.parameterAsVectorLayer(parameters, self.INVENTORY, context)
        tpl = Template((RESOURCES / "evaluation_report.html").read_text(encoding="utf-8"))
        rows = [("Precision", m.precision), ("Recall", m.recall), ("F1 score", m.f1), ("Accuracy", m.accuracy),
                ("ROC AUC", m.auc), ("Average precision", m.average_precision)]
        return tpl.substitute(
            title="Evaluation against a landslide inventory",
            created=datetime.now().strftime("%Y-%m-%d %H:%M"),
            grid=html.escape(grid_layer.name() if grid_layer else grid.sourceName()),
            grid_source=html.escape(grid_layer.source() if grid_layer else ""),
            inventory=html.escape(inv_layer.name() if inv_layer else inventory.sourceName()),
            inventory_source=html.escape(inv_layer.source() if inv_layer else ""),
            rule=html.escape(rule), min_frac=f"{min_frac:.2%}",
            tiles=m.n + n_nodata, evaluated=m.n, nodata=n_nodata, positives=m.positives,
            metrics="\n".join(f"<tr><th>{k}</th><td>{_fmt(v)}</td></tr>" for k, v in rows),
            tp=m.tp, fp=m.fp, tn=m.tn, fn=m.fn, by_mode=_by_mode_html(by_mode),
            roc=_data_uri(roc_img), pr=_data_uri(pr_img), map=_data_uri(map_img))


def _by_mode_html(rows) -> str:
    """The per-combination table of the report (or why there is none)."""
    if rows is None:
        return "<p>The grid has no <code>mode</code> field (not a detect output of this version): no breakdown.</p>"
    head = "".join(f"<th>{h}</th>" for h in ("Mode", "Tiles", "Evaluated", "Positives", "TP", "FP", "FN", "TN",
                                              "Precision", "Recall", "F1"))
    body = []
    for r in rows:
        nod = r.mode == "nodata"
        cells = [r.tiles, r.evaluated, r.positives, r.tp, r.fp, r.fn, r.tn] + (
            ["n/a"] * 3 if nod else [_fmt(r.precision), _fmt(r.recall), _fmt(r.f1)])
        body.append(f"<tr><th><code>{html.escape(r.mode)}</code></th>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "<table class=\"by-mode\">\n<tr>" + head + "</tr>\n" + "\n".join(body) + "\n</table>"


def _fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _data_uri(img: QImage) -> str:
    """A PNG embedded in the page, so the report is one self-contained file."""
    data = QByteArray()
    buf = QBuffer(data)
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    img.save(buf, "PNG")
    buf.close()
    return "data:image/png;base64," + base64.b64encode(bytes(data)).decode("ascii")
