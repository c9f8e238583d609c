"""Many scenes, one map: several scenes (or a folder, or a glob) → a raster per scene, a mosaic VRT and one
polygon layer whose polygons are not cut at scene edges; --aoi runs only the chips touching the area."""

from __future__ import annotations

import subprocess
import sys

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.features import rasterize

from geoseg.errors import RasterError
from geoseg.inference.predict import PredictOptions, predict_scene
from geoseg.inference.region import predict_region
from geoseg.io.grid import ChipGrid

from conftest import UTM, write_raster


def tiles(tmp_path, n=2, size=96):
    """An n × n mosaic of adjacent scenes cut from one smooth synthetic scene (0.5 m pixels)."""
    y, x = np.mgrid[0:n * size, 0:n * size]
    whole = np.stack([120 + 80 * np.sin(x / 23.0), 120 + 80 * np.cos(y / 17.0),
                      120 + 60 * np.sin((x + y) / 31.0)]).astype(np.uint8)
    folder = tmp_path / "scenes"
    folder.mkdir()
    paths = []
    for i in range(n):
        for j in range(n):
            t = Affine(0.5, 0, 500000 + j * size * 0.5, 0, -0.5, 5000000 - i * size * 0.5)
            paths.append(write_raster(folder / f"tile_{i}{j}.tif",
                                      whole[:, i * size:(i + 1) * size, j * size:(j + 1) * size], t))
    return paths


def test_region_polygons_match_the_scene_rasters_and_cross_scene_edges(tmp_path, tiny_checkpoint):
    scenes = tiles(tmp_path)
    out = predict_region(scenes, tmp_path / "region.gpkg", tiny_checkpoint)
    assert [p.name for p in out.rasters] == ["tile_00.tif", "tile_01.tif", "tile_10.tif", "tile_11.tif"]
    with rasterio.open(out.mosaics[0]) as mosaic:
        assert mosaic.shape == (192, 192) and mosaic.transform == Affine(0.5, 0, 500000, 0, -0.5, 5000000)
        assert mosaic.colormap(1)[1][:3] == (255, 255, 0)  # agriculture's colour: the mosaic opens styled
        whole = mosaic.read(1)
    polygons = gpd.read_file(out.vector, layer="landcover")
    assert len(polygons) == out.polygons
    for scene, raster in zip(scenes, out.rasters):
        with rasterio.open(raster) as src, rasterio.open(scene) as s:
            assert src.transform == s.transform and src.crs == s.crs
            back = rasterize(zip(polygons.geometry, polygons.class_id), out_shape=src.shape,
                             transform=src.transform, fill=255, dtype="uint8")
            assert np.array_equal(back, src.read(1))  # the region's polygons are exactly the scene rasters
    # no polygon is cut at a scene edge: no two polygons of one class share a boundary
    tree = shapely.STRtree(polygons.geometry.to_numpy())
    for i, j in zip(*tree.query(polygons.geometry.to_numpy(), predicate="intersects")):
        if i < j and polygons.class_id[i] == polygons.class_id[j]:
            assert polygons.geometry[i].intersection(polygons.geometry[j]).length == 0
    # the polygons are the whole mosaic's regions, vectorized in one piece here (4-connected, as rasterio's
    # own shapes): the same number, the same class areas, and the regions crossing the seam between the
    # left and right scenes are single polygons
    with rasterio.open(out.mosaics[0]) as mosaic:
        found = rasterio.features.shapes(whole, mask=whole != 255, connectivity=4, transform=mosaic.transform)
        expected = [(shapely.geometry.shape(g), int(v)) for g, v in found]
    assert len(polygons) == len(expected)
    for code in np.unique(whole[whole != 255]):
        ours = shapely.union_all(polygons.geometry[polygons.class_id == code].to_numpy())
        theirs = shapely.union_all([g for g, v in expected if v == code])
        assert ours.symmetric_difference(theirs).area < 1e-6
    edge = shapely.LineString([(500048, 5000000), (500048, 4999904)])
    crossing = [g for g, _ in expected if g.crosses(edge)]
    assert crossing
    for region in crossing:  # one polygon is exactly that region, not pieces of it
        candidates = polygons.geometry[polygons.geometry.intersects(region.representative_point())]
        assert len(candidates) == 1 and candidates.iloc[0].symmetric_difference(region).area < 1e-6
    assert np.unique(whole).size > 1


