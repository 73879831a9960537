"""The answer store: the fake dataset, persisted batch by batch in SQLite (WAL).

Every answered batch is committed in one transaction before it counts as done, so a crash or a
``kill -9`` loses no paid answer; ids are content hashes, so no image is paid for twice. Images
are kept as the exact ``uint8`` bytes sent (lossless), with their shape in the meta table.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from copycat.errors import CopycatError, StoreMismatchError

SCHEMA_VERSION = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS answers (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    image BLOB NOT NULL,
    label INTEGER NOT NULL,
    probs BLOB,
    source TEXT NOT NULL,
    queried_at REAL NOT NULL
);
"""


def image_id(image: torch.Tensor) -> str:
    """Content hash of one ``uint8`` (C, H, W) image: shape and exact bytes."""
    arr = np.ascontiguousarray(image.numpy())
    h = hashlib.sha256(repr(arr.shape).encode())
    h.update(arr.tobytes())
    return h.hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class FakeDataset:
    """The stolen training set, in memory."""

    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64
    probs: torch.Tensor | None  # (N, K) float32 when every answer carried probabilities
    sources: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


class AnswerStore:
    """``answers.sqlite`` of one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None

    # -- connection -------------------------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                conn = sqlite3.connect(self.path, timeout=30.0)
                conn.execute("PRAGMA journal_mode=WAL")
                # FULL: a committed batch survives power loss too, not only a killed process.
                conn.execute("PRAGMA synchronous=FULL")
                conn.executescript(_SCHEMA)
            except sqlite3.DatabaseError as exc:
                raise CopycatError(
                    f"{self.path} is not a usable answer store ({exc}); "
                    "move it away or choose another --run-dir"
                ) from exc
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> AnswerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- meta -------------------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM meta").fetchall())

    def bind(
        self,
        *,
        fingerprint: str,
        input_shape: Sequence[int],
        num_classes: int,
        pool: str,
        budget: int,
    ) -> None:
        """Tie the store to one oracle; refuse a store made against another one.

        The budget and pool may change between runs (a user may raise the budget); the oracle,
        its output restriction and the input shape may not.
        """
        shape = json.dumps(list(input_shape))
        meta = self.meta()
        if "fingerprint" in meta:
            if meta["fingerprint"] != fingerprint:
                raise StoreMismatchError(
                    f"{self.path} holds answers of oracle {meta['fingerprint']}, not "
                    f"{fingerprint}; resume with the same oracle and output, or use a new --run-dir"
                )
            if meta.get("input_shape") != shape or meta.get("num_classes") != str(num_classes):
                raise StoreMismatchError(
                    f"{self.path} was made for input {meta.get('input_shape')} and "
                    f"{meta.get('num_classes')} classes; use a new --run-dir"
                )
        with self.conn:
            rows = {
                "fingerprint": fingerprint,
                "input_shape": shape,
                "num_classes": str(num_classes),
                "schema": SCHEMA_VERSION,
            }
            if "created" not in meta:
                rows["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            rows["pool"], rows["budget"] = pool, str(budget)
            self.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", rows.items())

    # -- answers ----------------------------------------------------------------------------
    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def known(self, ids: Iterable[str]) -> set[str]:
        """The subset of ``ids`` already answered."""
        ids = list(ids)
        found: set[str] = set()
        for i in range(0, len(ids), 900):  # SQLite caps bound parameters
            chunk = ids[i : i + 900]
            q = f"SELECT id FROM answers WHERE id IN ({','.join('?' * len(chunk))})"
            found.update(r[0] for r in self.conn.execute(q, chunk))
        return found

    def add_batch(
        self,
        ids: Sequence[str],
        images: torch.Tensor,
        labels: torch.Tensor,
        probs: torch.Tensor | None,
        sources: Sequence[str],
    ) -> int:
        """Commit one answered batch in a single transaction; returns rows written.

        ``images`` is (N, C, H, W) uint8, ``labels`` (N,) int64, ``probs`` (N, K) or None.
        An id already present is ignored (it was paid for once and is kept as it was).
        """
        now = time.time()
        imgs = images.contiguous().numpy()
        lab = labels.tolist()
        pr = None if probs is None else probs.float().contiguous().numpy()
        rows = [
            (
                ids[i],
                imgs[i].tobytes(),
                int(lab[i]),
                None if pr is None else pr[i].tobytes(),
                sources[i],
                now,
            )
            for i in range(len(ids))
        ]
        try:
            with self.conn:
                cur = self.conn.executemany(
                    "INSERT OR IGNORE INTO answers (id, image, label, probs, source, queried_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
        except sqlite3.OperationalError as exc:
            raise CopycatError(
                f"could not write answers to {self.path} ({exc}); free disk space "
                "and run the same command again: committed answers are kept"
            ) from exc
        return int(cur.rowcount)

    def label_histogram(self, num_classes: int) -> list[int]:
        hist = [0] * num_classes
        for label, n in self.conn.execute("SELECT label, COUNT(*) FROM answers GROUP BY label"):
            if 0 <= label < num_classes:
                hist[label] = int(n)
        return hist

    def load(self) -> FakeDataset:
        """Every answer, in query order, as tensors."""
        meta = self.meta()
        if "input_shape" not in meta:
            raise CopycatError(f"{self.path} holds no answers yet; run `copycat steal` first")
        shape = tuple(json.loads(meta["input_shape"]))
        k = int(meta["num_classes"])
        rows = self.conn.execute(
            "SELECT image, label, probs, source FROM answers ORDER BY seq"
        ).fetchall()
        if not rows:
            raise CopycatError(f"{self.path} holds no answers yet; run `copycat steal` first")
        n = len(rows)
        buf = b"".join(r[0] for r in rows)
        images = torch.from_numpy(np.frombuffer(buf, dtype=np.uint8).reshape(n, *shape).copy())
        labels = torch.tensor([r[1] for r in rows], dtype=torch.int64)
        probs = None
        if all(r[2] is not None for r in rows):
            pbuf = b"".join(r[2] for r in rows)
            probs = torch.from_numpy(np.frombuffer(pbuf, dtype=np.float32).reshape(n, k).copy())
        return FakeDataset(
            images=images, labels=labels, probs=probs, sources=tuple(r[3] for r in rows)
        )
