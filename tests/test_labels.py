import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine
from rasterio.windows import Window

from geoseg.errors import GeoSegWarning, LabelError, RasterError
from geoseg.io.classes import DEEPGLOBE, ClassSchema
from geoseg.io.grid import GeoGrid
from geoseg.io.labels import LabelReader, decode_ids, decode_rgb

from conftest import UTM, write_raster


def test_rgb_mask_binarized_at_128_like_deepglobe():
    # compressed mask values near the palette: urban, agriculture, rangeland, forest, water, barren, unknown
    rgb = np.array([[[3, 250, 200, 10, 0, 255, 100]],
                    [[252, 251, 60, 200, 2, 130, 127]],
                    [[255, 8, 129, 30, 254, 128, 0]]], np.uint8)
    assert decode_rgb(rgb, DEEPGLOBE).tolist() == [[0, 1, 2, 3, 4, 5, 255]]


def test_rgb_colour_outside_palette_names_the_colour():
    rgb = np.zeros((3, 2, 2), np.uint8)
    rgb[0, 1, 1] = 240  # red: not a DeepGlobe colour
    with pytest.raises(LabelError, match=r"\(240, 0, 0\)"):
        decode_rgb(rgb, DEEPGLOBE, source="mask.png")


def test_class_ids_with_user_codes():
    schema = ClassSchema.from_dict([
        {"code": 10, "name": "tree", "color": [0, 100, 0]},
        {"code": 30, "name": "grass", "color": [255, 255, 76]},
        {"code": 80, "name": "water", "color": [0, 100, 200]},
    ])
    codes = np.array([[10, 30], [80, 255]], np.uint8)
    assert decode_ids(codes, schema, nodata=255).tolist() == [[0, 1], [2, 255]]
    with pytest.raises(LabelError, match=r"\[20\]"):
        decode_ids(np.array([[10, 20]]), schema, nodata=255)


def test_polygon_labels_rasterize_per_window(tmp_path):
    t = Affine(1, 0, 1000, 0, -1, 2000)
    grid = GeoGrid(8, 8, t, UTM)
    gdf = gpd.GeoDataFrame({"class_id": [4, 3]},
                           geometry=[shapely.box(1000, 1996, 1004, 2000), shapely.box(1004, 1992, 1008,
                                                                                      1996)],
                           crs=UTM)
    path = tmp_path / "labels.gpkg"
    gdf.to_file(path)
    reader = LabelReader(path, grid, DEEPGLOBE)
    out = reader.read(Window(2, 2, 4, 4), (4, 4))
    assert out.tolist() == [[4, 4, 255, 255], [4, 4, 255, 255], [255, 255, 3, 3], [255, 255, 3, 3]]


def test_polygon_labels_in_another_crs_are_reprojected(tmp_path):
    t = Affine(1, 0, 500000, 0, -1, 5000000)
    grid = GeoGrid(4, 4, t, UTM)
    gdf = gpd.GeoDataFrame({"class_id": [4]}, geometry=[shapely.box(500000, 4999998, 500004, 5000000)],
                           crs=UTM)
    path = tmp_path / "labels_wgs84.gpkg"
    gdf.to_crs("EPSG:4326").to_file(path)
    out = LabelReader(path, grid, DEEPGLOBE).read(Window(0, 0, 4, 4), (4, 4))
    assert (out[:2] == 4).all() and (out[2:] == 255).all()


def test_label_on_another_grid_is_refused(tmp_path):
    img = GeoGrid(8, 8, Affine(1, 0, 0, 0, -1, 8), UTM)
    lab = write_raster(tmp_path / "lab.tif", np.zeros((8, 8), np.uint8), Affine(1, 0, 1, 0, -1, 8),
                       nodata=255)
    with pytest.raises(RasterError, match="not on its image's grid"):
        LabelReader(lab, img, DEEPGLOBE)


def test_polygon_labels_on_a_rotated_grid_use_the_window_footprint(tmp_path):
    """45° grid: the window's two corners span a box that misses most of the footprint."""
    t = Affine.translation(500000, 5000000) @ Affine.rotation(45) @ Affine.scale(1, -1)
    grid = GeoGrid(64, 64, t, UTM)
    footprint = shapely.Polygon([t @ (0, 0), t @ (64, 0), t @ (64, 64), t @ (0, 64)])
    path = tmp_path / "labels.gpkg"
    gpd.GeoDataFrame({"class_id": [3]}, geometry=[footprint.buffer(0.5)], crs=UTM).to_file(path)
    out = LabelReader(path, grid, DEEPGLOBE).read(Window(0, 0, 64, 64), (64, 64))
    assert (out == 3).sum() == 64 * 64


