"""pyaudit._core.make_placeholders and remove_tree: the mirror of a remote listing, a tree of
sparse files of the listed sizes, made and removed natively with the GIL released. Every
name a listing can give either becomes exactly root/name at its size or an error for that
name; nothing is made (or removed) outside the root, and nothing raises."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pyaudit._core import make_directories, make_placeholders, remove_tree


def _tree(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_size
            for p in root.rglob("*") if p.is_file()}


def test_files_of_the_listed_sizes_and_no_data(tmp_path: Path) -> None:
    files = [("config.json", 812), ("ckpt/a/model.safetensors", 16 << 30), ("ckpt/a/empty", 0),
             ("ckpt/b/x.json", 3)]
    assert make_placeholders(str(tmp_path), files) == []
    assert _tree(tmp_path) == dict(files)
    big = tmp_path / "ckpt/a/model.safetensors"
    assert big.stat().st_blocks == 0  # a hole: no byte written
    assert (big.stat().st_mode & 0o777) == 0o600
    # made again (a file already there is emptied and sized anew)
    assert make_placeholders(str(tmp_path), [("ckpt/b/x.json", 9)]) == []
    assert (tmp_path / "ckpt/b/x.json").stat().st_size == 9


def test_what_cannot_be_made_is_an_error_for_that_name(tmp_path: Path) -> None:
    files = [("../out", 1), ("/abs", 1), ("a//b", 1), ("a/./b", 1), ("", 1), ("a/", 1),
             ("f", 1), ("f/g", 1), ("huge", 1 << 63), ("ok", 2)]
    errors = dict(make_placeholders(str(tmp_path), files))
    assert errors == {0: errno.EINVAL, 1: errno.EINVAL, 2: errno.EINVAL, 3: errno.EINVAL,
                      4: errno.EINVAL, 5: errno.EINVAL, 7: errno.ENOTDIR, 8: errno.EFBIG}
    assert _tree(tmp_path) == {"f": 1, "ok": 2}
    assert not (tmp_path.parent / "out").exists()
    missing = tmp_path / "gone"
    assert make_placeholders(str(missing), [("a", 1)]) == [(0, errno.ENOENT)]


_PART = st.sampled_from(["a", "b", ".", "..", "", "c.json", "ü", "x y", "\\", ".hidden"])
_NAME = st.lists(_PART, min_size=1, max_size=4).map("/".join) | st.text(max_size=12)
# A listing: (name, size) pairs (no NUL in a name: no listing can give one)
_LISTING = st.lists(st.tuples(_NAME.filter(lambda n: "\0" not in n), st.integers(0, 1 << 40)),
                    max_size=12)


@settings(max_examples=200, deadline=None)
@given(files=_LISTING)
def test_any_listing_is_made_or_refused_name_by_name(files: list[tuple[str, int]]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as outer:
        root = Path(outer) / "root"
        root.mkdir()
        failed = dict(make_placeholders(str(root), files))
        made = _tree(root)
        assert os.listdir(outer) == ["root"]  # nothing outside the root
    sizes: dict[str, int] = {}  # each name made: the size of its last entry made
    for i, (name, size) in enumerate(files):
        parts = name.split("/")
        unsafe = name == "" or name.startswith("/") or any(p in ("", ".", "..") for p in parts)
        assert (failed.get(i) == errno.EINVAL) == unsafe, (name, failed.get(i))
        if i not in failed:
            sizes[name] = size
    assert made == sizes


def test_directories_are_made_or_an_error_for_that_name(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    names = ["a/b", "a", "f/g", "f", "a/b/c", "../x", "a//b", "", "/abs", "a/b"]
    errors = dict(make_directories(str(tmp_path), names))
    # a file where a directory is asked for, or above one: ENOTDIR, whatever the order
    assert errors == {2: errno.ENOTDIR, 3: errno.ENOTDIR, 5: errno.EINVAL, 6: errno.EINVAL,
                      7: errno.EINVAL, 8: errno.EINVAL}
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
                  if p.is_dir()) == ["a", "a/b", "a/b/c"]
    assert (tmp_path / "f").read_text() == "x"  # (a file in the way is left as it was)
    assert make_directories(str(tmp_path / "gone"), ["a"]) == [(0, errno.ENOENT)]


@settings(max_examples=200, deadline=None)
@given(files=_LISTING, dirs=st.lists(_NAME.filter(lambda n: "\0" not in n), max_size=8))
def test_any_directories_beside_any_files_are_made_or_refused(
    files: list[tuple[str, int]], dirs: list[str]
) -> None:
    """Asked after a listing's placeholders (as a remote scan's mirror asks for the
    directories of the names it keeps without a file): each name is a directory below the
    root afterwards, or an error says why not, and nothing is made outside the root."""
    import tempfile

    with tempfile.TemporaryDirectory() as outer:
        root = Path(outer) / "root"
        root.mkdir()
        make_placeholders(str(root), files)
        failed = dict(make_directories(str(root), dirs))
        assert os.listdir(outer) == ["root"]
        for i, name in enumerate(dirs):
            parts = name.split("/")
            unsafe = name == "" or name.startswith("/") or any(p in ("", ".", "..") for p in parts)
            assert (failed.get(i) == errno.EINVAL) == unsafe, (name, failed.get(i))
            if i not in failed:
                assert (root / name).is_dir() and not (root / name).is_symlink()
            elif not unsafe:  # in the way: a file made for the listing, at or above it
                assert failed[i] == errno.ENOTDIR, (name, failed[i])
                assert any((root / "/".join(parts[:k])).is_file()
                           for k in range(1, len(parts) + 1))


def test_a_tree_is_removed_and_nothing_a_link_names(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "kept").mkdir(parents=True)
    (outside / "kept" / "f").write_text("x")
    root = tmp_path / "root"
    names = [("a/b/c/model.safetensors", 1 << 40), ("a/config.json", 3), ("top", 0)]
    # Deeper than the directories the walk keeps open (64) and nftw's (32): the rest is
    # removed by path, and a link down there is not followed either.
    deep = "/".join(["d"] * 100)
    names += [(f"{deep}/deep", 1)]
    root.mkdir()
    assert make_placeholders(str(root), names) == []
    (root / deep / "to-dir").symlink_to(outside / "kept", target_is_directory=True)
    (root / "a" / "to-dir").symlink_to(outside / "kept", target_is_directory=True)
    (root / "a" / "b" / "to-file").symlink_to(outside / "kept" / "f")
    (root / "dangling").symlink_to(tmp_path / "nowhere")
    assert remove_tree(str(root)) == 0
    assert not root.exists() and not root.is_symlink()
    assert (outside / "kept" / "f").read_text() == "x"  # the links went, not what they named
    assert remove_tree(str(root)) == errno.ENOENT
    link = tmp_path / "link-root"
    link.symlink_to(outside, target_is_directory=True)
    assert remove_tree(str(link)) == 0  # a root that is a link: the link, not the tree
    assert not link.is_symlink() and (outside / "kept" / "f").exists()
    single = tmp_path / "single"
    single.write_text("y")
    assert remove_tree(str(single)) == 0 and not single.exists()


@settings(max_examples=50, deadline=None)
@given(files=_LISTING)
def test_whatever_was_made_is_removed_and_only_it(files: list[tuple[str, int]]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as outer:
        beside = Path(outer) / "beside"
        beside.write_text("kept")
        root = Path(outer) / "root"
        root.mkdir()
        make_placeholders(str(root), files)
        assert remove_tree(str(root)) == 0
        assert sorted(os.listdir(outer)) == ["beside"]
        assert beside.read_text() == "kept"


_LONG = st.sampled_from(["a" * 255, "a" * 256, "é" * 127, "é" * 128, "😀" * 63, "😀" * 64])
_KEY = st.lists(_PART | _LONG, min_size=1, max_size=4).map("/".join) | _NAME


@settings(max_examples=300, deadline=None)
@given(name=_KEY)
def test_a_key_is_safe_exactly_where_the_mirror_can_make_it(name: str) -> None:
    """A remote scan places a listed key below its mirror only where ``_safe_rel`` says it
    can: exactly where making it as a placeholder in an empty mirror succeeds (no empty,
    '.' or '..' part, no NUL, no part longer than a file name's 255 bytes); and a key is
    hidden exactly where one of its directories is."""
    import tempfile

    from pyaudit.remote import _hidden, _safe_rel

    with tempfile.TemporaryDirectory() as root:
        made = make_placeholders(root, [(name, 0)]) == []
    assert _safe_rel(name) == made, name
    assert _hidden(name) == any(p.startswith(".") for p in name.split("/")[:-1]), name
