"""Many scenes, one map: several scenes (or a folder, or a glob) → a raster per scene, a mosaic VRT and one
polygon layer whose polygons are not cut at scene edges; --aoi runs only the chips touching the area."""

from __future__ import annotations

import subprocess
import sys

import geopandas as gpd
import numpy as np
import pyproj
import pytest
import rasterio
import rasterio.crs
import rasterio.features
import shapely
from affine import Affine
from rasterio.features import rasterize

from geoseg.errors import RasterError
from geoseg.inference.predict import PredictOptions, VectorOptions, predict_scene
from geoseg.inference.region import predict_region
from geoseg.io.grid import ChipGrid

from conftest import UTM, write_raster


def tiles(tmp_path, n=2, size=96, step=None):
    """An n × n mosaic of scenes cut from one smooth synthetic scene (0.5 m pixels), adjacent or, with
    ``step`` < ``size``, overlapping."""
    step = step or size
    y, x = np.mgrid[0:(n - 1) * step + size, 0:(n - 1) * step + size]
    whole = np.stack([120 + 80 * np.sin(x / 23.0), 120 + 80 * np.cos(y / 17.0),
                      120 + 60 * np.sin((x + y) / 31.0)]).astype(np.uint8)
    folder = tmp_path / "scenes"
    folder.mkdir()
    paths = []
    for i in range(n):
        for j in range(n):
            t = Affine(0.5, 0, 500000 + j * step * 0.5, 0, -0.5, 5000000 - i * step * 0.5)
            paths.append(write_raster(folder / f"tile_{i}{j}.tif",
                                      whole[:, i * step:i * step + size, j * step:j * step + size], t))
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


