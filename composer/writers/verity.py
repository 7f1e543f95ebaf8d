"""dm-verity hash trees (format version 1, hash type 1), byte for byte as ``veritysetup format``
lays them out, so a root can be verified by the kernel without running cryptsetup at build time.

The hash device holds a 512-byte superblock at offset 0, padded to one hash block, then the
tree levels, top level first. Each level hashes the blocks of the level below it (level 0
hashes the data blocks): ``sha256(salt + block)`` per block (hash type 1 puts the salt
first), the digests packed into hash blocks, the last block of a level zero-padded. The root
hash is the digest of the single top-level block, or of the only data block when the data
fits in one block (then there is no tree at all).

The data is read once, block by block; only the digests stay in memory (1/128 of the data).
The salt and UUID come from the caller; :func:`verity_salt_and_uuid` derives both from the
data's digest, so equal roots give equal hash devices.
"""

from __future__ import annotations

import hashlib
import struct
import uuid as uuid_module
from dataclasses import dataclass
from typing import BinaryIO

from composer.errors import OutputError

ALGORITHM = "sha256"
DIGEST_SIZE = 32
SUPERBLOCK_SIZE = 512
MAX_SALT = 256
SECTOR = 512
_SIGNATURE = b"verity\0\0"
_VERSION = 1
_HASH_TYPE = 1
_SUPERBLOCK = struct.Struct("<8sII16s32sIIQH6x256s168x")
_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class VerityTree:
    """What the kernel needs to open the device: ``hash_size`` is the bytes written to the
    hash device (superblock and tree); the tree starts one hash block in."""

    root_hash: bytes
    salt: bytes
    uuid: str
    data_blocks: int
    hash_size: int
    data_block_size: int = 4096
    hash_block_size: int = 4096


def verity_salt_and_uuid(data_digest: bytes) -> tuple[bytes, str]:
    """A 32-byte salt (veritysetup's default size) and a UUID derived from ``data_digest``:
    reproducible for equal data, and unrelated across different roots."""
    salt = hashlib.sha256(b"alpine-composer verity salt\0" + data_digest).digest()
    raw = bytearray(hashlib.sha256(b"alpine-composer verity uuid\0" + data_digest).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return salt, str(uuid_module.UUID(bytes=bytes(raw)))


def _check_block_size(name: str, size: int) -> None:
    if size < SECTOR or size > 1 << 19 or size & (size - 1):
        raise OutputError(f"verity: {name} block size {size} is not a power of two "
                          f"between {SECTOR} and {1 << 19}")


def _superblock(*, uuid: str, salt: bytes, data_blocks: int, data_block_size: int,
                hash_block_size: int) -> bytes:
    try:
        uuid_bytes = uuid_module.UUID(uuid).bytes
    except ValueError:
        raise OutputError(f"verity: {uuid!r} is not a UUID") from None
    return _SUPERBLOCK.pack(_SIGNATURE, _VERSION, _HASH_TYPE, uuid_bytes, ALGORITHM.encode(),
                            data_block_size, hash_block_size, data_blocks, len(salt), salt)


def _hash_blocks(blocks: bytes, block_size: int, salted: hashlib._Hash) -> bytes:
    """The digests of ``blocks`` cut into ``block_size`` pieces (its length is a multiple)."""
    digests = bytearray()
    view = memoryview(blocks)
    for offset in range(0, len(blocks), block_size):
        state = salted.copy()
        state.update(view[offset:offset + block_size])
        digests += state.digest()
    return bytes(digests)


def _pack(digests: bytes, hash_block_size: int) -> bytes:
    """Digests into whole hash blocks, the last one zero-padded."""
    rest = len(digests) % hash_block_size
    return digests + bytes(hash_block_size - rest) if rest else digests


def _data_digests(data: BinaryIO, data_size: int, block_size: int,
                  salted: hashlib._Hash) -> bytes:
    """Level 0: one digest per data block, reading ``data`` in 1 MiB pieces; a short last
    block is hashed zero-padded (the caller's device must read zeros there)."""
    digests = bytearray()
    left = data_size
    chunk_size = max(_READ_CHUNK - _READ_CHUNK % block_size, block_size)
    while left > 0:
        want = min(chunk_size, left)
        chunk = data.read(want)
        if len(chunk) != want:
            raise OutputError(f"verity: the data ended after {data_size - left + len(chunk)} "
                              f"bytes; {data_size} were announced")
        left -= want
        rest = len(chunk) % block_size
        if rest:
            chunk += bytes(block_size - rest)
        digests += _hash_blocks(chunk, block_size, salted)
    return bytes(digests)


def write_verity(data: BinaryIO, data_size: int, out: BinaryIO, *, salt: bytes, uuid: str,
                 data_block_size: int = 4096, hash_block_size: int = 4096) -> VerityTree:
    """Hash ``data_size`` bytes of ``data`` and write the hash device (superblock and tree,
    as ``veritysetup format --salt HEX --uuid UUID`` writes it) to ``out``.

    A ``data_size`` that is not a multiple of ``data_block_size`` counts its last block
    zero-padded, as a device of whole blocks reads it.
    """
    _check_block_size("data", data_block_size)
    _check_block_size("hash", hash_block_size)
    if len(salt) > MAX_SALT:
        raise OutputError(f"verity: a salt of {len(salt)} bytes; at most {MAX_SALT} fit")
    if data_size <= 0:
        raise OutputError("verity: no data to hash")
    data_blocks = -(-data_size // data_block_size)
    superblock = _superblock(uuid=uuid, salt=salt, data_blocks=data_blocks,
                             data_block_size=data_block_size, hash_block_size=hash_block_size)
    salted = hashlib.sha256(salt)
    level = _data_digests(data, data_size, data_block_size, salted)
    if data_blocks == 1:
        root_hash, levels = level, []
    else:
        levels = [_pack(level, hash_block_size)]
        while len(levels[-1]) > hash_block_size:
            below = levels[-1]
            levels.append(_pack(_hash_blocks(below, hash_block_size, salted),
                                hash_block_size))
        root_hash = _hash_blocks(levels[-1], hash_block_size, salted)
    out.write(superblock.ljust(hash_block_size, b"\0"))
    hash_size = hash_block_size
    for tree_level in reversed(levels):
        out.write(tree_level)
        hash_size += len(tree_level)
    return VerityTree(root_hash=root_hash, salt=salt, uuid=uuid, data_blocks=data_blocks,
                      hash_size=hash_size, data_block_size=data_block_size,
                      hash_block_size=hash_block_size)


def verity_table(tree: VerityTree, data_dev: str, hash_dev: str) -> str:
    """The device-mapper table line (``dmsetup create --table``) for ``tree``: the hash
    device's tree starts at hash block 1, after the superblock."""
    sectors = tree.data_blocks * tree.data_block_size // SECTOR
    salt = tree.salt.hex() if tree.salt else "-"
    return (f"0 {sectors} verity {_HASH_TYPE} {data_dev} {hash_dev} {tree.data_block_size} "
            f"{tree.hash_block_size} {tree.data_blocks} 1 {ALGORITHM} {tree.root_hash.hex()} "
            f"{salt}")
