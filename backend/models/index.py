"""The gallery: photos, their embeddings and metadata in a database, searched in memory.

Pure code (no ray, no fastapi):
- `GalleryStore`: rows in SQLite (default, under the data directory) or any SQLAlchemy URL
  (PostgreSQL on a cluster: `postgresql+psycopg://USER@HOST:PORT/DB`). An add is durable when `add`
  returns: one transaction, committed, and SQLite in WAL mode with synchronous=FULL.
- `VectorIndex`: the embeddings as one L2-normalised matrix; exact search is a matrix-vector product,
  and past `ann_threshold` rows a FAISS IVF index answers instead. `search` can keep only rows whose
  label is among some breeds (the tutorial's filter by predicted breeds) and falls back to all rows
  when that leaves fewer than asked for.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    DateTime,
    Integer,
    LargeBinary,
    String,
    create_engine,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column


class Base(DeclarativeBase):
    pass


class Photo(Base):
    __tablename__ = "photos"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    label: Mapped[str | None] = mapped_column(String(200), index=True)
    label_source: Mapped[str] = mapped_column(String(20))  # "folder", "user" or "predicted"
    source: Mapped[str] = mapped_column(String(1000))  # where the photo came from (file, URL, upload)
    added_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    embedder: Mapped[str] = mapped_column(String(200), index=True)  # the model whose space the embedding is in
    embedding: Mapped[bytes] = mapped_column(LargeBinary)  # float32, L2-normalised
    thumbnail: Mapped[bytes] = mapped_column(LargeBinary)  # JPEG


class Marker(Base):
    """One-off facts about the store, such as "seeded": inserting one is the claim to do it."""

    __tablename__ = "markers"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class StoredPhoto:
    id: int
    label: str | None
    label_source: str
    source: str
    added_at: dt.datetime


@dataclass(frozen=True)
class Match:
    id: int
    label: str | None
    similarity: float
    thumbnail: bytes | None = None  # JPEG, when the caller shows the photo (the UI)


class GalleryStore:
    def __init__(self, url: str):
        # pre_ping: a connection the database dropped (a restart, a failover) is replaced before use,
        # instead of failing the next add.
        options: dict = {"pool_pre_ping": True}
        if url.startswith("postgresql"):
            options["connect_args"] = {"connect_timeout": 5}  # an unreachable server fails fast
        self.engine: Engine = create_engine(url, **options)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_durability)
        self._create_tables()

    def _create_tables(self, attempts: int = 3) -> None:
        """Replicas starting together on a new database race to create the tables (each sees none, each
        creates them, all but one fail on "already exists"): the losers look again and find them."""
        for attempt in range(attempts):
            try:
                Base.metadata.create_all(self.engine)
                return
            except DBAPIError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.1 * (attempt + 1))

    def ping(self) -> None:
        """Raises when the database does not answer."""
        with self.engine.connect() as connection:
            connection.execute(select(1))

    def add(
        self, embedding: np.ndarray, thumbnail: bytes, embedder: str, label: str | None, label_source: str, source: str
    ) -> StoredPhoto:
        added_at = dt.datetime.now(dt.UTC)
        with Session(self.engine) as session, session.begin():
            photo_id = session.execute(
                insert(Photo).values(
                    label=label,
                    label_source=label_source,
                    source=source,
                    added_at=added_at,
                    embedder=embedder,
                    embedding=np.asarray(embedding, dtype=np.float32).tobytes(),
                    thumbnail=thumbnail,
                )
            ).inserted_primary_key[0]
        return StoredPhoto(photo_id, label, label_source, source, added_at)

    def rows_after(self, last_id: int, embedder: str) -> list[tuple[int, str | None, np.ndarray]]:
        """(id, label, embedding) of the rows added since `last_id`, in the given model's space."""
        with Session(self.engine) as session:
            rows = session.execute(
                select(Photo.id, Photo.label, Photo.embedding)
                .where(Photo.id > last_id, Photo.embedder == embedder)
                .order_by(Photo.id)
            ).all()
        return [(row.id, row.label, np.frombuffer(row.embedding, dtype=np.float32)) for row in rows]

    def thumbnails(self, photo_ids: Sequence[int]) -> dict[int, bytes]:
        """The JPEG thumbnails of the photos that exist among `photo_ids`, in one query."""
        with Session(self.engine) as session:
            rows = session.execute(select(Photo.id, Photo.thumbnail).where(Photo.id.in_(list(photo_ids)))).all()
        return {row.id: row.thumbnail for row in rows}

    def count(self, embedder: str | None = None) -> int:
        query = select(func.count(Photo.id))
        if embedder:
            query = query.where(Photo.embedder == embedder)
        with Session(self.engine) as session:
            return int(session.scalar(query))

    def claim(self, marker: str) -> bool:
        """True for exactly one caller across processes: the first to record `marker`."""
        from sqlalchemy.exc import IntegrityError

        try:
            with Session(self.engine) as session, session.begin():
                session.add(Marker(name=marker, at=dt.datetime.now(dt.UTC)))
        except IntegrityError:
            return False
        return True

    def marker_at(self, marker: str) -> dt.datetime | None:
        """When `marker` was recorded (UTC); None if it is not."""
        with Session(self.engine) as session:
            found = session.get(Marker, marker)
        if found is None:
            return None
        # SQLite hands back naive datetimes (stored as UTC)
        return found.at if found.at.tzinfo else found.at.replace(tzinfo=dt.UTC)

    def release(self, marker: str) -> None:
        with Session(self.engine) as session, session.begin():
            session.query(Marker).filter(Marker.name == marker).delete()


