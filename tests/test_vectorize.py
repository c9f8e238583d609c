import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.features import rasterize

from geoseg.errors import OutputError
from geoseg.io.classes import DEEPGLOBE
from geoseg.outputs.polygons import summary_table, write_polygons
from geoseg.outputs.vectorize import Region, iter_regions, merge_edge_regions, vectorize_block

from conftest import UTM, cell_area, write_raster


def iter_polygons(path, block):
    """(polygon in pixel coordinates, class value) of every region of a class raster."""
    return [(r.polygon, r.value) for r in iter_regions(path, block)]


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
    a[0, 23] = a[1, 22] = 0   # urban pixels touching only diagonally
    a[20:24, 22:24] = 255        # nodata corner
    a[7, 16] = a[8, 16] = 0   # one region split by the row edge y=8
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
    # on the ground: 0.25 m² pixels of UTM 33N at its central meridian, where the scale factor is 0.9996
    assert gdf.area_m2.sum() == pytest.approx((a != 255).sum() * 0.25 / 0.9996**2, rel=1e-6)
    back = rasterize(zip(gdf.geometry, gdf.class_id), out_shape=a.shape, transform=t, fill=255, dtype="uint8")
    assert (back == a).all()
    info = pyogrio.read_info(out, layer="landcover")
    assert info["geometry_type"] == "Polygon"
    import sqlite3
    con = sqlite3.connect(out)
    row = con.execute("SELECT f_table_name, f_geometry_column, useAsDefault, styleQML FROM "
                      "layer_styles").fetchone()
    con.close()
    assert row[:3] == ("landcover", "geom", 1) and 'type="categorizedSymbol"' in row[3]


def _scene_classes(tmp_path, crs=UTM, transform=None):
    a = _straddling_raster()
    t = transform or Affine(0.5, 0, 500000, 0, -0.5, 5000000)
    return write_raster(tmp_path / "c.tif", a, t, crs=crs, nodata=255), a, t


@pytest.mark.parametrize("suffix", [".geojson", ".shp", ".fgb", ".parquet", ".gpkg"])
def test_formats_from_extension(tmp_path, suffix):
    src, a, t = _scene_classes(tmp_path)
    out = tmp_path / f"lc{suffix}"
    res = write_polygons(src, out, DEEPGLOBE, block=8)
    gdf = gpd.read_parquet(out) if suffix == ".parquet" else gpd.read_file(out)
    assert len(gdf) == res.polygons
    if suffix == ".geojson":  # RFC 7946: WGS 84 longitude/latitude, layer named after the file
        assert gdf.crs == "EPSG:4326" and pyogrio.read_info(out)["layer_name"] == "lc"
        gdf = gdf.to_crs(UTM)
    assert gdf.crs == UTM
    perimeter = "perim_m" if suffix == ".shp" else "perimeter_m"  # dBase: 10 characters at most
    assert {"class_id", "class_name", "area_m2", perimeter} <= set(gdf.columns)
    assert (out.with_suffix(".qml").exists()) == (suffix != ".gpkg")
    back = rasterize(zip(gdf.geometry, gdf.class_id), out_shape=a.shape, transform=t, fill=255, dtype="uint8")
    assert (back == a).all()


def test_summary_counts_pixels_exactly(tmp_path):
    src, a, _ = _scene_classes(tmp_path)
    res = write_polygons(src, tmp_path / "lc.gpkg", DEEPGLOBE)
    by_name = {r["class_name"]: r for r in res.summary}
    for c in DEEPGLOBE.classes:
        assert by_name[c.name]["pixels"] == int((a == c.code).sum())
        assert by_name[c.name]["area_m2"] == pytest.approx((a == c.code).sum() * 0.25 / 0.9996**2, rel=1e-6)
    assert sum(r["share"] for r in res.summary) == pytest.approx(1.0)
    csv_text = (tmp_path / "lc_summary.csv").read_text()
    assert csv_text.startswith("class_id,class_name,pixels,area_m2,share")


