"""Files and folders are written all or nothing, and an existing file is kept unless told."""

import os
import stat

import pytest

from tgic_jax import files


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def half_then_fail(f):
        f.write(b"new, half written")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        files.write_atomic(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_write_atomic_refuses_to_replace_unless_told_and_uses_the_usual_mode(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(FileExistsError, match="--force"):
        files.write_atomic(target, b"new", overwrite=False)
    assert target.read_bytes() == b"old"
    files.write_atomic(target, b"new", overwrite=True)
    assert target.read_bytes() == b"new"
    files.write_atomic(tmp_path / "g.bin", b"x", overwrite=False)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "g.bin").stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin", "g.bin"]


def test_replace_dir_swaps_a_whole_folder_and_leaves_nothing_beside_it(tmp_path):
    old, new = tmp_path / "ckpt", tmp_path / ".ckpt.tmp"
    old.mkdir()
    (old / "a").write_text("old a")
    (old / "b").write_text("old b")
    new.mkdir()
    (new / "a").write_text("new a")
    files.replace_dir(new, old)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    assert sorted(p.name for p in old.iterdir()) == ["a"] and (old / "a").read_text() == "new a"


def test_text_to_an_object_store_url_is_one_upload(tmp_path, monkeypatch):
    written = {}
    monkeypatch.setattr(
        files.epath.Path, "write_text", lambda self, text: written.update({str(self): text})
    )
    files.write_text_atomic("gs://bucket/run/config.json", "{}")
    assert written == {"gs://bucket/run/config.json": "{}"}
    files.write_text_atomic(tmp_path / "config.json", "{}")
    assert (tmp_path / "config.json").read_text() == "{}"
