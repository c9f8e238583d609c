"""The three algorithms: Predict land cover, Evaluate against labels, Train from config. Each builds a
geoseg command line from its parameters and runs it (:mod:`.runner`)."""

from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputFile,
    QgsProcessingOutputFolder,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsProcessingParameterVectorLayer,
)

from .runner import run_geoseg, tr
from .staging import StagedOutputs

#: What geoseg writes: class rasters as GeoTIFF, polygons in these formats (``geoseg.io.formats``).
RASTER_SUFFIXES = (".tif", ".tiff")
VECTOR_SUFFIXES = (".gpkg", ".geojson", ".shp", ".fgb", ".parquet")


class _GeosegAlgorithm(QgsProcessingAlgorithm):
    def createInstance(self):  # noqa: N802 (QGIS's name)
        return type(self)()

    def group(self):
        return tr("Land cover")

    def groupId(self):  # noqa: N802
        return "landcover"

    def displayName(self):  # noqa: N802
        return tr(self.title)

    def shortHelpString(self):  # noqa: N802
        return tr(self.help)

    def _file(self, layer, what):
        """The file behind a layer (geoseg reads files, not QGIS layers in memory)."""
        source = layer.source().split("|")[0]
        if not Path(source).exists() and "://" not in source and not source.startswith("/vsi"):
            raise QgsProcessingException(tr("the {0} layer '{1}' is not a file geoseg can read; save it as a "
                                            "GeoTIFF or GeoPackage first").format(what, layer.name()))
        return source


