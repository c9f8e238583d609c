"""Scene records: CSV manifests and DeepGlobe folders."""

import pytest

from geoseg.errors import ConfigError
from geoseg.io.manifest import SceneRecord, read_deepglobe, read_manifest, read_records

from conftest import deepglobe_folder


def test_manifest_paths_are_relative_to_it(tmp_path):
    (tmp_path / "m").mkdir()
    manifest = tmp_path / "m" / "manifest.csv"
    manifest.write_text("image,label,split\na.tif,a_l.tif,train\n b.tif ,,val\n")
    assert read_manifest(manifest) == [SceneRecord(tmp_path / "m" / "a.tif", tmp_path / "m" / "a_l.tif",
                                                   "train"),
                                       SceneRecord(tmp_path / "m" / "b.tif", None, "val")]
    assert read_records(manifest) == read_manifest(manifest)


def test_manifest_errors_name_the_file_and_line(tmp_path):
    with pytest.raises(ConfigError, match="manifest .*nope.csv does not exist"):
        read_manifest(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("image,label\na.tif,b.tif\n")
    with pytest.raises(ConfigError, match="needs a header with columns image, label, split"):
        read_manifest(bad)
    bad.write_text("image,label,split\na.tif,b.tif,train\nc.tif,d.tif,training\n")
    with pytest.raises(ConfigError, match=r"line 3: split must be one of train, val, test, got 'training'"):
        read_manifest(bad)


@pytest.mark.parametrize("metadata", [False, True])
def test_deepglobe_layout_is_read_and_split_by_scene(tmp_path, metadata):
    root = deepglobe_folder(tmp_path / "dg", n=10, metadata=metadata)
    records = read_deepglobe(root, (0.6, 0.2, 0.2), seed=7)
    assert len(records) == 10
    assert all(r.label.name == r.image.name.replace("_sat.jpg", "_mask.png") for r in records)
    assert [r.split for r in records].count("train") == 6 and [r.split for r in records].count("val") == 2
    assert read_deepglobe(root, (0.6, 0.2, 0.2), seed=7) == records       # reproducible
    assert read_deepglobe(root, (0.6, 0.2, 0.2), seed=8) != records       # and seeded
    assert len({r.image for r in records}) == 10                          # each scene in one split


def test_a_folder_without_pairs_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="holds no DeepGlobe pairs"):
        read_records(tmp_path)