def _sqlite_durability(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer; crash-safe
    cursor.execute("PRAGMA synchronous=FULL")  # fsync at every commit: an acknowledged add survives
    cursor.execute("PRAGMA busy_timeout=10000")  # several replicas write to one file
    cursor.close()


class VectorIndex:
    """Normalised embeddings with their ids and labels, searched by cosine similarity.

    Exact search reads every row (one matrix-vector product). From `ann_threshold` rows on, a FAISS
    IVF index answers instead: k-means cells over the rows, and a query reads only the `nprobe` cells
    nearest to it. IVF rather than HNSW: on 2 cores HNSW took 111 s to take in 100k 1280-d vectors
    (tens of minutes for 1M), IVF 2.5 minutes for 1M (bench/ B5 measures latency and recall). The
    cells are trained on the rows there are; the index is rebuilt when the gallery has doubled since,
    so that the cells keep matching the data."""

    def __init__(self, dim: int, ann_threshold: int = 50_000):
        self.dim = dim
        self.ann_threshold = ann_threshold
        self.ids = np.zeros(0, dtype=np.int64)
        self.labels: list[str | None] = []
        self.label_codes = np.zeros(0, dtype=np.int32)  # labels as numbers, for vectorised filters
        self._codes: dict[str | None, int] = {}
        self.matrix = np.zeros((0, dim), dtype=np.float32)
        self._ann = None  # faiss index over the same rows, built once the gallery is large
        self._ann_trained_on = 0

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def last_id(self) -> int:
        return int(self.ids[-1]) if len(self.ids) else 0

    def extend(self, rows: Iterable[tuple[int, str | None, np.ndarray]]) -> None:
        rows = list(rows)
        if rows:
            vectors = np.stack([np.asarray(vector, dtype=np.float32) for _, _, vector in rows])
            self.extend_arrays(np.array([row[0] for row in rows], dtype=np.int64), [row[1] for row in rows], vectors)

    def extend_arrays(self, ids: np.ndarray, labels: Sequence[str | None], vectors: np.ndarray) -> None:
        """Add rows given as arrays (ids, labels, vectors): no per-row Python objects for big loads."""
        if not len(ids):
            return
        vectors = np.asarray(vectors, dtype=np.float32)
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        self.ids = np.concatenate([self.ids, np.asarray(ids, dtype=np.int64)])
        self.labels.extend(labels)
        codes = [self._codes.setdefault(label, len(self._codes)) for label in labels]
        self.label_codes = np.concatenate([self.label_codes, np.asarray(codes, dtype=np.int32)])
        self.matrix = np.concatenate([self.matrix, vectors]) if len(self.matrix) else vectors
        if len(self.ids) < self.ann_threshold:
            return
        if self._ann is None or len(self.ids) >= 2 * self._ann_trained_on:
            self._build_ann()
        else:
            self._ann.add(vectors)

    def _build_ann(self) -> None:
        import faiss

        rows = len(self.matrix)
        # ~4 sqrt(N) cells; a query reads 16 of them. On 1M clustered 1280-d vectors (bench B5) that
        # is ~3 ms per query at recall@10 >= 0.99, and ~2.5 minutes to build on 2 cores.
        cells = int(np.clip(round(4 * np.sqrt(rows)), 1, 4096))
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFFlat(quantizer, self.dim, cells, faiss.METRIC_INNER_PRODUCT)
        # k-means on a sample: 40 rows per cell is what FAISS asks for, more only costs time.
        sample = np.random.default_rng(0).choice(rows, min(rows, 40 * cells), replace=False)
        index.train(self.matrix[np.sort(sample)])
        index.add(self.matrix)
        index.nprobe = min(cells, 16)
        index.parallel_mode = 1  # one query at a time: spread its cells over the threads
        self._ann, self._ann_trained_on = index, rows

    def describe(self) -> str:
        if self._ann is None:
            return f"exact, {len(self)} rows"
        return f"IVF-Flat, {self._ann.nlist} cells, nprobe {self._ann.nprobe}, {self._ann.ntotal} rows"

    def search(self, query: np.ndarray, n: int, labels: Sequence[str] | None = None) -> list[Match]:
        """The `n` rows most similar to `query`; only rows labelled with one of `labels` when that
        leaves at least `n`, else all rows (the tutorial's breed filter, with a fallback)."""
        if not len(self.ids) or n <= 0:
            return []
        query = np.asarray(query, dtype=np.float32)
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        if labels:
            wanted = [self._codes[label] for label in labels if label in self._codes]
            allowed = np.isin(self.label_codes, wanted)
            if int(allowed.sum()) >= n:
                # The IVF cells read hold enough of the labels' rows unless the labels are rare; then
                # the exact search over just those rows is cheap.
                found = self._search_ann(query, n, allowed) if self._ann is not None else []
                return found if len(found) == n else self._exact(query, n, np.flatnonzero(allowed))
        if self._ann is not None:
            return self._search_ann(query, n)
        return self._exact(query, n, None)

    def _search_ann(self, query: np.ndarray, n: int, allowed: np.ndarray | None = None) -> list[Match]:
        """IVF search, over the rows where `allowed` is true when given (a bitmap selector: FAISS skips
        the other rows inside the cells it reads; 100k rows, 4 of 120 labels: 3 ms, was 7 ms exact)."""
        import faiss

        params = None
        if allowed is not None:
            bitmap = np.packbits(allowed, bitorder="little")  # row i is bit i; alive for the search
            params = faiss.SearchParametersIVF(
                sel=faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap)), nprobe=self._ann.nprobe
            )
        similarities, rows = self._ann.search(query[None, :], n, params=params)
        return [self._match(int(r), float(s)) for r, s in zip(rows[0], similarities[0]) if r >= 0]

    def _exact(self, query: np.ndarray, n: int, rows: np.ndarray | None) -> list[Match]:
        candidates = self.matrix if rows is None else self.matrix[rows]
        similarities = candidates @ query
        top = np.argpartition(-similarities, min(n, len(similarities)) - 1)[:n]
        top = top[np.argsort(-similarities[top])]
        return [self._match(int(i if rows is None else rows[i]), float(similarities[i])) for i in top]

    def _match(self, row: int, similarity: float) -> Match:
        # float32 rounding can put a vector's similarity to itself a hair over 1.
        return Match(id=int(self.ids[row]), label=self.labels[row], similarity=min(1.0, max(-1.0, similarity)))


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


def gallery_label(given: str | None, given_source: str, analysis: Any) -> tuple[str | None, str]:
    """The label a gallery photo gets, and where it came from: the given one; else the predicted breed
    for a dog (an ImageAnalysis); else none."""
    given = (given or "").strip() or None
    if given:
        return given, given_source
    return (analysis.top_breeds(1)[0][0], "predicted") if analysis.is_dog else (None, "none")


def labelled_images(folder: str | Path) -> list[tuple[Path, str | None]]:
    """Image files under `folder` with their labels, the tutorial's layout: `<folder>/<label>/<file>`;
    files directly in `folder` have no label."""
    root = Path(folder)
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            parent = path.parent.relative_to(root)
            found.append((path, parent.parts[0] if parent.parts else None))
    return found
