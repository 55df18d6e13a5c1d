"""Read back what an offline W&B run wrote: its transaction log (``run-<id>.wandb``, the file
`wandb sync` uploads later) as wandb's own protobuf records.

The log has the LevelDB log layout: a 7-byte header (``:W&B``, a 2-byte magic, a version
byte), then 32 KiB blocks of chunks, each chunk a 7-byte header (CRC32C, 2-byte little-endian
length, 1-byte type: 1 full, 2 first, 3 middle, 4 last) and its bytes; a block's tail too
short for a chunk header is zero padding. wandb 0.31 ships no Python reader of its own.
"""

from __future__ import annotations

import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    records, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < HEADER:  # block trailer: padding
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if length == 0 and kind == 0:  # zero-filled rest of a block
            pos += room
            continue
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            pending = chunk
        elif kind == FIRST:
            pending = chunk
            continue
        elif kind == MIDDLE:
            pending += chunk
            continue
        else:
            pending += chunk
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending)
        records.append(record)
        pending = b""
    return records
