"""``geoseg init``: a training project from one's own imagery and polygon labels, in one command.

:func:`init_project` finds the scenes (a folder, a glob or files), reads the
polygon labels (several files are merged, later ones drawn over earlier ones),
builds the class list from the label field's values (:func:`classes_from_values`),
splits the labelled scenes into train/val/test by scene, or, for a single
scene, by spatial blocks (VRT windows of it, so that validation pixels are not
next to training pixels), picks defaults for the imagery found (bands, chip
size, resolution, normalisation) and writes ``manifest.csv`` and a commented
run config.
"""

from __future__ import annotations

import glob
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence
from xml.sax.saxutils import escape

import numpy as np
from affine import Affine

from geoseg.errors import ConfigError, LabelError
from geoseg.io.atomic import atomic_write_text, check_output_path
from geoseg.io.classes import ClassSchema, LandClass
from geoseg.io.formats import IMAGE_SUFFIXES
from geoseg.io.grid import GeoGrid
from geoseg.io.raster import open_raster

#: Colours given to classes found in the labels, in order (ColorBrewer Set1 and Dark2, then greys).
PALETTE = ["#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#ffff33", "#a65628", "#f781bf",
           "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]

#: A single scene is cut into this many blocks on a side for its spatial train/val/test split (3 for scenes
#: under 1024 px on their shorter side).
SPLIT_BLOCKS = 4


@dataclass
class Project:
    config: Path
    manifest: Path
    labels: Path
    classes: ClassSchema
    splits: dict[str, int]   # manifest rows per split
    unlabelled: list[Path]   # scenes no polygon reaches (left out of the manifest)


def find_images(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The raster files of a folder, a glob pattern, a file, or a list of those, sorted."""
    specs = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    found: list[Path] = []
    for s in specs:
        p = Path(s)
        if p.is_dir():
            found += [f for f in sorted(p.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()]
        elif p.is_file():
            found.append(p)
        else:
            found += [Path(f) for f in sorted(glob.glob(str(s))) if Path(f).suffix.lower() in IMAGE_SUFFIXES]
    if not found and len(specs) == 1 and Path(specs[0]).is_dir():
        raise ConfigError(f"{specs[0]} is a directory with no raster files (.tif, .jp2, .vrt, …) in it; give "
                          "a scene file, a folder of scenes or a glob such as 'scenes/*.tif'")
    if not found:
        raise ConfigError(f"no raster files (.tif, .jp2, .vrt, …) found at {', '.join(map(str, specs))}; "
                          "give a folder, a glob such as 'scenes/*.tif' or the files")
    return sorted(dict.fromkeys(f.resolve() for f in found))


def read_polygon_labels(paths: Sequence[str | os.PathLike], field: str):
    """The polygons of all ``paths`` in the first file's CRS, in file order (so later polygons are drawn
    over earlier ones), without those whose ``field`` is empty."""
    import geopandas as gpd
    import pandas as pd

    frames = []
    for path in paths:
        if not Path(path).is_file():
            raise LabelError(f"label file {path} does not exist")
        gdf = gpd.read_file(path)
        if field not in gdf.columns:
            fields = ", ".join(c for c in gdf.columns if c != "geometry")
            raise LabelError(f"label file {path} has no field '{field}' (its fields: {fields}); give the "
                             "class field with --label-field")
        if gdf.crs is None:
            raise LabelError(f"label file {path} has no CRS; set it in QGIS (Layer → Set CRS) and save again")
        frames.append(gdf[[field, "geometry"]])
    crs = frames[0].crs
    merged = gpd.GeoDataFrame(pd.concat([f.to_crs(crs) for f in frames], ignore_index=True), crs=crs)
    merged = merged[merged[field].notna() & merged.geometry.notna() & ~merged.geometry.is_empty]
    if not len(merged):
        raise LabelError(f"the label files hold no polygon with a value in '{field}'")
    return merged


def classes_from_values(values) -> ClassSchema:
    """A class list from a label field's values: text names (one class per name, any case; codes 1, 2, …
    in alphabetical order, so they do not depend on file order) or integer codes (named ``class <code>``);
    a colour each from :data:`PALETTE`."""
    values = list(values)
    if all(isinstance(v, (int, np.integer)) or (isinstance(v, float) and float(v).is_integer())
           for v in values):
        codes = sorted({int(v) for v in values})
        if codes[0] < 0 or codes[-1] > 254:
            raise LabelError(f"class codes must be 0..254, the labels hold {codes[0]}..{codes[-1]}")
        named = [(code, f"class {code}") for code in codes]
    else:
        names: dict[str, str] = {}
        for v in values:
            names.setdefault(str(v).strip().lower(), str(v).strip())
        named = [(i + 1, names[key]) for i, key in enumerate(sorted(names))]
    return ClassSchema(tuple(LandClass(code, name, _rgb(PALETTE[i % len(PALETTE)]))
                             for i, (code, name) in enumerate(named)))


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


def init_project(images, labels: Sequence[str | os.PathLike], label_field: str,
                 out: str | os.PathLike = ".", config_name: str = "geoseg.yaml", seed: int = 0,
                 overwrite: bool = False) -> Project:
    """Write ``manifest.csv``, ``labels.gpkg`` (when several label files are merged) and a run config into
    ``out`` for ``images`` labelled by the polygons in ``labels``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"the output folder {out} is a file; give --out a folder (created if missing)")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _init_into(out, images, labels, label_field, config_name, seed, overwrite)
    except BaseException:
        if created:  # a refused or interrupted init leaves no folder behind
            shutil.rmtree(out, ignore_errors=True)
        raise