def textured(size: int, seed: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    rng = np.random.default_rng(seed)
    return np.clip(np.stack([120 + 80 * np.sin(x / 13.0 + seed), 120 + 80 * np.cos(y / 11.0),
                             120 + 60 * np.sin((x + y) / 17.0)]) + rng.normal(0, 8, (3, size, size)),
                   1, 255).astype(np.uint8)


def scene_at(path, lon: float, lat: float, crs, size: int = 96, pixel: float = 2.0, seed: int = 0):
    """A scene of ``size`` px of ``pixel`` CRS units centred on (lon, lat) in ``crs``."""
    x, y = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    half = size * pixel / 2
    return write_raster(path, textured(size, seed), Affine(pixel, 0, x - half, 0, -pixel, y + half), crs=crs)


def footprint_in(scene, crs) -> shapely.Polygon:
    """A scene's outline (densified) in ``crs``, by pyproj."""
    with rasterio.open(scene) as src:
        outline = shapely.segmentize(shapely.box(*src.bounds), 2.0)
        to = pyproj.Transformer.from_crs(src.crs, crs, always_xy=True)
    return shapely.Polygon(np.column_stack(to.transform(*np.asarray(outline.exterior.xy))))


def geodesic_area(geom, crs) -> float:
    to_wgs84 = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lonlat = shapely.transform(geom, lambda xy: np.column_stack(to_wgs84.transform(xy[:, 0], xy[:, 1])))
    return abs(pyproj.Geod(ellps="WGS84").geometry_area_perimeter(lonlat)[0])


def check_one_polygon_per_ground_point(out, scenes, crs):
    """The layer is in ``crs``; its polygons do not overlap (their planar areas add up to their union's);
    they cover the scenes' footprints; ``area_m2`` adds up to the geodesic area of the footprints' union
    (pyproj, independently) and the shares are shares of ground area."""
    polygons = gpd.read_file(out.vector, layer="landcover")
    assert pyproj.CRS(polygons.crs).equals(pyproj.CRS(crs))
    geoms = polygons.geometry.to_numpy()
    union = shapely.union_all(geoms)
    assert union.area == pytest.approx(shapely.area(geoms).sum(), rel=1e-9)  # no two polygons overlap
    ground = shapely.union_all([footprint_in(s, crs) for s in scenes])
    assert union.symmetric_difference(ground).area < 0.02 * ground.area  # warp edges: a pixel or so
    assert polygons.area_m2.sum() == pytest.approx(geodesic_area(ground, crs), rel=0.02)
    shares = {r["class_id"]: r["share"] for r in out.summary}
    areas = {r["class_id"]: r["area_m2"] for r in out.summary}
    assert sum(shares.values()) == pytest.approx(1.0)
    for code, share in shares.items():
        assert share == pytest.approx(areas[code] / sum(areas.values()))
    return polygons


def test_a_region_across_two_utm_zones_is_one_map_in_the_first_scenes_crs(tmp_path, tiny_checkpoint):
    """Overlapping scenes in UTM 33N and 34N either side of 18° E: one mosaic, one layer in UTM 33N, no
    ground point counted twice (before: each CRS vectorized apart and stacked, +20 % of area)."""
    a = scene_at(tmp_path / "a.tif", 17.999, 45.0, "EPSG:32633", seed=1)
    b = scene_at(tmp_path / "b.tif", 18.0005, 45.0, "EPSG:32634", seed=2)
    assert footprint_in(a, "EPSG:32633").intersection(footprint_in(b, "EPSG:32633")).area > 1000
    out = predict_region([a, b], tmp_path / "region.gpkg", tiny_checkpoint)
    assert len(out.mosaics) == 1
    with rasterio.open(out.mosaics[0]) as mosaic:
        assert pyproj.CRS(mosaic.crs.to_wkt()).equals(pyproj.CRS("EPSG:32633"))
    check_one_polygon_per_ground_point(out, [a, b], "EPSG:32633")


def test_one_crs_written_two_ways_is_one_crs(tmp_path, tiny_checkpoint):
    """A local transverse Mercator written once as a PROJ string, once as WKT with its own name and a null
    TOWGS84: their class rasters' WKT differ as text, yet they are one CRS: nothing warped, one mosaic,
    nothing counted twice (before: grouped by WKT text, two mosaics, overlaps stacked)."""
    plain = rasterio.crs.CRS.from_proj4("+proj=tmerc +lat_0=0 +lon_0=15.5 +k=0.9996 +x_0=500000 +y_0=0 "
                                        "+datum=WGS84 +units=m")
    named = rasterio.crs.CRS.from_wkt(
        pyproj.CRS(plain.to_wkt()).to_wkt("WKT1_GDAL")
        .replace('DATUM["WGS_1984",', 'DATUM["WGS_1984",TOWGS84[0,0,0,0,0,0,0],')
        .replace('PROJCS["unknown"', 'PROJCS["Farm grid TM 15.5"'))
    a = scene_at(tmp_path / "a.tif", 15.5, 45.0, plain, seed=1)
    b = scene_at(tmp_path / "b.tif", 15.501, 45.0, named, seed=2)
    out = predict_region([a, b], tmp_path / "region.gpkg", tiny_checkpoint)
    with rasterio.open(out.rasters[0]) as ra, rasterio.open(out.rasters[1]) as rb:
        assert ra.crs.to_wkt() != rb.crs.to_wkt()  # different text …
    assert len(out.mosaics) == 1 and not (tmp_path / "region_scenes" / "reprojected").exists()
    check_one_polygon_per_ground_point(out, [a, b], plain.to_wkt())  # … one CRS


def test_pixels_of_different_sizes_give_ground_shares(tmp_path, tiny_checkpoint):
    """A 0.5 m scene in UTM 33N and a 4 m scene in UTM 34N beside it: one map at 0.5 m, and each class's
    share is its share of the ground (before: pixel counts of the two mosaics added up, so 4 m pixels
    counted as much as 0.5 m ones)."""
    a = scene_at(tmp_path / "fine.tif", 17.9995, 45.0, "EPSG:32633", size=128, pixel=0.5, seed=1)
    b = scene_at(tmp_path / "coarse.tif", 18.0025, 45.0, "EPSG:32634", size=64, pixel=4.0, seed=2)
    out = predict_region([a, b], tmp_path / "region.gpkg", tiny_checkpoint)
    with rasterio.open(out.mosaics[0]) as mosaic:
        assert mosaic.res == pytest.approx((0.5, 0.5), rel=1e-3)
    check_one_polygon_per_ground_point(out, [a, b], "EPSG:32633")


def test_min_area_holds_across_scene_seams(tmp_path, tiny_checkpoint):
    """--min-area on a region sieves the mosaic as one map: no region under the minimum survives along a
    seam (before: each scene sieved alone, and small pieces stayed on the seams)."""
    scenes = tiles(tmp_path, step=72)  # overlapping scenes: the later one drawn over the earlier
    out = predict_region(scenes, tmp_path / "region.gpkg", tiny_checkpoint, vector=VectorOptions(min_area=20))
    polygons = gpd.read_file(out.vector, layer="landcover")
    assert len(polygons) > 1 and polygons.area_m2.min() >= 20 * 0.99
