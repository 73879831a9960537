"""The answer store: the fake dataset and its cost ledger, persisted in SQLite (WAL).

Every answered request is committed in one transaction before it counts as done; ids are
content hashes, so an answered image is never sent again. Images are kept as the exact
``uint8`` bytes sent (lossless), with their shape in the meta table.

The ``requests`` table is a write-ahead ledger: each attempt is recorded (its image ids, the
time) before it is sent and closed with its outcome, the answered ones in the same transaction
as their answers. So the billed total counts every image that may have been billed, whatever
moment the process died: a ``kill -9`` loses at most the answers of the requests in flight,
which stay in the ledger (outcome ``killed``) and are counted as billed.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
CREATE TABLE IF NOT EXISTS requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    attempt INTEGER NOT NULL,
    images INTEGER NOT NULL,
    ids TEXT NOT NULL,
    sent_at REAL NOT NULL,
    outcome TEXT,
    closed_at REAL
);
CREATE INDEX IF NOT EXISTS requests_open ON requests (outcome);
"""
#: Outcomes of an attempt that the server did not bill: it refused (HTTP 4xx/5xx/429), the
#: connection was never made, or a local oracle failed. Every other outcome (answered,
#: malformed, invalid, timeout, cut: a connection cut mid-reply, killed: in flight when the
#: process died, and NULL: in flight now) is counted as billed: an upper bound on what the
#: server may charge.
NOT_BILLED = ("refused", "unsent", "failed")
_BILLED = f"(outcome IS NULL OR outcome NOT IN {NOT_BILLED!r})"


def _adopt_unledgered(conn: sqlite3.Connection) -> None:
    """A store made before the ledger existed holds answers and no request: each answer is
    counted billed once (``legacy``), so ``billed`` never reads below ``answered``."""
    with conn:
        if conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]:
            return
        n = conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        if n:
            conn.execute(
                "INSERT INTO requests (attempt, images, ids, sent_at, outcome, closed_at) "
                "VALUES (0, ?, '', ?, 'legacy', ?)",
                (n, time.time(), time.time()),
            )