@pytest.mark.parametrize("dtype, nodata", [("uint16", 65535), ("int16", -1), ("int16", -9999),
                                           ("float32", float("nan")), ("float32", -9999.0)])
def test_label_nodata_outside_the_byte_range_is_unlabelled(tmp_path, dtype, nodata):
    codes = np.array([[0, 1], [4, 0]], dtype)
    codes[1, 1] = nodata
    path = write_raster(tmp_path / "l.tif", codes, nodata=nodata)
    grid = GeoGrid(2, 2, Affine(0.5, 0, 500000, 0, -0.5, 5000000), UTM)
    out = LabelReader(path, grid, DEEPGLOBE).read(Window(-1, 0, 3, 2), (2, 3))  # one column past the edge
    assert out.tolist() == [[255, 0, 1], [255, 4, 255]]
    assert decode_ids(np.array([[np.nan, 2.0]]), DEEPGLOBE, None).tolist() == [[255, 2]]
    with pytest.raises(LabelError, match=r"\[2.5\]"):
        decode_ids(np.array([[2.5, 2.0]]), DEEPGLOBE, None)


def test_label_nodata_equal_to_a_class_code_is_one_warning(tmp_path):
    path = write_raster(tmp_path / "l.tif", np.array([[0, 1], [4, 0]], np.uint8), nodata=0)
    grid = GeoGrid(2, 2, Affine(0.5, 0, 500000, 0, -0.5, 5000000), UTM)
    with pytest.warns(GeoSegWarning, match="declares nodata 0, which is also the code of class 'urban'"):
        reader = LabelReader(path, grid, DEEPGLOBE)
    assert reader.read(Window(0, 0, 2, 2), (2, 2)).tolist() == [[255, 1], [4, 255]]


def test_rgb_labels_past_the_edge_without_a_black_class(tmp_path):
    schema = ClassSchema.from_dict([{"code": 1, "name": "trees", "color": [0, 255, 0]},
                                    {"code": 2, "name": "water", "color": [0, 0, 255]}])
    rgb = np.zeros((3, 4, 4), np.uint8)
    rgb[1, :, :2] = 255
    rgb[2, :, 2:] = 255
    path = write_raster(tmp_path / "mask.tif", rgb)
    grid = GeoGrid(4, 4, Affine(0.5, 0, 500000, 0, -0.5, 5000000), UTM)
    out = LabelReader(path, grid, schema).read(Window(2, 2, 4, 4), (4, 4))
    assert out.tolist() == [[1, 1, 255, 255], [1, 1, 255, 255], [255] * 4, [255] * 4]


def test_polygon_labels_by_class_name_in_any_case(tmp_path):
    """Analysts type class names in a text field; later polygons are drawn over earlier ones."""
    grid = GeoGrid(8, 8, Affine(1, 0, 1000, 0, -1, 2000), UTM)
    gdf = gpd.GeoDataFrame({"landcover": ["Forest", " water", None, "URBAN"]},
                           geometry=[shapely.box(1000, 1992, 1008, 2000), shapely.box(1004, 1992, 1008, 2000),
                                     shapely.box(1000, 1992, 1002, 1994),
                                     shapely.box(1000, 1992, 1002, 1994)],
                           crs=UTM)
    path = tmp_path / "drawn.gpkg"
    gdf.to_file(path)
    out = LabelReader(path, grid, DEEPGLOBE, class_field="landcover").read(Window(0, 0, 8, 8), (8, 8))
    assert (out[:6, :4] == 3).all() and (out[:, 4:] == 4).all() and (out[6:, :2] == 0).all()
    gdf.loc[1, "landcover"] = "lake"
    gdf.to_file(path)
    with pytest.raises(LabelError,
                       match=r"field 'landcover' has class name\(s\) \['lake'\] that are not classes; "
                                         r"the classes are urban, agriculture"):
        LabelReader(path, grid, DEEPGLOBE, class_field="landcover").read(Window(0, 0, 8, 8), (8, 8))