def test_a_folder_or_a_glob_of_scenes_from_the_command_line(tmp_path, tiny_checkpoint):
    tiles(tmp_path)
    result = geoseg("predict", tmp_path / "scenes", "-o", tmp_path / "r.vrt", "--model", tiny_checkpoint)
    assert result.returncode == 0, result.stderr
    assert "4 scenes" in result.stdout
    assert sorted(p.name for p in (tmp_path / "r_scenes").glob("*.tif")) == [
        "tile_00.tif", "tile_01.tif", "tile_10.tif", "tile_11.tif"]
    assert (tmp_path / "r.qml").exists()
    again = geoseg("predict", tmp_path / "scenes" / "tile_*.tif", "-o", tmp_path / "r.vrt", "--model",
                   tiny_checkpoint)
    assert again.returncode == 2 and again.stderr.strip().endswith("exists; pass --overwrite to replace it")


def geoseg(*args):
    return subprocess.run([sys.executable, "-m", "geoseg", *map(str, args)], capture_output=True, text=True)


def test_resume_keeps_the_scenes_finished_before_an_interruption(tmp_path, tiny_checkpoint):
    scenes = tiles(tmp_path)
    good = scenes[2].read_bytes()
    scenes[2].write_bytes(good[:len(good) // 3])  # a truncated scene stops the job at the third scene
    with pytest.raises(RasterError, match="tile_10.tif"):
        predict_region(scenes, tmp_path / "j.vrt", tiny_checkpoint)
    state = tmp_path / ".j.geoseg-job.json"
    assert state.exists()
    finished = {p: p.stat().st_mtime_ns for p in (tmp_path / "j_scenes").glob("*.tif")}
    assert sorted(p.name for p in finished) == ["tile_00.tif", "tile_01.tif"]
    scenes[2].write_bytes(good)
    resumed = predict_region(scenes, tmp_path / "j.vrt", tiny_checkpoint, resume=True)
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # not predicted again
    assert len(resumed.rasters) == 4 and all(p.exists() for p in resumed.rasters)
    assert not state.exists()


def test_aoi_runs_only_the_chips_touching_it_and_masks_the_outputs(tmp_path, tiny_checkpoint):
    pixels = np.random.default_rng(0).integers(1, 255, (3, 200, 200), np.uint8)
    scene = write_raster(tmp_path / "s.tif", pixels)
    with rasterio.open(scene) as src:
        t = src.transform
    area = shapely.Polygon([t @ (30, 20), t @ (90, 35), t @ (70, 110), t @ (25, 80)])
    gpd.GeoDataFrame(geometry=[area], crs=UTM).to_crs("EPSG:4326").to_file(tmp_path / "aoi.gpkg")
    options = PredictOptions(aoi=str(tmp_path / "aoi.gpkg"))
    result = predict_scene(scene, tiny_checkpoint, tmp_path / "out.tif", options)
    inside = rasterize([area], out_shape=(200, 200), transform=t, fill=0, default_value=1, dtype="uint8") == 1
    grid = ChipGrid.for_scene(200, 200, 64, 8)
    expected = 0
    for i in range(grid.rows):
        for j in range(grid.cols):
            r, c = grid.origin(i, j)
            expected += bool(inside[max(r, 0):r + 64, max(c, 0):c + 64].any())
    assert result.chips == expected < len(grid)
    with rasterio.open(tmp_path / "out.tif") as out:
        classes = out.read(1)
    assert (classes[~inside] == 255).all() and (classes[inside] != 255).all()