def test_perimeter_and_confidence_mean(tmp_path):
    a = np.array([[1, 1, 2], [1, 1, 2], [2, 2, 2]], np.uint8)
    t = Affine(2, 0, 0, 0, -2, 6)
    src = write_raster(tmp_path / "c.tif", a, t, crs=None, nodata=255)  # no CRS: planar, in grid units
    conf = write_raster(tmp_path / "conf.tif", np.array([[90, 80, 50], [70, 60, 50], [40, 40, 40]], np.uint8),
                        t, crs=None)
    res = write_polygons(src, tmp_path / "lc.fgb", DEEPGLOBE, confidence=conf, block=2)
    gdf = gpd.read_file(tmp_path / "lc.fgb").sort_values("class_id")
    assert gdf.area_m2.tolist() == [16.0, 20.0]
    assert gdf.perimeter_m.tolist() == [16.0, 24.0]
    assert gdf.confidence_mean.tolist() == pytest.approx([75.0, 44.0])
    assert res.polygons == 2
    table = summary_table(res.summary, ground=False)  # no CRS: the printed table does not claim m²
    assert "area (units²)" in table and "m²" not in table.splitlines()[0]
    assert table.splitlines()[-1] == "(no CRS: areas are in the raster's own units, not square metres)"
    assert "area (m²)" in summary_table(res.summary).splitlines()[0]


@pytest.mark.parametrize("crs,transform,lonlat", [
    ("EPSG:4326", Affine(0.001, 0, 10.0, 0, -0.001, 70.01), (10.0, 70.0, 10.01, 70.01)),  # 38 × 111 m pixels
    ("EPSG:3857", None, (20.0, 70.0, 20.01, 70.005)),  # Web Mercator at 70°N
])
def test_areas_and_summary_are_geodesic_in_any_crs(tmp_path, crs, transform, lonlat):
    """The summary's area (and each polygon's) is the closed-form ellipsoidal area of the lon/lat cell."""
    import pyproj

    if transform is None:
        x0, y0 = pyproj.Transformer.from_crs(4326, 3857, always_xy=True).transform(*lonlat[:2])
        x1, y1 = pyproj.Transformer.from_crs(4326, 3857, always_xy=True).transform(*lonlat[2:])
        transform = Affine((x1 - x0) / 10, 0, x0, 0, -(y1 - y0) / 10, y1)
    src = write_raster(tmp_path / "geo.tif", np.ones((10, 10), np.uint8), transform, crs=crs, nodata=255)
    res = write_polygons(src, tmp_path / "lc.gpkg", DEEPGLOBE)
    gdf = gpd.read_file(tmp_path / "lc.gpkg", layer="landcover")
    assert gdf.area_m2.iloc[0] == pytest.approx(cell_area(*lonlat), rel=1e-6)
    assert res.summary[1]["area_m2"] == pytest.approx(cell_area(*lonlat), rel=1e-6)


def test_simplify_keeps_a_clean_coverage(tmp_path):
    from geoseg.data.synth import make_landscape, render
    _, cls, _ = render(make_landscape(160, 160, 5), (0, 160), (0, 160))
    t = Affine(0.5, 0, 500000, 0, -0.5, 5000000)
    src = write_raster(tmp_path / "c.tif", cls, t, nodata=255)
    plain = gpd.read_file(tmp_path / "p.gpkg", layer="landcover") if write_polygons(
        src, tmp_path / "p.gpkg", DEEPGLOBE) else None
    write_polygons(src, tmp_path / "s.gpkg", DEEPGLOBE, simplify=2.0)
    simple = gpd.read_file(tmp_path / "s.gpkg", layer="landcover")
    assert simple.geometry.is_valid.all()
    assert shapely.coverage_is_valid(simple.geometry.to_numpy())  # no overlaps, edges still shared
    assert shapely.get_num_coordinates(simple.geometry.to_numpy()).sum() < \
        shapely.get_num_coordinates(plain.geometry.to_numpy()).sum()
    # no gaps opened between neighbours: the union has no more holes than before
    def holes(g):
        return sum(shapely.get_num_interior_rings(p) for p in shapely.get_parts(shapely.union_all(g)))

    assert holes(simple.geometry.to_numpy()) == holes(plain.geometry.to_numpy())


