"""A minimal ISO 9660 image: one volume, files in the root directory, nothing else.

Written: 16 empty system-area sectors, the primary volume descriptor (sector 16), the set
terminator (17), the little- and big-endian path tables (18, 19), the root directory (20),
then each file in its own run of sectors. Every number the standard stores "both-endian"
is written both ways; dates are left "not specified" so one input always gives the same
bytes (a rebuilt seed has the same digest).

Names are kept as given in upper case with the standard's ``.;1`` suffix (``META-DATA.;1``):
interchange level 1 in every respect but the name's length and its hyphen, which the
NoCloud names need and which Linux's ``isofs`` (the reader cloud-init depends on) and
``isoinfo`` accept; readers map the name back to ``meta-data``.

Read: a bounded parse of such an image (and of any single-extent root directory), each
fault raised as ValueError naming what is wrong.
"""

from __future__ import annotations

import re
import struct

SECTOR = 2048
_PVD_SECTOR = 16
_ROOT_SECTOR = 20
_FIRST_FILE_SECTOR = 21
MAX_IMAGE_BYTES = 4 * 1024 * 1024  # a seed is a few KiB; a reader never goes past this
MAX_FILES = 64
MAX_FILE_BYTES = 1024 * 1024
_NAME = re.compile(r"^[A-Z0-9_-]{1,30}$")
_VOLUME_ID = re.compile(r"^[A-Z0-9_]{1,32}$")
_DIRECTORY = 0x02
_MULTI_EXTENT = 0x80


def _both16(value: int) -> bytes:
    return struct.pack("<H", value) + struct.pack(">H", value)


def _both32(value: int) -> bytes:
    return struct.pack("<I", value) + struct.pack(">I", value)