class LimitReached(CopycatError):
    """A request was not sent: it would pass the budget or ``--max-billed``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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
        # answers are committed from the oracle's worker threads, as each request completes
        self._lock = threading.RLock()

    # -- connection -------------------------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                # Shared across the oracle's threads under self._lock. No statement cache: a
                # cached statement is shared by every cursor that runs the same SQL, and a
                # cursor freed after the lock is released resets it under another thread
                # (sqlite3.InterfaceError "bad parameter or other API misuse"; CPython #118172).
                conn = sqlite3.connect(
                    self.path, timeout=30.0, check_same_thread=False, cached_statements=0
                )
                conn.execute("PRAGMA journal_mode=WAL")
                # FULL: a committed batch survives power loss too, not only a killed process.
                conn.execute("PRAGMA synchronous=FULL")
                conn.executescript(_SCHEMA)
                _adopt_unledgered(conn)
            except sqlite3.DatabaseError as exc:
                raise CopycatError(
                    f"{self.path} is not a usable answer store ({exc}); "
                    "move it away or choose another --run-dir"
                ) from exc
            self._conn = conn
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (``BEGIN IMMEDIATE``): what it reads holds
        until it commits, against this process's threads and any other process."""
        with self._lock:
            conn = self.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
            except sqlite3.OperationalError as exc:
                conn.rollback()
                raise CopycatError(
                    f"could not write to {self.path} ({exc}); free disk space and run the "
                    "same command again: committed answers are kept"
                ) from exc
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def _q(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self.conn.execute(sql, args).fetchall())

    def __enter__(self) -> AnswerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- meta -------------------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self._q("SELECT key, value FROM meta")}

    def check_oracle(self, fingerprint: str) -> None:
        """Refuse ``fingerprint`` if the store already holds answers of another oracle (or of
        the same target under another output restriction or defence); reads only."""
        stored = self.meta().get("fingerprint")
        if stored is not None and stored != fingerprint:
            raise StoreMismatchError(
                f"{self.path} holds answers of oracle {stored}, not "
                f"{fingerprint}; resume with the same oracle and output, or use a new --run-dir"
            )

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
        self.check_oracle(fingerprint)
        bound = "fingerprint" in meta
        if bound and (
            meta.get("input_shape") != shape or meta.get("num_classes") != str(num_classes)
        ):
            raise StoreMismatchError(
                f"{self.path} was made for input {meta.get('input_shape')} and "
                f"{meta.get('num_classes')} classes; use a new --run-dir"
            )
        with self._tx() as conn:
            rows = {
                "fingerprint": fingerprint,
                "input_shape": shape,
                "num_classes": str(num_classes),
                "schema": SCHEMA_VERSION,
            }
            if "created" not in meta:
                rows["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            rows["pool"], rows["budget"] = pool, str(budget)
            conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", rows.items())

    # -- answers ----------------------------------------------------------------------------
    def count(self) -> int:
        return int(self._q("SELECT COUNT(*) FROM answers")[0][0])

    def known(self, ids: Iterable[str]) -> set[str]:
        """The subset of ``ids`` already answered."""
        ids = list(ids)
        found: set[str] = set()
        for i in range(0, len(ids), 900):  # SQLite caps bound parameters
            chunk = ids[i : i + 900]
            q = f"SELECT id FROM answers WHERE id IN ({','.join('?' * len(chunk))})"
            found.update(str(r[0]) for r in self._q(q, chunk))
        return found

    def add_batch(
        self,
        ids: Sequence[str],
        images: torch.Tensor,
        labels: torch.Tensor,
        probs: torch.Tensor | None,
        sources: Sequence[str],
        *,
        request: int | None = None,
    ) -> int:
        """Commit one answered batch in a single transaction; returns rows written.

        ``images`` is (N, C, H, W) uint8, ``labels`` (N,) int64, ``probs`` (N, K) or None.
        An id already present is ignored (it was paid for once and is kept as it was).
        ``request`` (a ledger entry of :meth:`open_request`) is closed as answered in the same
        transaction, so the ledger and the answers never disagree.
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
        with self._tx() as conn:
            cur = conn.executemany(
                "INSERT OR IGNORE INTO answers (id, image, label, probs, source, queried_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            written = int(cur.rowcount)
            cur.close()  # inside the lock (see conn)
            if request is not None:
                conn.execute(
                    "UPDATE requests SET outcome = 'answered', closed_at = ? WHERE seq = ?",
                    (now, request),
                )
        return written

    # -- the request ledger -------------------------------------------------------------------
    def open_request(
        self,
        ids: Sequence[str],
        *,
        attempt: int,
        budget: int | None,
        max_billed: int | None,
    ) -> int:
        """Record an attempt before it is sent; returns its ledger entry.

        In the same transaction, the answers stored plus the images in flight must leave room
        for ``ids`` under ``budget``, and every image that may have been billed (all runs) must
        leave room under ``max_billed``; otherwise :class:`LimitReached` and nothing is sent.
        """
        n = len(ids)
        with self._tx() as conn:
            if budget is not None:
                answered = conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
                flying = conn.execute(
                    "SELECT COALESCE(SUM(images), 0) FROM requests WHERE outcome IS NULL"
                ).fetchone()[0]
                if answered + flying + n > budget:
                    raise LimitReached("budget reached")
            if max_billed is not None:
                billed = conn.execute(
                    f"SELECT COALESCE(SUM(images), 0) FROM requests WHERE {_BILLED}"
                ).fetchone()[0]
                if billed + n > max_billed:
                    raise LimitReached("max-billed reached")
            cur = conn.execute(
                "INSERT INTO requests (attempt, images, ids, sent_at) VALUES (?, ?, ?, ?)",
                (attempt, n, ",".join(ids), time.time()),
            )
            seq = int(cur.lastrowid or 0)
            cur.close()  # inside the lock (see conn)
            return seq

    def close_request(self, request: int, outcome: str) -> None:
        """Close an attempt that brought no answer to store, with its ``outcome``."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE requests SET outcome = ?, closed_at = ? WHERE seq = ?",
                (outcome, time.time(), request),
            )

    def close_orphans(self) -> int:
        """Mark the attempts left open by a dead process as ``killed``; returns their images.

        Call it holding the run directory alone: an open entry then belongs to no one alive."""
        with self._tx() as conn:
            n = conn.execute(
                "SELECT COALESCE(SUM(images), 0) FROM requests WHERE outcome IS NULL"
            ).fetchone()[0]
            conn.execute(
                "UPDATE requests SET outcome = 'killed', closed_at = ? WHERE outcome IS NULL",
                (time.time(),),
            )
        return int(n)

    def billed(self) -> int:
        """Images that may have been billed, all runs (every outcome but a refusal)."""
        q = f"SELECT COALESCE(SUM(images), 0) FROM requests WHERE {_BILLED}"
        return int(self._q(q)[0][0])

    def ledger_totals(self) -> dict[str, int]:
        """The ledger summed over every run: ``answered`` images stored, ``requests`` answered,
        ``attempts`` sent, ``sent_images`` (all attempts), ``billed_images`` (all but refused
        ones), images per outcome (``refused``, ``killed``: in flight at a kill, ``malformed``,
        ``timeout``, ``cut``), ``in_flight_images`` (open now) and ``repaid_images`` (billed
        beyond the answers kept: retries of billed replies, answers lost with a killed
        process)."""
        by: dict[str | None, tuple[int, int]] = {}
        for outcome, k, n in self._q(
            "SELECT outcome, COUNT(*), COALESCE(SUM(images), 0) FROM requests GROUP BY outcome"
        ):
            by[None if outcome is None else str(outcome)] = (int(k), int(n))
        attempts = sum(k for k, _ in by.values())
        billed = sum(n for o, (_, n) in by.items() if o not in NOT_BILLED)
        answered = self.count()
        return {
            "answered": answered,
            "requests": by.get("answered", (0, 0))[0],
            "attempts": attempts,
            "sent_images": sum(n for o, (_, n) in by.items() if o != "unsent"),
            "billed_images": billed,
            "refused_images": by.get("refused", (0, 0))[1],
            "killed_images": by.get("killed", (0, 0))[1],
            "in_flight_images": by.get(None, (0, 0))[1],
            "malformed_images": by.get("malformed", (0, 0))[1],
            "timeout_images": by.get("timeout", (0, 0))[1],
            "cut_images": by.get("cut", (0, 0))[1],
            "repaid_images": max(0, billed - answered),
        }

    def label_histogram(self, num_classes: int) -> list[int]:
        hist = [0] * num_classes
        for label, n in self._q("SELECT label, COUNT(*) FROM answers GROUP BY label"):
            if isinstance(label, int) and 0 <= label < num_classes:
                hist[label] = int(n)
        return hist

    def labels_and_sources(self, *, skip: int = 0) -> list[tuple[int, str]]:
        """(label, source) of every answer in query order, less the first ``skip`` (cheap:
        no images are read)."""
        rows = self._q("SELECT label, source FROM answers ORDER BY seq LIMIT -1 OFFSET ?", (skip,))
        return [(int(label), str(source)) for label, source in rows]

    def load(self) -> FakeDataset:
        """Every answer, in query order, as tensors."""
        meta = self.meta()
        if "input_shape" not in meta:
            raise CopycatError(f"{self.path} holds no answers yet; run `copycat steal` first")
        shape = tuple(json.loads(meta["input_shape"]))
        k = int(meta["num_classes"])
        rows: list[Any] = self._q("SELECT image, label, probs, source FROM answers ORDER BY seq")
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
