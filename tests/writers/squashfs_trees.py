"""Trees shared by the squashfs writer and reader tests."""

from __future__ import annotations

from composer.tree import Entry, EntryType, FileTree
from tests.writers.oci_trees import small_tree


def full_tree() -> FileTree:
    """Every entry type, every mode bit that matters, owners beyond 16 bits, a UTF-8 name,
    devices with large numbers, a two-link file, an empty file and a multi-block file."""
    tree = small_tree()
    tree.add_dir("srv", mode=0o2775, gid=50)
    tree.add_file("srv/gid", b"setgid file\n", mode=0o2711, uid=70000, gid=4_000_000_000)
    tree.add_file("srv/caf\u00e9 \u2603", b"utf-8 name\n")
    tree.add_file("srv/big", bytes(range(256)) * 2000 + b"tail", mode=0o640)
    tree.put(Entry(path="dev/null", type=EntryType.CHAR, mode=0o666, devmajor=1, devminor=3))
    tree.put(Entry(path="dev/sda1", type=EntryType.BLOCK, mode=0o660, gid=6, devmajor=8,
                   devminor=1))
    tree.put(Entry(path="dev/big", type=EntryType.BLOCK, mode=0o600, devmajor=259,
                   devminor=0x12345))
    tree.put(Entry(path="run/initctl", type=EntryType.FIFO, mode=0o600))
    tree.add_symlink("srv/long", "x/" * 1000 + "end")
    return tree


def with_xattrs(tree: FileTree) -> FileTree:
    """Adds a file and a directory with xattrs (a capability and a user attribute)."""
    tree.put(Entry(path="srv/cap", type=EntryType.FILE, mode=0o755,
                   blob=tree.store.from_bytes(b"ping"),
                   xattrs=(("security.capability", b"\x01\x00\x00\x02" + bytes(16)),
                           ("user.comment", b"hello"))))
    tree.put(Entry(path="srv/dir-with-xattr", type=EntryType.DIR, mode=0o755,
                   xattrs=(("user.comment", b"hello"),)))
    return tree