def _sectors(size: int) -> int:
    return max(1, -(-size // SECTOR))


def _record(identifier: bytes, extent: int, size: int, flags: int) -> bytes:
    """One directory record (ECMA-119 9.1); dates all zero: not specified."""
    length = 33 + len(identifier) + (1 - len(identifier) % 2)
    record = (bytes([length, 0]) + _both32(extent) + _both32(size) + bytes(7)
              + bytes([flags, 0, 0]) + _both16(1) + bytes([len(identifier)]) + identifier)
    return record.ljust(length, b"\0")


def _padded(text: str, width: int) -> bytes:
    return text.encode("ascii").ljust(width, b" ")


def write_iso(volume_id: str, files: dict[str, bytes]) -> bytes:
    """The image of ``files`` (name -> content, names of 1-30 of ``A-Z 0-9 _ -`` once upper
    cased) in the root directory of a volume called ``volume_id``."""
    if not _VOLUME_ID.fullmatch(volume_id):
        raise ValueError(f"volume identifier {volume_id!r} is not 1-32 of A-Z 0-9 _")
    if not 1 <= len(files) <= MAX_FILES:
        raise ValueError(f"an image holds 1 to {MAX_FILES} files, not {len(files)}")
    entries: list[tuple[bytes, bytes]] = []
    for name, content in sorted(files.items(), key=lambda item: item[0].upper()):
        if not _NAME.fullmatch(name.upper()):
            raise ValueError(f"file name {name!r} is not 1-30 of A-Z 0-9 _ -")
        if len(content) > MAX_FILE_BYTES:
            raise ValueError(f"file {name} has {len(content)} bytes, more than "
                             f"{MAX_FILE_BYTES}")
        entries.append((f"{name.upper()}.;1".encode("ascii"), content))

    records, data, extent = [], [], _FIRST_FILE_SECTOR
    for identifier, content in entries:
        records.append(_record(identifier, extent, len(content), 0))
        data.append(content.ljust(_sectors(len(content)) * SECTOR, b"\0"))
        extent += _sectors(len(content))
    total_sectors = extent
    root = _record(b"\0", _ROOT_SECTOR, SECTOR, _DIRECTORY)
    directory = (root + _record(b"\1", _ROOT_SECTOR, SECTOR, _DIRECTORY) + b"".join(records))
    if len(directory) > SECTOR:
        raise ValueError("the file names do not fit in one directory sector")

    path_entry = bytes([1, 0]) + struct.pack("<I", _ROOT_SECTOR) + struct.pack("<H", 1) + b"\0\0"
    path_entry_be = bytes([1, 0]) + struct.pack(">I", _ROOT_SECTOR) + struct.pack(">H", 1) + b"\0\0"
    unset_date = b"0" * 16 + b"\0"
    pvd = b"".join([
        b"\x01CD001\x01\0", _padded("", 32), _padded(volume_id, 32), bytes(8),
        _both32(total_sectors), bytes(32), _both16(1), _both16(1), _both16(SECTOR),
        _both32(len(path_entry)), struct.pack("<I", 18), bytes(4), struct.pack(">I", 19),
        bytes(4), root, _padded("", 128), _padded("", 128), _padded("", 128),
        _padded("EDGEPLANE", 128), _padded("", 37), _padded("", 37), _padded("", 37),
        unset_date * 4, b"\x01\0",
    ]).ljust(SECTOR, b"\0")
    terminator = b"\xffCD001\x01".ljust(SECTOR, b"\0")
    image = b"".join([bytes(SECTOR * _PVD_SECTOR), pvd, terminator,
                      path_entry.ljust(SECTOR, b"\0"), path_entry_be.ljust(SECTOR, b"\0"),
                      directory.ljust(SECTOR, b"\0"), *data])
    assert len(image) == total_sectors * SECTOR
    return image


def read_iso(data: bytes) -> tuple[str, dict[str, bytes]]:
    """The volume identifier and the root directory's files (name -> content) of an image;
    names are lower-cased without their ``;version`` and trailing dot, as Linux shows them."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError(f"an ISO image is bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(f"image of {len(data)} bytes is larger than {MAX_IMAGE_BYTES}")
    if len(data) < (_PVD_SECTOR + 1) * SECTOR:
        raise ValueError(f"image of {len(data)} bytes is too short for an ISO 9660 volume "
                         "descriptor (sector 16)")
    pvd = data[_PVD_SECTOR * SECTOR:(_PVD_SECTOR + 1) * SECTOR]
    if pvd[1:6] != b"CD001" or pvd[0] != 1:
        raise ValueError("sector 16 is not an ISO 9660 primary volume descriptor "
                         f"(type {pvd[0]}, id {pvd[1:6]!r})")
    block = struct.unpack_from("<H", pvd, 128)[0]
    if block != SECTOR:
        raise ValueError(f"logical block size {block} is not {SECTOR}")
    volume_id = pvd[40:72].decode("ascii", "replace").rstrip(" \0")
    extent, size = _extent(data, pvd[156:190], "root directory")
    files: dict[str, bytes] = {}
    directory, offset = data[extent:extent + size], 0
    while offset < len(directory):
        length = directory[offset]
        if length == 0:  # records do not cross sectors: the rest of this one is padding
            offset = (offset // SECTOR + 1) * SECTOR
            continue
        record = directory[offset:offset + length]
        if length < 34 or len(record) < length or 33 + record[32] > length:
            raise ValueError(f"root directory record at byte {offset} is malformed "
                             f"(length {length})")
        identifier = record[33:33 + record[32]]
        offset += length
        if identifier in (b"\0", b"\1") or record[25] & _DIRECTORY:
            continue
        name = identifier.decode("ascii", "replace").split(";", 1)[0].rstrip(".").lower()
        if record[25] & _MULTI_EXTENT:
            raise ValueError(f"file {name} spans several extents, which this reader refuses")
        if name in files:
            raise ValueError(f"file {name} appears twice in the root directory")
        if len(files) >= MAX_FILES:
            raise ValueError(f"the root directory has more than {MAX_FILES} files")
        start, count = _extent(data, record, f"file {name}")
        if count > MAX_FILE_BYTES:
            raise ValueError(f"file {name} has {count} bytes, more than {MAX_FILE_BYTES}")
        files[name] = data[start:start + count]
    return volume_id, files


def _extent(data: bytes, record: bytes, what: str) -> tuple[int, int]:
    """Byte offset and length of a record's extent, checked against the image."""
    if len(record) < 34:
        raise ValueError(f"{what}: directory record is truncated")
    sector, size = struct.unpack_from("<I", record, 2)[0], struct.unpack_from("<I", record, 10)[0]
    start = sector * SECTOR
    if start + size > len(data) or sector < _PVD_SECTOR:
        raise ValueError(f"{what}: extent at sector {sector} of {size} bytes lies outside the "
                         f"image of {len(data)} bytes")
    return start, size
