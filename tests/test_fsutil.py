"""Tests for ocitool.fsutil.remove_tree: it removes what a container wrote, and nothing outside it."""

from __future__ import annotations

import os
from pathlib import Path

from ocitool.fsutil import remove_tree


def _outside(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "file").write_text("keep")
    return outside


def test_removes_a_tree_of_every_kind_of_entry_without_following_symlinks(tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    tree = tmp_path / "tree"
    (tree / "a" / "b" / "c").mkdir(parents=True)
    (tree / "a" / "b" / "c" / "file").write_text("x")
    (tree / "a" / "to-dir").symlink_to(outside)              # a symlink to a directory
    (tree / "a" / "to-file").symlink_to(outside / "file")
    (tree / "a" / "dangling").symlink_to(tmp_path / "missing")
    os.mkfifo(tree / "a" / "fifo")
    os.mknod(tree / "a" / "whiteout", 0o600 | 0o020000, 0)  # a 0/0 character device, as overlayfs writes
    (tree / "a" / "b").chmod(0o500)
    remove_tree(tree)
    assert not tree.exists()
    assert sorted(p.name for p in outside.iterdir()) == ["dir", "file"] and (outside / "file").read_text() == "keep"


def test_a_symlink_or_a_missing_path_is_left_alone(tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(outside)
    remove_tree(link)
    assert link.is_symlink() and sorted(p.name for p in outside.iterdir()) == ["dir", "file"]
    remove_tree(tmp_path / "missing")                        # no error
