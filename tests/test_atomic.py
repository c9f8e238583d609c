"""Atomic outputs: nothing under the final name until complete; an existing output untouched until then."""

import os

import pytest

from geoseg.errors import OutputError
from geoseg.io.atomic import atomic_output, atomic_write_text, check_output_path, temporary_path


def test_success_renames_the_file_and_its_sidecars(tmp_path):
    final = tmp_path / "out.tif"
    final.write_text("old")
    (tmp_path / "out.tif.aux.xml").write_text("old names")
    with atomic_output(final) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.geoseg-tmp-") and tmp.suffix == ".tif"
        tmp.write_text("new")
        assert final.read_text() == "old"  # untouched until the new one is complete
    assert final.read_text() == "new"
    assert not (tmp_path / "out.tif.aux.xml").exists()  # the old output's sidecar does not outlive it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif"]


def test_failure_leaves_nothing_and_keeps_the_old_output(tmp_path):
    final = tmp_path / "out.gpkg"
    final.write_text("precious")
    with pytest.raises(RuntimeError):
        with atomic_output(final) as tmp:
            tmp.write_text("half")
            (tmp_path / (tmp.name + "-journal")).write_text("j")
            raise RuntimeError("disk full")
    assert final.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.gpkg"]


def test_a_shapefile_moves_with_its_parts(tmp_path):
    final = tmp_path / "poly.shp"
    with atomic_output(final) as tmp:
        for ext in (".shp", ".shx", ".dbf", ".prj", ".cpg"):
            tmp.with_suffix(ext).write_text(ext)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["poly.cpg", "poly.dbf", "poly.prj", "poly.shp",
                                                         "poly.shx"]


def test_output_path_checks_name_the_problem(tmp_path):
    with pytest.raises(OutputError, match="folder .*missing does not exist"):
        check_output_path(tmp_path / "missing" / "x.tif")
    (tmp_path / "d.tif").mkdir()
    with pytest.raises(OutputError, match="d.tif: it is a directory"):
        check_output_path(tmp_path / "d.tif")
    (tmp_path / "x.tif").write_text("x")
    with pytest.raises(OutputError, match="x.tif already exists; pass --overwrite to replace it"):
        check_output_path(tmp_path / "x.tif", overwrite=False)
    assert check_output_path(tmp_path / "x.tif", overwrite=True) == tmp_path / "x.tif"


def test_a_checked_path_is_not_checked_again(tmp_path):
    final = tmp_path / "x.txt"
    final.write_text("old")
    with pytest.raises(OutputError):
        with atomic_output(final, overwrite=False):
            pass
    with atomic_output(final, overwrite=False, checked=True) as tmp:  # the caller checked it (e.g. in place)
        tmp.write_text("new")
    assert final.read_text() == "new"


def test_atomic_write_text(tmp_path):
    atomic_write_text(tmp_path / "a.json", "{}")
    assert (tmp_path / "a.json").read_text() == "{}"
    assert temporary_path(tmp_path / "a.json").name == f".a.geoseg-tmp-{os.getpid()}.json"