def _init_into(out: Path, images, labels: Sequence[str | os.PathLike], label_field: str, config_name: str,
               seed: int, overwrite: bool) -> Project:
    config_path = check_output_path(out / config_name, overwrite)
    manifest_path = check_output_path(out / "manifest.csv", overwrite)
    scenes = find_images(images)
    polygons = read_polygon_labels(labels, label_field)
    schema = classes_from_values(polygons[label_field])
    if len(labels) > 1:
        label_path = check_output_path(out / "labels.gpkg", overwrite)
        polygons.to_file(label_path, layer="labels")
    else:
        label_path = Path(labels[0]).resolve()
    infos = [_scene_facts(p, polygons) for p in scenes]
    labelled = [f for f in infos if f.labelled]
    if not labelled:
        raise LabelError(f"no polygon of {', '.join(map(str, labels))} falls on any of the {len(scenes)} "
                         "scenes; check that labels and scenes cover the same ground")
    if len(labelled) == 1:
        rows = _block_rows(labelled[0], polygons, out / "blocks", seed)
    else:
        rows = _scene_rows([f.path for f in labelled], seed)
    manifest = "image,label,split\n" + "".join(
        f"{_relative(image, out)},{_relative(label_path, out)},{split}\n" for image, split in rows)
    atomic_write_text(manifest_path, manifest)
    smallest = min(min(_size(image)) for image, _ in rows)
    atomic_write_text(config_path, _config_text(labelled, schema, label_field, smallest))
    splits = {s: sum(1 for _, split in rows if split == s) for s in ("train", "val", "test")}
    return Project(config_path, manifest_path, label_path, schema, splits,
                   [f.path for f in infos if not f.labelled])


@dataclass
class _SceneFacts:
    path: Path
    grid: GeoGrid
    count: int
    dtype: str
    descriptions: tuple
    alpha: list[int]
    labelled: bool


def _scene_facts(path: Path, polygons) -> _SceneFacts:
    import shapely
    from rasterio.enums import ColorInterp

    with open_raster(path) as src:
        grid = GeoGrid.from_dataset(src)
        alpha = [i + 1 for i, c in enumerate(src.colorinterp) if c == ColorInterp.alpha]
        facts = _SceneFacts(path, grid, src.count, src.dtypes[0], src.descriptions, alpha, False)
        if src.crs is None:
            raise ConfigError(f"{path} has no CRS, so polygon labels cannot be placed on it; georeference it "
                              "first (or label it with a class raster on its grid)")
        footprint = shapely.box(*src.bounds) if grid.transform.is_rectilinear else shapely.Polygon(
            [grid.transform @ corner for corner in ((0, 0), (src.width, 0), (src.width, src.height),
                                                    (0, src.height))])
        in_scene_crs = polygons.to_crs(src.crs) if polygons.crs != src.crs else polygons
    facts.labelled = bool(len(in_scene_crs.sindex.query(footprint, predicate="intersects")))
    return facts