def test_dissolve_gives_one_multipolygon_per_class(tmp_path):
    src, a, _ = _scene_classes(tmp_path)
    write_polygons(src, tmp_path / "d.gpkg", DEEPGLOBE, dissolve=True)
    gdf = gpd.read_file(tmp_path / "d.gpkg", layer="landcover")
    present = sorted(int(v) for v in np.unique(a) if v != 255)
    assert sorted(gdf.class_id) == present
    assert (gdf.geometry.geom_type == "MultiPolygon").all() and gdf.geometry.is_valid.all()
    for _, row in gdf.iterrows():
        assert row.area_m2 == pytest.approx((a == row.class_id).sum() * 0.25 / 0.9996**2, rel=1e-6)


def test_sieve_removes_small_regions_and_keeps_nodata(tmp_path):
    from geoseg.outputs.sieve import sieve_raster
    src, a, t = _scene_classes(tmp_path)
    out = tmp_path / "sieved.tif"
    sieve_raster(src, out, min_pixels=4, block=8)
    with rasterio.open(out) as ds:
        s = ds.read(1)
    assert ((s == 255) == (a == 255)).all()
    regions = list(iter_polygons(out, 1000))
    assert min(p.area for p, _ in regions) >= 4
    whole = tmp_path / "whole.tif"
    sieve_raster(src, whole, min_pixels=4, block=1000)
    assert (rasterio.open(whole).read(1) == s).all()  # the same whatever the block size


def test_geojson_is_rfc7946_and_layers_are_named_after_the_file(tmp_path):
    """A custom UTM WKT (no EPSG code) once came back as WGS 84 with UTM coordinates."""
    from pyproj import CRS as ProjCRS
    custom = ProjCRS.from_proj4("+proj=utm +zone=33 +ellps=WGS84 +towgs84=0,0,0 +units=m +no_defs").to_wkt()
    assert ProjCRS.from_wkt(custom).to_epsg() is None
    src, a, t = _scene_classes(tmp_path, crs=rasterio.crs.CRS.from_wkt(custom))
    write_polygons(src, tmp_path / "lc.geojson", DEEPGLOBE)
    gdf = gpd.read_file(tmp_path / "lc.geojson")
    assert gdf.crs == "EPSG:4326" and pyogrio.read_info(tmp_path / "lc.geojson")["layer_name"] == "lc"
    lon, lat = gdf.total_bounds[:2]
    assert 14.9 < lon < 15.1 and 45 < lat < 45.2  # 500 km E, 5000 km N in UTM 33N
    back = gdf.to_crs(custom)
    assert (rasterize(zip(back.geometry, back.class_id), out_shape=a.shape, transform=t, fill=255,
                      dtype="uint8") == a).all()
    write_polygons(src, tmp_path / "lc.fgb", DEEPGLOBE)
    assert pyogrio.read_info(tmp_path / "lc.fgb")["layer_name"] == "lc"


def test_geojson_without_a_crs_is_refused(tmp_path):
    src, _, _ = _scene_classes(tmp_path, crs=None)
    with pytest.raises(OutputError, match="has no CRS to reproject from; write .gpkg or .fgb instead"):
        write_polygons(src, tmp_path / "lc.geojson", DEEPGLOBE)


@pytest.mark.parametrize("suffix", [".shp", ".gpkg", ".fgb"])  # GeoJSON has no layer geometry type
def test_an_empty_layer_is_still_a_polygon_layer(tmp_path, suffix):
    src = write_raster(tmp_path / "empty.tif", np.full((8, 8), 255, np.uint8), nodata=255)
    assert write_polygons(src, tmp_path / f"lc{suffix}", DEEPGLOBE).polygons == 0
    layer = "landcover" if suffix == ".gpkg" else None
    assert pyogrio.read_info(tmp_path / f"lc{suffix}", layer=layer)["geometry_type"] == "Polygon"
