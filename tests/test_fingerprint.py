"""File identity for caches and --resume: the same key means the same file, also where path, size and
modification time agree (``cp -p`` of another scene)."""

import hashlib
import os

from geoseg.io.fingerprint import cache_key, content_sample, file_identity


def test_other_content_with_the_same_path_size_and_time_is_another_file(tmp_path):
    a = tmp_path / "a.tif"
    a.write_bytes(bytes(range(256)) * 4096)  # 1 MiB: sampled, not read whole
    first = file_identity(a)
    a.write_bytes(bytes(reversed(range(256))) * 4096)  # what `cp -p other.tif a.tif` leaves
    os.utime(a, ns=(first["mtime_ns"], first["mtime_ns"]))
    second = file_identity(a)
    assert (first["path"], first["size"], first["mtime_ns"]) == (second["path"], second["size"],
                                                                 second["mtime_ns"])
    assert first["sample"] != second["sample"] and cache_key(first) != cache_key(second)


def test_the_sample_reads_a_small_file_whole_and_a_large_one_in_pieces(tmp_path):
    small = tmp_path / "s"
    small.write_bytes(b"x" * 1000)
    assert content_sample(small, 1000) == hashlib.sha1(b"x" * 1000).hexdigest()
    large = tmp_path / "l"
    data = bytearray(8 << 20)
    large.write_bytes(bytes(data))
    before = content_sample(large, len(data))
    data[4 << 20] = 1  # a byte no piece reads: the sample is a sample
    data[-1] = 1       # the end is always read
    large.write_bytes(bytes(data))
    assert content_sample(large, len(data)) != before


def test_remote_and_missing_files_are_their_paths(tmp_path):
    assert file_identity("/vsicurl/https://example.org/a.tif") == {"path": "/vsicurl/https://example.org/a.tif"}
    assert file_identity(tmp_path / "none.tif") == {"path": str(tmp_path / "none.tif")}