def _scene_rows(scenes: list[Path], seed: int) -> list[tuple[Path, str]]:
    """Split scenes by scene: about 15 % for validation (at least one) and, from five scenes on, 15 % for a
    test split; a seeded shuffle, the same on every machine."""
    n = len(scenes)
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(0.15 * n))
    n_test = max(1, round(0.15 * n)) if n >= 5 else 0
    splits = ["val"] * n_val + ["test"] * n_test + ["train"] * (n - n_val - n_test)
    return sorted(((scenes[k], split) for k, split in zip(order, splits)), key=lambda r: str(r[0]))


def _block_rows(scene: _SceneFacts, polygons, folder: Path, seed: int) -> list[tuple[Path, str]]:
    """One scene cut into :data:`SPLIT_BLOCKS`² (or 3²) blocks (VRT windows of it): one labelled block for
    validation, one for test (when three or more hold labels), the others for training."""
    import shapely

    grid = scene.grid
    folder.mkdir(exist_ok=True)
    in_scene_crs = polygons.to_crs(grid.crs) if polygons.crs != grid.crs else polygons
    rows, labelled = [], []
    n = SPLIT_BLOCKS if min(grid.width, grid.height) >= 1024 else 3
    bh, bw = math.ceil(grid.height / n), math.ceil(grid.width / n)
    for r in range(0, grid.height, bh):
        for c in range(0, grid.width, bw):
            h, w = min(bh, grid.height - r), min(bw, grid.width - c)
            corners = [grid.transform @ xy for xy in ((c, r), (c + w, r), (c + w, r + h), (c, r + h))]
            if len(in_scene_crs.sindex.query(shapely.Polygon(corners), predicate="intersects")):
                path = folder / f"{scene.path.stem}_r{r // bh}c{c // bw}.vrt"
                _write_window_vrt(scene.path, (c, r, w, h), path)
                labelled.append(path)
    order = list(np.random.default_rng(seed).permutation(len(labelled)))
    held = ["val"] + (["test"] if len(labelled) >= 3 else [])
    for k, index in enumerate(order):
        rows.append((labelled[index], held[k] if k < len(held) and len(labelled) > 1 else "train"))
    return sorted(rows, key=lambda r: str(r[0]))


def _write_window_vrt(source: Path, window: tuple[int, int, int, int], path: Path) -> Path:
    """A VRT of ``window`` (col, row, width, height) of ``source``: the same pixels, transform, CRS, nodata,
    scale/offset, band descriptions and mask, without copying them."""
    c, r, w, h = window
    with open_raster(source) as src:
        t = src.transform @ Affine.translation(c, r)
        bands = []
        for b in range(1, src.count + 1):
            extra = ""
            if src.nodatavals[b - 1] is not None:
                extra += f"<NoDataValue>{src.nodatavals[b - 1]!r}</NoDataValue>"
            if src.descriptions[b - 1]:
                extra += f"<Description>{escape(src.descriptions[b - 1])}</Description>"
            extra += f"<ColorInterp>{src.colorinterp[b - 1].name.capitalize()}</ColorInterp>"
            extra += f"<Offset>{src.offsets[b - 1]!r}</Offset><Scale>{src.scales[b - 1]!r}</Scale>"
            bands.append(f'<VRTRasterBand dataType="{_gdal_type(src.dtypes[b - 1])}" band="{b}">{extra}'
                         f"{_source(source, b, window)}</VRTRasterBand>")
        mask = ""
        if src.nodata is None and any(f.name == "per_dataset" for f in src.mask_flag_enums[0]) and not any(
                ci.name == "alpha" for ci in src.colorinterp):
            mask = f'<MaskBand><VRTRasterBand dataType="Byte">{_source(source, "mask,1", window)}' \
                   "</VRTRasterBand></MaskBand>"
        crs = f"<SRS>{escape(src.crs.to_wkt())}</SRS>" if src.crs else ""
    geo = ", ".join(repr(v) for v in (t.c, t.a, t.b, t.f, t.d, t.e))
    atomic_write_text(path, f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}">{crs}'
                            f"<GeoTransform>{geo}</GeoTransform>{''.join(bands)}{mask}</VRTDataset>\n")
    return path


