"""The local folder store on os.path: what it kept from its pathlib days."""

import os
import stat
from pathlib import Path

import pytest

from analemma_sdk.statebag import BlobStore, InvalidKeyError, LocalFolderStore


def test_local_store__root__the_resolved_path(tmp_path):
    store = LocalFolderStore(tmp_path / "a" / ".." / "blobs")
    assert store.root == (tmp_path / "blobs").resolve() and isinstance(store.root, Path)
    assert store.root.is_dir() and isinstance(store, BlobStore)


def test_local_store__list__keys_in_path_order_without_temp_files(tmp_path):
    store = LocalFolderStore(tmp_path)
    for key in ["a-b/c", "a/b", "a.b", "a/c/d", "z", "a/bb", "a/c-d/e", "A"]:
        store.put(key, key.encode())
    (tmp_path / "a" / ".tmp-leftover").write_bytes(b"x")
    expected = sorted(
        (p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()),
        key=lambda key: Path(key).parts,
    )
    expected.remove("a/.tmp-leftover")
    assert list(store.list()) == expected
    assert list(store.list("a/c")) == ["a/c/d", "a/c-d/e"]


def test_local_store__put__owner_only_file_and_no_temp_left(tmp_path):
    store = LocalFolderStore(tmp_path)
    store.put("o/x/p/ab/pack", b"data")
    path = tmp_path / "o/x/p/ab/pack"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_bytes() == b"data"
    assert not [name for name in os.listdir(path.parent) if name.startswith(".tmp-")]


def test_local_store__symlink_out_of_the_root__refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"no")
    store = LocalFolderStore(tmp_path / "store")
    os.symlink(outside, tmp_path / "store" / "link")
    with pytest.raises(InvalidKeyError):
        store.get("link/secret")
    with pytest.raises(InvalidKeyError):
        store.put("link/new", b"x")
    assert not (outside / "new").exists()
