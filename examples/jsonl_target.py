"""A custom target in a few lines: each record becomes one JSON line in a file.

Use it with ``target: {type: "jsonl_target:JsonlTarget", options: {path: out.jsonl}}`` and this
folder on PYTHONPATH. It resumes exactly because the file itself says which source offsets it
holds, and it acknowledges records only after fsync.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from relay.message import Message, Offsets, SourcePartition
from relay.target import AckCallback


class JsonlTarget:
    """Appends records to ``options["path"]`` as JSON lines."""

    def __init__(self, options: Mapping[str, object]) -> None:
        self.path = Path(str(options["path"]))
        self.every = int(str(options.get("flush_every", 1000)))
        self._pending: list[Message] = []
        self._file: IO[str] | None = None
        self._on_ack: AckCallback | None = None

    def high_watermarks(self, partitions: Sequence[SourcePartition]) -> Offsets:
        """Next offsets from the last complete line of each partition in the file."""
        found: dict[SourcePartition, int] = {}
        if self.path.exists():
            data = self.path.read_bytes()
            # A crash can leave a torn last line: cut the file back to its last newline.
            with self.path.open("r+b") as fh:
                fh.truncate(data.rfind(b"\n") + 1)
            for line in data[: data.rfind(b"\n") + 1].splitlines():
                rec = json.loads(line)
                found[SourcePartition(rec["topic"], rec["partition"])] = rec["offset"] + 1
        return {sp: offset for sp, offset in found.items() if sp in set(partitions)}

    def start(self, on_ack: AckCallback) -> None:
        self._on_ack = on_ack
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, message: Message) -> None:
        assert self._file is not None
        value = base64.b64encode(message.value or b"").decode()
        line = {
            "topic": message.source_topic,
            "partition": message.source_partition,
            "offset": message.source_offset,
            "key": (message.key or b"").decode(errors="replace"),
            "value": value,
        }
        self._file.write(json.dumps(line) + "\n")
        self._pending.append(message)
        if len(self._pending) >= self.every:
            self.flush()

    def flush(self, timeout: float | None = None) -> bool:
        assert self._file is not None and self._on_ack is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        done, self._pending = self._pending, []
        self._on_ack(done)
        return True

    def close(self) -> None:
        if self._file is not None:
            self.flush()
            self._file.close()