def _source(source: Path, band, window) -> str:
    c, r, w, h = window
    return (f'<SimpleSource><SourceFilename relativeToVRT="0">{escape(str(Path(source).resolve()))}'
            f"</SourceFilename><SourceBand>{band}</SourceBand>"
            f'<SrcRect xOff="{c}" yOff="{r}" xSize="{w}" ySize="{h}"/>'
            f'<DstRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/></SimpleSource>')


def _gdal_type(dtype: str) -> str:
    return {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
            "int32": "Int32", "float32": "Float32", "float64": "Float64"}[dtype]


def _relative(path: Path, folder: Path) -> str:
    return os.path.relpath(Path(path).resolve(), folder.resolve())


def _size(image: Path) -> tuple[int, int]:
    with open_raster(image) as src:
        return src.width, src.height


#: Chip side of a new project (the CPU recipe's; smaller scenes get a smaller power of two).
CHIP = 128


def loader_workers(cores: int | None = None) -> int:
    """DataLoader processes for this machine: none on 2 cores or fewer (a loader process there slows the
    training step more than its reads cost: 92 % against 95 % of the raw step), else half the cores, at most
    4."""
    cores = cores or os.cpu_count() or 1
    return 0 if cores <= 2 else min(4, cores // 2)


def _config_text(scenes: list[_SceneFacts], schema: ClassSchema, label_field: str, smallest: int) -> str:
    """The run config for these scenes, commented."""
    first = scenes[0]
    bands: list = [b for b in range(1, first.count + 1) if b not in first.alpha]
    names = [first.descriptions[b - 1] for b in bands]
    if all(names) and len(set(names)) == len(names) and all(
            s.descriptions == first.descriptions for s in scenes):
        bands = names
    eight_bit = all(s.dtype == "uint8" for s in scenes)
    chip = CHIP if smallest >= CHIP else max(32, 2 ** int(math.log2(max(32, smallest))))
    sizes = [s.grid.ground_resolution for s in scenes]
    resolution = None
    if all(sizes) and max(sizes) / min(sizes) > 1.01:
        resolution = float(np.median(sizes))
    classes = "\n".join(f"  - {{code: {c.code}, name: {_yaml_text(c.name)}, color: "
                        f"'#{c.color[0]:02x}{c.color[1]:02x}{c.color[2]:02x}'}}" for c in schema.classes)
    resolution_text = f"{resolution:g}" if resolution else "null               # the scenes' own pixels"
    band_list = ", ".join(_yaml_text(b) if isinstance(b, str) else str(b) for b in bands)
    return f"""# Written by geoseg init: a run on your own scenes and polygon labels. Edit freely, then
#   geoseg train --config THIS_FILE        (any key can be overridden: --set budget=30m)
# The CPU recipe: a light U-Net from an ImageNet encoder (from scratch where its weights cannot be had),
# trained for a fixed time (see docs/tutorials/cpu.md).
batch_size: 4
ce_weights: null               # or 'auto' (median-frequency balancing), or one weight per class
downsize_res: null
epochs: 10                     # validation rounds; the budget sets the chips in each
loss_fn: CrossEntropyLoss
lr: 0.002
model_architecture: Unet
model_config:
  classes: {len(schema)}
  encoder_name: resnet18
  encoder_weights: imagenet   # downloaded once; offline: the cache, a file path, or from scratch
  in_channels: {len(bands)}
  decoder_channels: [128, 64, 32, 16, 16]
num_workers: {loader_workers()}              # loader processes (0 on 2 cores: read in the training process)
optimizer: AdamW

manifest: manifest.csv
label_field: {_yaml_text(label_field)}
classes:                       # from the values of '{label_field}'
{classes}
bands: [{band_list}]
normalization: {"mean_std" if eight_bit else "percentile 2 98"}
resolution: {resolution_text}
chip_size: {chip}
budget: 15m                    # train for this long: chips per epoch from the measured speed
chips_per_epoch: 500           # used only with budget: null
val_chips: 64
lr_schedule: cosine
band_jitter: 0.08              # each chip's bands scaled by gains from 0.92 to 1.08 (colour shifts)
unlabelled_chips: 0.0          # labels cover part of the scenes: chips are drawn where they are
precision: auto
seed: 0
output_dir: runs
logger: csv                    # or wandb (offline unless WANDB_MODE=online)
"""


def _yaml_text(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"
