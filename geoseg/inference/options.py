"""The options of prediction, declared once.

Each field of :class:`PredictOptions` and :class:`VectorOptions` carries, beside its default, what every other
place needs to know about it: its command-line flag, help text and choices (the CLI builds ``geoseg
predict``'s options from them), whether it is recorded in the outputs' metadata (``described``), and how it
enters ``--resume``'s fingerprint (``resume``): ``"fingerprint"`` (a run with another value starts over),
``"outputs"`` (it chooses which rasters are written, and the list of outputs is fingerprinted), ``"final"``
(it shapes only the final rewrite after the blocks) or ``"where"`` (where and how often the work runs, not
what it computes). ``qgis`` says whether the QGIS provider's *Predict land cover* offers it. Tests compare
these declarations with the CLI, the metadata, the fingerprint and the QGIS algorithm, so they cannot drift.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from geoseg.io.formats import DEFAULT_LAYER
from geoseg.models.engines import ENGINES

#: Seconds between commits of the finished blocks to disk (for ``--resume``).
COMMIT_SECONDS = 2.0
PRECISIONS = ("auto", "bf16", "fp32")
TTA_MODES = ("none", "flips")
SAMPLINGS = ("model", "native")
PROBABILITY_TYPES = ("uint8", "float16")


def option(default: Any, help: str, *, flag: str | None = None, resume: str, described: bool = True,
           qgis: bool = False, choices: tuple[str, ...] | None = None, kind: str | None = None,
           minimum: float | None = None, metavar: str | None = None, show_default: bool = False) -> Any:
    """A field with its declaration (see the module's docstring). ``kind``: ``int``, ``float`` or ``flag``
    for the CLI (text otherwise); ``minimum``: the smallest value the CLI accepts."""
    return field(default=default, metadata={
        "help": help, "flag": flag, "resume": resume, "described": described, "qgis": qgis,
        "choices": choices, "kind": kind, "minimum": minimum, "metavar": metavar,
        "show_default": show_default})


@dataclass(frozen=True)
class PredictOptions:
    """How to run prediction; ``None`` picks a default from the checkpoint or the machine."""

    tile: int | None = option(None, "Side of the tiles the model predicts, in pixels, a multiple of 32 "
                              "(default: for a U-Net, FPN or LinkNet on a convolutional encoder, the tile "
                              "from its training chip to 4 chips that computes the fewest pixels for the "
                              "scene; else its training chip).", flag="--tile", kind="int", minimum=32,
                              resume="fingerprint")
    overlap: int | None = option(None, "Pixels shared by neighbouring tiles (default: the training chip/8; "
                                 "with --tile, the tile/8).", flag="--overlap", kind="int",
                                 resume="fingerprint", qgis=True)
    block_chips: int = option(4, "Output block side in chip strides.", flag="--block-chips", kind="int",
                              show_default=True, resume="fingerprint")
    batch_size: int | None = option(None, "Tiles per forward pass (default 1 on CPU; on GPU, the pixels of 8 "
                                    "training chips).",
                                    flag="--batch-size", kind="int", minimum=1, resume="fingerprint")
    precision: str = option("auto", "torch's precision: bf16 autocast where the CPU or GPU has it (auto), or "
                            "as given.", flag="--precision", choices=PRECISIONS, show_default=True,
                            resume="fingerprint")
    engine: str = option("auto", "auto: torch on a GPU; on a CPU the fastest of ONNX Runtime fp32, "
                         "torch bf16 and adaptive that keeps fp32's classes, measured once per model and "
                         "CPU; torch; onnx; int8 (ONNX Runtime static quantization, calibrated on training "
                         "chips); adaptive (int8, and fp32 again for the chips where int8 is unsure). "
                         "Exported models are cached beside the checkpoint.", flag="--engine",
                         choices=ENGINES, show_default=True, resume="fingerprint", qgis=True)
    tta: str = option("none", "Test-time augmentation: average over flips (4× the compute).", flag="--tta",
                      choices=TTA_MODES, show_default=True, resume="fingerprint", qgis=True)
    workers: int | None = option(None, "dask workers of the local cluster (default 1).", flag="--workers",
                                 kind="int", resume="where", described=False)
    threads: int | None = option(None, "torch threads per worker (default: cores / workers).",
                                 flag="--threads", kind="int", resume="where", described=False)
    processes: bool | None = option(None, "Local workers as processes (default: only when workers > 1).",
                                    resume="where", described=False)
    scheduler: str | None = option(None, "Address of an existing dask.distributed scheduler.",
                                   flag="--scheduler", resume="where", described=False)
    confidence: bool = option(False, "Also write <raster>_confidence.tif (max probability, 0–100).",
                              flag="--confidence", kind="flag", resume="outputs", qgis=True)
    probabilities: str | None = option(None, "Also write <raster>_probabilities.tif, one band per class.",
                                       flag="--probabilities", choices=PROBABILITY_TYPES,
                                       resume="fingerprint")
    cog: bool = option(False, "Write Cloud-Optimized GeoTIFFs.", flag="--cog", kind="flag", resume="final")
    bands: tuple[int | str, ...] | None = option(
        None, "Scene bands for the model's inputs, in order, by number (1-based) or description "
        "(B04,B03,B02); default: the bands it was trained on.", flag="--bands", metavar="3,2,1",
        resume="fingerprint", qgis=True)
    sampling: str = option("model", "model: read the scene at the pixel size the model was trained at "
                           "(resolution: or downsize_res:) and write the outputs on the scene's own grid; "
                           "native: feed its pixels as they are.", flag="--sampling", choices=SAMPLINGS,
                           show_default=True, resume="fingerprint")
    aoi: str | None = option(None, "Area of interest (polygons, any CRS): only chips touching it run; "
                             "outputs are masked to it.", flag="--aoi", kind="file", resume="fingerprint",
                             qgis=True)
    acquired: str | None = option(None, "When the scene was acquired (ISO 8601, e.g. 2024-06-01), for the "
                                  "STAC item where the scene's metadata does not say.", flag="--acquired",
                                  metavar="DATE", resume="final")
    commit_seconds: float = option(COMMIT_SECONDS, "How often finished blocks are committed for --resume.",
                                   resume="where", described=False)


@dataclass(frozen=True)
class VectorOptions:
    """Cartographic options for the polygons (and, for ``min_area``, the class raster too)."""

    min_area: float | None = option(None, "Minimum mapping unit in m²: smaller regions are absorbed by a "
                                    "neighbour (raster and polygons).", flag="--min-area", kind="float",
                                    minimum=0, resume="final", qgis=True)
    simplify: float | None = option(None, "Simplify polygons with this tolerance (CRS units), keeping shared "
                                    "edges shared.", flag="--simplify", kind="float", minimum=0,
                                    resume="final", qgis=True)
    dissolve: bool = option(False, "One multipolygon per class.", flag="--dissolve", kind="flag",
                            resume="final")
    layer: str = option(DEFAULT_LAYER, "GeoPackage layer name.", flag="--layer", show_default=True,
                        resume="final")


def declared(cls: type) -> list[tuple[str, Any, dict[str, Any]]]:
    """(name, default, declaration) of each option of ``cls``, in order."""
    return [(f.name, None if f.default is MISSING else f.default, dict(f.metadata)) for f in fields(cls)]


def described(options: PredictOptions, vector: VectorOptions) -> dict[str, Any]:
    """The options that shaped the outputs, for their metadata: those declared ``described`` and set."""
    out = {}
    for values in (options, vector):
        for name, _, meta in declared(type(values)):
            value = getattr(values, name)
            if meta["described"] and value is not None:
                out[name] = list(value) if isinstance(value, tuple) else value
    return out
