import geopandas as gpd
import numpy as np
import rasterio
from rasterio.features import rasterize

from geoseg.data.synth import make_landscape, render
from geoseg.io.classes import DEEPGLOBE, IGNORE_INDEX
from geoseg.io.labels import decode_rgb


def test_render_is_the_same_whole_or_in_blocks():
    land = make_landscape(200, 200, 3)
    rgb, cls, valid = render(land, (0, 200), (0, 200))
    rgb_b, cls_b, valid_b = render(land, (57, 130), (101, 200))
    assert (rgb[:, 57:130, 101:200] == rgb_b).all() and (cls[57:130, 101:200] == cls_b).all()
    assert (valid[57:130, 101:200] == valid_b).all()


def test_generator_is_deterministic():
    a = render(make_landscape(96, 96, 11), (0, 96), (0, 96))
    b = render(make_landscape(96, 96, 11), (0, 96), (0, 96))
    c = render(make_landscape(96, 96, 12), (0, 96), (0, 96))
    assert all((x == y).all() for x, y in zip(a, b))
    assert not (a[0] == c[0]).all()


def test_sample_scene_is_georeferenced_and_labels_agree(sample_dir):
    with rasterio.open(sample_dir / "train_1.tif") as img:
        assert img.crs.to_epsg() == 32633 and img.res == (0.5, 0.5)
        assert img.count == 3 and img.dtypes[0] == "uint8" and img.profile["tiled"]
        assert img.compression is not None
        valid = img.dataset_mask() > 0
        assert 0.02 < (~valid).mean() < 0.4  # a nodata border outside the slanted footprint
    with rasterio.open(sample_dir / "train_1_classes.tif") as c:
        classes = c.read(1)
        assert c.nodata == 255 and c.colormap(1)[4][:3] == (0, 0, 255)
        transform = c.transform
    assert ((classes == 255) == ~valid).all()
    with rasterio.open(sample_dir / "train_1_mask.tif") as m:
        decoded = decode_rgb(m.read(), DEEPGLOBE)
    assert (decoded[valid] == classes[valid]).all() and (decoded[~valid] == IGNORE_INDEX).all()
    gdf = gpd.read_file(sample_dir / "train_1_labels.gpkg", layer="labels")
    back = rasterize(zip(gdf.geometry, gdf.class_id), out_shape=classes.shape, transform=transform, fill=255,
                     dtype="uint8")
    assert (back == classes).all()


def test_class_frequencies_look_like_deepglobe():
    """Over many landscapes agriculture is the largest class and water the rarest of the six."""
    from scipy.spatial import cKDTree

    from geoseg.data.synth import labels
    total = np.zeros(7)
    y, x = np.mgrid[0:1024:16, 0:1024:16].astype(float) + 0.5
    for seed in range(12):
        land = make_landscape(1024, 1024, 43000 + seed)
        cls, _, _ = labels(land, x, y, cKDTree(land.seeds_xy))
        total += np.bincount(cls.ravel(), minlength=7)[:7]
    share = total[:6] / total[:6].sum()
    assert share.argmax() == 1 and share.argmin() == 4
    assert (share > 0.02).all()
