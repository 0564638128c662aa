"""ddss_jax.util.files: atomic writes leave the old file or the new one, and no temporary file."""

import json
import os

import numpy as np
import pytest

from ddss_jax.util import files


def test_writes_replace_the_file_and_leave_nothing_else(tmp_path):
  path = str(tmp_path / "a.json")
  files.write_json(path, {"b": [1, 2]})
  with open(path, encoding="utf-8") as f:
    assert f.read() == json.dumps({"b": [1, 2]}, indent=2)
  files.write_text(path, "new\n")
  with open(path, encoding="utf-8") as f:
    assert f.read() == "new\n"
  files.write_bytes(str(tmp_path / "b.bin"), b"\x00\xff")
  assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"
  files.save_npz(str(tmp_path / "c.stats"), x=np.arange(3), s=np.str_("meta"))
  with np.load(str(tmp_path / "c.stats"), allow_pickle=False) as data:  # the name as given
    np.testing.assert_array_equal(data["x"], np.arange(3))
    assert str(data["s"]) == "meta"
  with files.atomic_write(str(tmp_path / "d.txt"), fsync=True) as f:
    f.write("synced")
  assert (tmp_path / "d.txt").read_text() == "synced"
  assert sorted(os.listdir(tmp_path)) == ["a.json", "b.bin", "c.stats", "d.txt"]


def test_write_json_is_the_same_bytes_as_json_dump_indent_2(tmp_path):
  obj = {"rows": [{"fid": 1.25, "name": "ddim"}], "k": 5, "none": None, "text": "é"}
  files.write_json(str(tmp_path / "r.json"), obj)
  assert (tmp_path / "r.json").read_bytes() == json.dumps(obj, indent=2).encode("utf-8")


@pytest.mark.parametrize("mode", ["w", "wb"])
def test_a_failure_in_the_block_keeps_the_old_file_and_removes_the_temporary(tmp_path, mode):
  path = tmp_path / "results.json"
  path.write_text("old")
  with pytest.raises(RuntimeError, match="killed"):
    with files.atomic_write(str(path), mode) as f:
      f.write("half" if mode == "w" else b"half")
      f.flush()
      assert os.path.exists(f.name) and os.path.dirname(f.name) == str(tmp_path)
      assert path.read_text() == "old"  # nothing replaced before the block ends
      raise RuntimeError("killed")
  assert path.read_text() == "old"
  assert os.listdir(tmp_path) == ["results.json"]


def test_a_failure_writing_a_new_file_leaves_no_file(tmp_path):
  with pytest.raises(TypeError):
    files.write_json(str(tmp_path / "new.json"), {"not json": object()})
  assert not os.listdir(tmp_path)


def test_the_temporary_name_carries_the_process(tmp_path):
  tmp = files.temporary_path(str(tmp_path / "x.json"))
  assert os.path.dirname(tmp) == str(tmp_path)  # same folder: the rename is atomic
  assert tmp.endswith(f"-{os.getpid()}.tmp") and tmp != str(tmp_path / "x.json")
  with pytest.raises(ValueError, match="mode"):
    with files.atomic_write(str(tmp_path / "x.json"), "a"):
      pass


def test_atomic_folder_replaces_the_folder_or_keeps_the_old_one(tmp_path):
  path = tmp_path / "checkpoint"
  path.mkdir()
  (path / "old.txt").write_text("old")
  with pytest.raises(RuntimeError):
    with files.atomic_folder(str(path)) as tmp:
      files.write_text(os.path.join(tmp, "new.txt"), "new")
      raise RuntimeError("killed")
  assert os.listdir(tmp_path) == ["checkpoint"] and os.listdir(path) == ["old.txt"]
  with files.atomic_folder(str(path)) as tmp:
    files.write_text(os.path.join(tmp, "new.txt"), "new")
  assert os.listdir(tmp_path) == ["checkpoint"] and os.listdir(path) == ["new.txt"]
