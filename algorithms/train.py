"""landslide:train: a competition-layout patch folder -> a model package."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingException,
    QgsProcessingMultiStepFeedback,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ..rendering.compat import FILE_FOLDER, FLAG_ADVANCED, NUMBER_DOUBLE, NUMBER_INTEGER
from .common import LandslideAlgorithm

STAGES = {"features": 0, "gbm": 1, "networks": 2}


class TrainAlgorithm(LandslideAlgorithm):
    NAME = "train"
    DISPLAY = "Train a model package"
    GROUP_ID = "training"

    def shortHelpString(self):
        return self.short_help(
            "Trains a model package (LightGBM + XGBoost per input combination, optionally the neural members) "
            "from a patch folder in the competition layout; use the output folder as MODEL in 'Detect "
            "landslides'.")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterFile("PATCHES", self.tr("Patch folder (ID.npy + Train.csv)"),
                                                     behavior=FILE_FOLDER))
        self.addParameter(QgsProcessingParameterBoolean("GBM", self.tr("Train the gradient-boosting members"), True))
        self.addParameter(QgsProcessingParameterString(
            "MEMBERS", self.tr("Neural members ('all', 'none' or names separated by commas)"), "none"))
        self.addParameter(QgsProcessingParameterNumber("EPOCHS", self.tr("Epochs (neural members)"),
                                                       NUMBER_INTEGER, 8, minValue=1))
        self.addParameter(QgsProcessingParameterNumber("FOLDS", self.tr("Cross-validation folds"),
                                                       NUMBER_INTEGER, 5, minValue=2))
        p = QgsProcessingParameterNumber("SEED", self.tr("Random seed"), NUMBER_INTEGER, 42)
        p.setFlags(p.flags() | FLAG_ADVANCED)
        self.addParameter(p)
        p = QgsProcessingParameterBoolean("PRETRAINED", self.tr("Start from ImageNet weights (downloads them)"), False)
        p.setFlags(p.flags() | FLAG_ADVANCED)
        self.addParameter(p)
        p = QgsProcessingParameterNumber("WIDTH", self.tr("Network width factor (the bundled networks use 1)"),
                                         NUMBER_DOUBLE, 1.0, minValue=0.5, maxValue=4.0)
        p.setFlags(p.flags() | FLAG_ADVANCED)
        self.addParameter(p)
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", self.tr("Model package folder")))

    def processAlgorithm(self, parameters, context, feedback):
        from ..engine.patch_folder import PatchFolderError
        from ..models.package import PackageError, load_package
        from ..training.train_package import TrainCancelled, train_package

        steps = QgsProcessingMultiStepFeedback(3, feedback)
        out = self.parameterAsString(parameters, "OUTPUT", context)
        members = (self.parameterAsString(parameters, "MEMBERS", context) or "none").strip()

        def progress(stage, frac, msg=""):
            steps.setCurrentStep(STAGES.get(stage, 0))
            steps.setProgress(100.0 * frac)
            if msg and frac in (0.0, 1.0):
                feedback.pushInfo(msg)

        try:
            train_package(self.parameterAsFile(parameters, "PATCHES", context), out, members,
                          self.parameterAsBool(parameters, "GBM", context),
                          self.parameterAsInt(parameters, "EPOCHS", context),
                          self.parameterAsInt(parameters, "FOLDS", context),
                          self.parameterAsInt(parameters, "SEED", context),
                          pretrained=self.parameterAsBool(parameters, "PRETRAINED", context),
                          progress=progress, is_cancelled=feedback.isCanceled, log=feedback.pushInfo,
                          width=self.parameterAsDouble(parameters, "WIDTH", context))
            pkg = load_package(out)
        except TrainCancelled:
            raise QgsProcessingException(self.tr("Cancelled; the package folder may be incomplete.")) from None
        except (ValueError, PatchFolderError, PackageError) as exc:
            raise QgsProcessingException(str(exc)) from None
        except ImportError as exc:
            raise QgsProcessingException(str(exc)) from None
        except Exception as exc:  # TrainingError from train_nn carries a user-facing message
            if type(exc).__name__ == "TrainingError":
                raise QgsProcessingException(str(exc)) from None
            raise
        for mode in pkg.available_modes():
            feedback.pushInfo(f"mode {mode}: threshold {pkg.threshold(mode):.3f}, members "
                              + ", ".join(m["name"] for m in pkg.members_for(mode)))
        return {"OUTPUT": out}
