"""Render the README's and the docs' pictures from the demo's outputs (``make demo``, then ``make figures``).

- ``docs/images/qgis_polygons.png``: the demo's polygons over the held-out scene, drawn by QGIS itself from
  the style geoseg stores in the GeoPackage (``docs/qgis_render.py`` under QGIS's own Python; skipped, with a
  line, where QGIS is not installed);
- ``docs/images/result.png``: the scene, the class raster in its colour table with a legend, and that QGIS
  rendering, side by side.

Run from the repository root with geoseg's environment: ``.venv/bin/python docs/make_figures.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import geopandas as gpd  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT / "sample_data/test_1.tif"
CLASSES = ROOT / "outputs/landcover.tif"
POLYGONS = ROOT / "outputs/landcover.gpkg"
IMAGES = ROOT / "docs/images"
QGIS_PYTHON = "/usr/bin/python3"


def render_in_qgis(out: Path, size: int = 700) -> bool:
    """The polygons over the scene as QGIS draws them (its offscreen platform, a clean PATH so its Python
    finds its own prefix); False where QGIS is not installed."""
    probe = subprocess.run([QGIS_PYTHON, "-c", "import qgis.core"], capture_output=True,
                           env={"PATH": "/usr/bin:/bin"}) if shutil.which(QGIS_PYTHON) else None
    if probe is None or probe.returncode != 0:
        print("QGIS is not installed here: the QGIS rendering is not made (apt-get install python3-qgis)")
        return False
    env = {"PATH": "/usr/bin:/bin", "QT_QPA_PLATFORM": "offscreen", "HOME": os.environ.get("HOME", "/tmp")}
    subprocess.run([QGIS_PYTHON, str(ROOT / "docs/qgis_render.py"), str(SCENE), str(POLYGONS), str(out),
                    str(size)], check=True, env=env)
    return True


def main() -> None:
    for path in (SCENE, CLASSES, POLYGONS):
        if not path.exists():
            sys.exit(f"{path} is missing: run make demo first")
    IMAGES.mkdir(parents=True, exist_ok=True)
    qgis_png = IMAGES / "qgis_polygons.png"
    in_qgis = render_in_qgis(qgis_png)

    with rasterio.open(SCENE) as src:
        rgb = src.read([1, 2, 3], out_shape=(3, 512, 512))
        valid = src.dataset_mask(out_shape=(512, 512)) > 0
    with rasterio.open(CLASSES) as src:
        codes = src.read(1, out_shape=(512, 512), resampling=rasterio.enums.Resampling.nearest)
        colours = src.colormap(1)
    table = gpd.read_file(POLYGONS, layer="landcover", columns=["class_id", "class_name"],
                          ignore_geometry=True)
    names = dict(zip(table.class_id.astype(int), table.class_name))
    lut = np.full((256, 4), 255, np.uint8)
    for code, colour in colours.items():
        lut[code] = colour
    lut[255] = (255, 255, 255, 0)
    image = np.moveaxis(rgb, 0, -1).copy()
    image[~valid] = 217  # the same grey as the class raster's nodata

    panels = 3 if in_qgis else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 5.4), dpi=90)
    axes[0].imshow(image)
    axes[0].set_title("held-out sample scene (0.5 m)")
    axes[1].imshow(np.full((*codes.shape, 3), 0.85))  # grey where nothing was predicted (nodata)
    axes[1].imshow(lut[codes])
    axes[1].set_title("geoseg's class raster")
    present = sorted(int(c) for c in np.unique(codes) if c != 255)
    handles = [Patch(facecolor=np.asarray(colours[c][:3]) / 255, edgecolor="0.4", linewidth=0.5,
                     label=names.get(c, str(c))) for c in present]
    axes[1].legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize=8,
                   frameon=False)
    if in_qgis:
        axes[2].imshow(plt.imread(qgis_png))
        axes[2].set_title("its polygons, drawn by QGIS")
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(IMAGES / "result.png", bbox_inches="tight")
    print(f"wrote {IMAGES / 'result.png'}" + (f" and {qgis_png}" if in_qgis else ""))


if __name__ == "__main__":
    main()