class PredictAlgorithm(_GeosegAlgorithm):
    title = "Predict land cover"
    help = ("Predicts land cover of a scene with a geoseg model (.ckpt, or an exported .onnx): a styled "
            "class raster and, optionally, land-cover polygons never cut by the processing grid. The outputs "
            "replace earlier files of the same names only when the run finishes.")

    #: geoseg's engines and test-time augmentations (``geoseg predict --engine`` / ``--tta``).
    ENGINES = ["auto", "torch", "onnx", "int8", "adaptive"]
    TTA = ["none", "flips"]

    def name(self):
        return "predict"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", tr("Scene")))
        self.addParameter(QgsProcessingParameterFile("MODEL", tr("Model (geoseg checkpoint or ONNX)"),
                                                     fileFilter="geoseg models (*.ckpt *.onnx)"))
        self.addParameter(QgsProcessingParameterNumber(
            "OVERLAP", tr("Chip overlap (pixels; default chip / 8)"), minValue=0, optional=True))
        self.addParameter(QgsProcessingParameterNumber("MIN_AREA", tr("Minimum mapping unit (m²)"),
                                                       QgsProcessingParameterNumber.Double, minValue=0,
                                                       optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "SIMPLIFY", tr("Simplify polygons (tolerance, CRS units)"), QgsProcessingParameterNumber.Double,
            minValue=0, optional=True))
        self.addParameter(QgsProcessingParameterVectorLayer("AOI", tr("Area of interest"),
                                                            [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterString("BANDS", tr("Bands (numbers or names, e.g. 4,3,2; "
                                                                  "default: the model's)"), optional=True))
        self.addParameter(QgsProcessingParameterEnum("ENGINE", tr("Engine"), self.ENGINES, defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum("TTA", tr("Test-time augmentation"), self.TTA,
                                                     defaultValue=0))
        self.addParameter(QgsProcessingParameterBoolean("CONFIDENCE", tr("Also write confidence"), False))
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT_RASTER", tr("Land-cover classes")))
        self.addParameter(QgsProcessingParameterVectorDestination("OUTPUT_VECTOR", tr("Land-cover polygons"),
                                                                  QgsProcessing.TypeVectorPolygon,
                                                                  optional=True, createByDefault=True))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        scene = self._file(self.parameterAsRasterLayer(parameters, "INPUT", context), "scene")
        raster = self.parameterAsOutputLayer(parameters, "OUTPUT_RASTER", context)
        vector = self.parameterAsOutputLayer(parameters, "OUTPUT_VECTOR", context) \
            if parameters.get("OUTPUT_VECTOR") is not None else None
        if raster and Path(raster).suffix.lower() not in RASTER_SUFFIXES:
            raise QgsProcessingException(tr("the class raster is written as a GeoTIFF: give it a .tif name"))
        if vector and Path(vector).suffix.lower() not in VECTOR_SUFFIXES:
            raise QgsProcessingException(tr("geoseg writes polygons as {0}: give the polygons one of these "
                                            "extensions").format(", ".join(VECTOR_SUFFIXES)))
        staged = StagedOutputs([raster, vector])
        model = self.parameterAsFile(parameters, "MODEL", context)
        args = ["predict", scene, "--model", model, "--overwrite"]
        args += ["-o", staged.path(vector), "--raster", staged.path(raster)] if vector else \
            ["-o", staged.path(raster)]
        for key, option in (("OVERLAP", "--overlap"), ("MIN_AREA", "--min-area"), ("SIMPLIFY", "--simplify")):
            if parameters.get(key) not in (None, ""):
                number = self.parameterAsDouble(parameters, key, context)
                args += [option, str(int(number)) if key == "OVERLAP" else repr(number)]
        if parameters.get("AOI") is not None:
            args += ["--aoi", self.parameterAsCompatibleSourceLayerPath(
                parameters, "AOI", context, ["gpkg", "shp"], "gpkg", feedback)]
        bands = self.parameterAsString(parameters, "BANDS", context).strip()
        if bands:
            args += ["--bands", bands]
        args += ["--engine", self.ENGINES[self.parameterAsEnum(parameters, "ENGINE", context)]]
        args += ["--tta", self.TTA[self.parameterAsEnum(parameters, "TTA", context)]]
        if self.parameterAsBoolean(parameters, "CONFIDENCE", context):
            args.append("--confidence")
        run_geoseg(args, feedback, staged)
        results = {"OUTPUT_RASTER": raster}
        if vector:
            results["OUTPUT_VECTOR"] = vector
        return results


class EvaluateAlgorithm(_GeosegAlgorithm):
    title = "Evaluate against labels"
    help = ("Scores a class raster against labels (a class raster, an RGB mask or polygons): per-class IoU, "
            "precision, recall, F1, mIoU, kappa, an error map and a report.")

    def name(self):
        return "evaluate"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("PREDICTION", "Predicted classes"))
        self.addParameter(QgsProcessingParameterMapLayer("TRUTH", "Labels (raster or polygons)"))
        self.addParameter(QgsProcessingParameterString("LABEL_FIELD", "Class field of polygon labels",
                                                       "class_id"))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "Evaluation folder"))
        self.addOutput(QgsProcessingOutputFile("REPORT", "Report"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        prediction = self._file(self.parameterAsRasterLayer(parameters, "PREDICTION", context), "prediction")
        truth = self._file(self.parameterAsLayer(parameters, "TRUTH", context), "labels")
        folder = self.parameterAsString(parameters, "OUTPUT", context)
        reported = run_geoseg(["evaluate", prediction, "--truth", truth, "--out", folder, "--overwrite",
                               "--label-field", self.parameterAsString(parameters, "LABEL_FIELD", context)],
                              feedback)
        return {"OUTPUT": folder, "REPORT": reported.get("report", str(Path(folder) / "report.md"))}


class TrainAlgorithm(_GeosegAlgorithm):
    title = "Train from config"
    help = ("Trains a model as a geoseg run config says (geoseg init writes one from your scenes and "
            "polygons); returns the best checkpoint, to use in Predict land cover.")

    def name(self):
        return "train"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile("CONFIG", "Run config (YAML)",
                                                     fileFilter="YAML (*.yaml *.yml)"))
        self.addParameter(QgsProcessingParameterNumber("EPOCHS", "Epochs (default: the config's)", minValue=1,
                                                       optional=True))
        self.addOutput(QgsProcessingOutputFile("CHECKPOINT", "Best checkpoint"))
        self.addOutput(QgsProcessingOutputFolder("RUN_FOLDER", "Run folder"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        args = ["train", "--config", self.parameterAsFile(parameters, "CONFIG", context)]
        if parameters.get("EPOCHS") not in (None, ""):
            args += ["--epochs", str(self.parameterAsInt(parameters, "EPOCHS", context))]
        reported = run_geoseg(args, feedback)
        if not reported.get("checkpoint"):
            raise QgsProcessingException(tr("geoseg train finished without reporting its best checkpoint"))
        return {"CHECKPOINT": reported["checkpoint"], "RUN_FOLDER": reported["run_folder"]}
