import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.features import rasterize

from geoseg.classes import DEEPGLOBE
from geoseg.vector_output import write_polygons
from geoseg.vectorize import Region, iter_polygons, merge_edge_regions, vectorize_block

from conftest import UTM, write_raster


def _polys(path, block):
    return sorted(((p.normalize().wkt, v) for p, v in iter_polygons(path, block)))


def test_three_by_three_exact_polygons():
    a = np.array([[1, 1, 2], [1, 2, 2], [3, 3, 3]], np.uint8)
    res = vectorize_block(a, 0, 0, 3, 3)
    assert res.edge == []
    got = sorted((r.polygon.normalize().wkt, r.value) for r in res.interior)
    expected = sorted([
        (shapely.Polygon([(0, 0), (2, 0), (2, 1), (1, 1), (1, 2), (0, 2)]).normalize().wkt, 1),
        (shapely.Polygon([(2, 0), (3, 0), (3, 2), (1, 2), (1, 1), (2, 1)]).normalize().wkt, 2),
        (shapely.box(0, 2, 3, 3).normalize().wkt, 3),
    ])
    assert got == expected


def _straddling_raster():
    """Shapes built to straddle block edges at 8 px blocks: a ring round a block corner,
    a class touching four blocks, a hole crossing an edge, diagonal-only contacts."""
    a = np.full((24, 24), 1, np.uint8)
    a[4:12, 4:12] = 3            # ring of forest around the corner (8, 8)...
    a[6:10, 6:10] = 4            # ...holding water across all four blocks
    a[14:22, 2:20] = 2           # rangeland across two blocks with a hole crossing the edge at x=16
    a[16:19, 14:18] = 5
    a[0, 23] = 0; a[1, 22] = 0   # urban pixels touching only diagonally
    a[20:24, 22:24] = 255        # nodata corner
    a[7, 16] = 0; a[8, 16] = 0   # one region split by the row edge y=8
    return a


@pytest.mark.parametrize("block", [5, 8, 11, 16])
def test_blockwise_equals_whole_raster(tmp_path, block):
    path = write_raster(tmp_path / "c.tif", _straddling_raster(), nodata=255)
    assert _polys(path, block) == _polys(path, 1000)


def test_diagonal_contacts_stay_separate(tmp_path):
    path = write_raster(tmp_path / "c.tif", _straddling_raster(), nodata=255)
    urban = [p for p, v in iter_polygons(path, 8) if v == 0]
    assert len(urban) == 3  # two diagonal single pixels + the split 2-pixel region merged
    assert sorted(p.area for p in urban) == [1, 1, 2]


def test_merge_ignores_point_contacts():
    a, b = shapely.box(0, 0, 1, 1), shapely.box(1, 1, 2, 2)
    assert len(merge_edge_regions([Region(a, 1, 1), Region(b, 1, 1)])) == 2
    merged = merge_edge_regions([Region(a, 1, 1, 10.0), Region(shapely.box(1, 0, 2, 1), 1, 1, 20.0)])
    assert len(merged) == 1 and merged[0].pixels == 2 and merged[0].confidence_sum == 30.0
    assert merged[0].polygon.normalize().equals_exact(shapely.box(0, 0, 2, 1).normalize(), 0)


def test_gpkg_roundtrip_reproduces_raster(tmp_path):
    a = _straddling_raster()
    a[a == 255] = 255
    t = Affine(0.5, 0, 500000, 0, -0.5, 5000000)
    src = write_raster(tmp_path / "c.tif", a, t, nodata=255)
    out = tmp_path / "out.gpkg"
    n = write_polygons(src, out, DEEPGLOBE, block=7).polygons
    gdf = gpd.read_file(out, layer="landcover")
    assert len(gdf) == n and gdf.crs == UTM
    assert gdf.geometry.is_valid.all()
    assert set(gdf.columns) >= {"class_id", "class_name", "area_m2"}
    assert gdf.area_m2.sum() == pytest.approx((a != 255).sum() * 0.25)
    back = rasterize(zip(gdf.geometry, gdf.class_id), out_shape=a.shape, transform=t, fill=255, dtype="uint8")
    assert (back == a).all()
    info = pyogrio.read_info(out, layer="landcover")
    assert info["geometry_type"] == "Polygon"
    import sqlite3
    con = sqlite3.connect(out)
    row = con.execute("SELECT f_table_name, f_geometry_column, useAsDefault, styleQML FROM layer_styles").fetchone()
    con.close()
    assert row[:3] == ("landcover", "geom", 1) and 'type="categorizedSymbol"' in row[3]
