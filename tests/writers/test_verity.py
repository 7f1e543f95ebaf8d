"""dm-verity writer: the hash device equals ``veritysetup format``'s byte for byte, with the
same root hash; ``veritysetup verify`` accepts ours and refuses a flipped data byte."""

from __future__ import annotations

import io
import random
import re
import subprocess
from pathlib import Path

import pytest

from composer.errors import OutputError
from composer.writers.verity import (
    VerityTree,
    verity_salt_and_uuid,
    verity_table,
    write_verity,
)
from tests.helpers.tools import run_tool

SALT, UUID = verity_salt_and_uuid(b"\x01" * 32)


def _veritysetup(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_tool("veritysetup", "cryptsetup-bin", *args, check=check)


def _data(tmp_path: Path, size: int, seed: int) -> Path:
    path = tmp_path / "data"
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def _ours(data: Path, tmp_path: Path, **options: int) -> tuple[VerityTree, Path]:
    out = tmp_path / "ours.hash"
    with data.open("rb") as source, out.open("wb") as sink:
        tree = write_verity(source, data.stat().st_size, sink, salt=SALT, uuid=UUID, **options)
    return tree, out


def _theirs(data: Path, tmp_path: Path, block: int = 4096, hash_block: int = 4096) -> tuple[str, bytes]:
    out = tmp_path / "theirs.hash"
    result = _veritysetup("format", "--salt", SALT.hex(), "--uuid", UUID,
                          f"--data-block-size={block}", f"--hash-block-size={hash_block}",
                          str(data), str(out))
    match = re.search(r"Root hash:\s*([0-9a-f]{64})", result.stdout)
    assert match, result.stdout
    return match.group(1), out.read_bytes()


@pytest.mark.parametrize(("blocks", "block", "hash_block"), [
    (1, 4096, 4096),           # no tree: the root hash is the block's digest
    (2, 4096, 4096),
    (128, 4096, 4096),         # exactly one full hash block
    (129, 4096, 4096),         # two levels
    (1000, 4096, 4096),        # not a multiple of 128
    (16385, 4096, 4096),       # three levels
    (300, 512, 512),           # 16 digests per hash block: four levels
    (77, 1024, 4096),
])
def test_hash_device_equals_veritysetup(tmp_path: Path, blocks: int, block: int,
                                        hash_block: int) -> None:
    data = _data(tmp_path, blocks * block, blocks)
    tree, ours = _ours(data, tmp_path, data_block_size=block, hash_block_size=hash_block)
    root, theirs = _theirs(data, tmp_path, block, hash_block)
    assert tree.root_hash.hex() == root
    assert ours.read_bytes() == theirs
    assert tree.hash_size == len(theirs)
    assert tree.data_blocks == blocks
    _veritysetup("verify", str(data), str(ours), root)


def test_flipped_data_byte_fails_verify(tmp_path: Path) -> None:
    data = _data(tmp_path, 300 * 4096, 7)
    tree, ours = _ours(data, tmp_path)
    raw = bytearray(data.read_bytes())
    raw[200 * 4096 + 17] ^= 0x01
    data.write_bytes(bytes(raw))
    result = _veritysetup("verify", str(data), str(ours), tree.root_hash.hex(), check=False)
    assert result.returncode != 0
    assert "Verification failed at position 819200" in result.stderr


def test_short_last_block_hashes_as_zero_padded(tmp_path: Path) -> None:
    data = _data(tmp_path, 5 * 4096 + 100, 3)
    tree, ours = _ours(data, tmp_path)
    padded = tmp_path / "padded"
    padded.write_bytes(data.read_bytes() + bytes(4096 - 100))
    root, theirs = _theirs(padded, tmp_path)
    assert (tree.root_hash.hex(), tree.data_blocks) == (root, 6)
    assert ours.read_bytes() == theirs


def test_salt_and_uuid_follow_the_content() -> None:
    salt, uuid = verity_salt_and_uuid(b"\x01" * 32)
    assert (salt, uuid) == (SALT, UUID)
    assert len(salt) == 32
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
                        uuid)
    other_salt, other_uuid = verity_salt_and_uuid(b"\x02" * 32)
    assert other_salt != salt and other_uuid != uuid


def test_table_line() -> None:
    tree = write_verity(io.BytesIO(bytes(3 * 4096)), 3 * 4096, io.BytesIO(), salt=SALT,
                        uuid=UUID)
    line = verity_table(tree, "/dev/vda2", "/dev/vda3")
    assert line == (f"0 24 verity 1 /dev/vda2 /dev/vda3 4096 4096 3 1 sha256 "
                    f"{tree.root_hash.hex()} {SALT.hex()}")
    unsalted = write_verity(io.BytesIO(bytes(4096)), 4096, io.BytesIO(), salt=b"", uuid=UUID)
    assert verity_table(unsalted, "a", "b").endswith(f" {unsalted.root_hash.hex()} -")


@pytest.mark.parametrize(("options", "message"), [
    ({"data_block_size": 3000}, "verity: data block size 3000 is not a power of two between "
                                "512 and 524288"),
    ({"hash_block_size": 256}, "verity: hash block size 256 is not a power of two between "
                               "512 and 524288"),
    ({"salt": bytes(257)}, "verity: a salt of 257 bytes; at most 256 fit"),
    ({"uuid": "nope"}, "verity: 'nope' is not a UUID"),
    ({"size": 0}, "verity: no data to hash"),
    ({"size": 9000}, "verity: the data ended after 8192 bytes; 9000 were announced"),
])
def test_bad_input_is_refused(options: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"salt": SALT, "uuid": UUID}
    arguments.update(options)
    size = arguments.pop("size", 8192)
    with pytest.raises(OutputError) as caught:
        write_verity(io.BytesIO(bytes(8192)), size, io.BytesIO(),  # type: ignore[arg-type]
                     **arguments)  # type: ignore[arg-type]
    assert str(caught.value) == message
