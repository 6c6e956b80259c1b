"""The gallery: photos, their embeddings and metadata in a database, searched in memory.

Pure code (no ray, no fastapi):
- `GalleryStore`: rows in SQLite (default, under the data directory) or any SQLAlchemy URL
  (PostgreSQL on a cluster: `postgresql+psycopg://USER@HOST:PORT/DB`). An add is durable when `add`
  returns: one transaction, committed, and SQLite in WAL mode with synchronous=FULL. Relabels and
  deletes are also written to a change log, which replicas read to keep their indexes in step.
- `VectorIndex`: the embeddings as one L2-normalised matrix; exact search is a matrix-vector product,
  and past `ann_threshold` rows a FAISS IVF index answers instead. `search` can keep only rows whose
  label is among some breeds (the tutorial's filter by predicted breeds) and falls back to all rows
  when that leaves fewer than asked for.
"""

from __future__ import annotations

import datetime as dt
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    Boolean,
    DateTime,
    Integer,
    LargeBinary,
    String,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from shared.errors import IdempotencyConflict, InvalidLabel, PhotoNotFound

MAX_LABEL_CHARS = 100
IDEMPOTENCY_TTL = dt.timedelta(days=1)  # how long a retried add with the same key returns the first answer


class Base(DeclarativeBase):
    pass


class Photo(Base):
    __tablename__ = "photos"
    # SQLite would otherwise give a deleted photo's id to the next add, which replicas (and caches of
    # thumbnails by id) would take for the photo they already had.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    label: Mapped[str | None] = mapped_column(String(200), index=True)
    label_source: Mapped[str] = mapped_column(String(20))  # "folder", "user" or "predicted"
    source: Mapped[str] = mapped_column(String(1000))  # where the photo came from (file, URL, upload)
    added_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    embedder: Mapped[str] = mapped_column(String(200), index=True)  # the model whose space the embedding is in
    embedding: Mapped[bytes] = mapped_column(LargeBinary)  # float32, L2-normalised
    thumbnail: Mapped[bytes] = mapped_column(LargeBinary)  # JPEG
    added_by: Mapped[str | None] = mapped_column(String(100), nullable=True)  # an API key's name, "ui", "cli"


class Change(Base):
    """A relabel or a delete, in order: each replica applies those after the last it saw."""

    __tablename__ = "photo_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    photo_id: Mapped[int] = mapped_column(Integer, index=True)
    deleted: Mapped[bool] = mapped_column(Boolean)
    label: Mapped[str | None] = mapped_column(String(200), nullable=True)  # the new label, if relabelled
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class IdempotentAdd(Base):
    """The answer to an add sent with an Idempotency-Key: the same caller, key and content again within
    IDEMPOTENCY_TTL get this photo instead of a second one."""

    __tablename__ = "idempotent_adds"

    caller: Mapped[str] = mapped_column(String(100), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    content_sha256: Mapped[str] = mapped_column(String(64))
    photo_id: Mapped[int] = mapped_column(Integer, index=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


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
    added_by: str | None = None


@dataclass(frozen=True)
class GalleryPage:
    total: int  # photos that match the filter, on every page
    photos: list[StoredPhoto]


@dataclass(frozen=True)
class PhotoChange:
    id: int
    photo_id: int
    deleted: bool
    label: str | None


def clean_label(label: str | None) -> str | None:
    """A label as stored: trimmed, None when empty; InvalidLabel when it holds control characters
    (PostgreSQL refuses NUL; a newline or escape code would garble lists and logs) or is too long.
    The same rule for every store and every face."""
    label = (label or "").strip()
    if not label:
        return None
    bad = next((c for c in label if unicodedata.category(c) in ("Cc", "Cs")), None)
    if bad is not None:
        raise InvalidLabel(f"label: control character U+{ord(bad):04X} is not allowed")
    if len(label) > MAX_LABEL_CHARS:
        raise InvalidLabel(f"label: at most {MAX_LABEL_CHARS} characters (got {len(label)})")
    return label


def _utc(at: dt.datetime) -> dt.datetime:
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)  # SQLite hands back naive datetimes (stored as UTC)


def _stored(photo: Photo) -> StoredPhoto:
    return StoredPhoto(photo.id, photo.label, photo.label_source, photo.source, _utc(photo.added_at), photo.added_by)


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
                self._upgrade()
                return
            except DBAPIError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.1 * (attempt + 1))

    def _upgrade(self) -> None:
        """A gallery made by an earlier version keeps every photo: its table gets the nullable columns
        added since (added_by) and, on SQLite, ids that are never reused (rebuilt with AUTOINCREMENT)."""
        table = Photo.__tablename__
        with self.engine.begin() as connection:
            present = [column["name"] for column in inspect(connection).get_columns(table)]
            if self.engine.dialect.name == "sqlite":
                created_as = connection.execute(
                    text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :name"), {"name": table}
                ).scalar_one()
                if "AUTOINCREMENT" not in created_as.upper():
                    old = f"{table}_before_upgrade"
                    connection.execute(text(f"ALTER TABLE {table} RENAME TO {old}"))
                    for index in inspect(connection).get_indexes(old):
                        connection.execute(text(f"DROP INDEX {index['name']}"))
                    Photo.__table__.create(connection)
                    columns = ", ".join(present)
                    connection.execute(text(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {old}"))
                    connection.execute(text(f"DROP TABLE {old}"))
                    return
            for column in Photo.__table__.columns:
                if column.name not in present:
                    kind = column.type.compile(dialect=self.engine.dialect)
                    connection.execute(text(f"ALTER TABLE {table} ADD COLUMN {column.name} {kind}"))

    def ping(self) -> None:
        """Raises when the database does not answer."""
        with self.engine.connect() as connection:
            connection.execute(select(1))

    def add(
        self,
        embedding: np.ndarray,
        thumbnail: bytes,
        embedder: str,
        label: str | None,
        label_source: str,
        source: str,
        added_by: str | None = None,
    ) -> StoredPhoto:
        with Session(self.engine) as session, session.begin():
            return self._insert(
                session,
                embedding=embedding,
                thumbnail=thumbnail,
                embedder=embedder,
                label=label,
                label_source=label_source,
                source=source,
                added_by=added_by,
            )

    @staticmethod
    def _insert(session: Session, embedding: np.ndarray, label: str | None, **columns: Any) -> StoredPhoto:
        photo = Photo(
            label=clean_label(label),
            added_at=dt.datetime.now(dt.UTC),
            embedding=np.asarray(embedding, dtype=np.float32).tobytes(),
            **columns,
        )
        session.add(photo)
        session.flush()  # assigns the id
        return _stored(photo)

    def add_once(self, caller: str, key: str, content_sha256: str, **photo: Any) -> tuple[StoredPhoto, bool]:
        """`add`, unless `caller` already added this content with this Idempotency-Key within
        IDEMPOTENCY_TTL: then that photo, and False for "not created". The photo and its key are one
        transaction, so two concurrent sends store one photo."""
        if (first := self._idempotent_answer(caller, key, content_sha256)) is not None:
            return first, False
        with Session(self.engine) as session:
            # An expired record of the key makes way for the new one.
            with session.begin():
                session.execute(
                    delete(IdempotentAdd).where(
                        IdempotentAdd.caller == caller,
                        IdempotentAdd.key == key,
                        IdempotentAdd.at < dt.datetime.now(dt.UTC) - IDEMPOTENCY_TTL,
                    )
                )
        try:
            with Session(self.engine) as session, session.begin():
                stored = self._insert(session, **photo)
                session.add(
                    IdempotentAdd(
                        caller=caller, key=key, content_sha256=content_sha256, photo_id=stored.id, at=stored.added_at
                    )
                )
        except IntegrityError:  # a concurrent send of the same key won; its photo is the answer
            if (first := self._idempotent_answer(caller, key, content_sha256)) is not None:
                return first, False
            raise
        return stored, True

    def _idempotent_answer(self, caller: str, key: str, content_sha256: str) -> StoredPhoto | None:
        with Session(self.engine) as session:
            record = session.get(IdempotentAdd, (caller, key))
            if record is None or _utc(record.at) < dt.datetime.now(dt.UTC) - IDEMPOTENCY_TTL:
                return None
            if record.content_sha256 != content_sha256:
                raise IdempotencyConflict(
                    "Idempotency-Key: already used for another photo or label; use a new key for a new add"
                )
            photo = session.get(Photo, record.photo_id)
            return _stored(photo) if photo is not None else None

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

    def page(self, offset: int = 0, limit: int = 50, label: str | None = None) -> GalleryPage:
        """Photos newest first, `limit` of them from `offset`, with the total; only `label`'s if given."""
        where = [Photo.label == label] if label is not None else []
        with Session(self.engine) as session:
            total = session.scalar(select(func.count(Photo.id)).where(*where))
            photos = session.scalars(
                select(Photo).where(*where).order_by(Photo.id.desc()).offset(offset).limit(limit)
            ).all()
            return GalleryPage(int(total), [_stored(photo) for photo in photos])

    def get(self, photo_id: int) -> StoredPhoto:
        with Session(self.engine) as session:
            photo = session.get(Photo, photo_id)
            if photo is None:
                raise PhotoNotFound(f"No photo {photo_id} in the gallery.")
            return _stored(photo)

    def relabel(self, photo_id: int, label: str | None) -> StoredPhoto:
        """Give a photo a label a person chose (None: no label), logged for the replicas' indexes."""
        label = clean_label(label)
        with Session(self.engine) as session, session.begin():
            photo = session.get(Photo, photo_id)
            if photo is None:
                raise PhotoNotFound(f"No photo {photo_id} in the gallery.")
            photo.label, photo.label_source = label, "user"
            session.add(Change(photo_id=photo_id, deleted=False, label=label, at=dt.datetime.now(dt.UTC)))
            return _stored(photo)

    def delete(self, photo_id: int) -> None:
        """Remove a photo: its row (image and embedding with it) and its idempotency records; logged
        for the replicas' indexes."""
        with Session(self.engine) as session, session.begin():
            if not session.execute(delete(Photo).where(Photo.id == photo_id)).rowcount:
                raise PhotoNotFound(f"No photo {photo_id} in the gallery.")
            session.execute(delete(IdempotentAdd).where(IdempotentAdd.photo_id == photo_id))
            session.add(Change(photo_id=photo_id, deleted=True, label=None, at=dt.datetime.now(dt.UTC)))

    def changes_after(self, last_change_id: int) -> list[PhotoChange]:
        """Relabels and deletes since `last_change_id`, in order."""
        with Session(self.engine) as session:
            rows = session.scalars(select(Change).where(Change.id > last_change_id).order_by(Change.id)).all()
            return [PhotoChange(row.id, row.photo_id, row.deleted, row.label) for row in rows]

    def last_change_id(self) -> int:
        with Session(self.engine) as session:
            return int(session.scalar(select(func.max(Change.id))) or 0)

    def count(self, embedder: str | None = None) -> int:
        query = select(func.count(Photo.id))
        if embedder:
            query = query.where(Photo.embedder == embedder)
        with Session(self.engine) as session:
            return int(session.scalar(query))

    def claim(self, marker: str) -> bool:
        """True for exactly one caller across processes: the first to record `marker`."""
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
        return _utc(found.at) if found is not None else None

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
    so that the cells keep matching the data.

    A removed row stays in the arrays, marked dead, and no search returns it (in FAISS too, through the
    same bitmap as the breed filter): removing it from an IVF index would mean a rebuild."""

    def __init__(self, dim: int, ann_threshold: int = 50_000):
        self.dim = dim
        self.ann_threshold = ann_threshold
        self.ids = np.zeros(0, dtype=np.int64)
        self.labels: list[str | None] = []
        self.label_codes = np.zeros(0, dtype=np.int32)  # labels as numbers, for vectorised filters
        self._codes: dict[str | None, int] = {}
        self.matrix = np.zeros((0, dim), dtype=np.float32)
        self.alive = np.zeros(0, dtype=bool)
        self._ann = None  # faiss index over the same rows, built once the gallery is large
        self._ann_trained_on = 0

    def __len__(self) -> int:
        return int(self.alive.sum())

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
        self.alive = np.concatenate([self.alive, np.ones(len(ids), dtype=bool)])
        if len(self.ids) < self.ann_threshold:
            return
        if self._ann is None or len(self.ids) >= 2 * self._ann_trained_on:
            self._build_ann()
        else:
            self._ann.add(vectors)

    def _row(self, photo_id: int) -> int | None:
        row = int(np.searchsorted(self.ids, photo_id))  # ids only grow: rows come in id order
        return row if row < len(self.ids) and self.ids[row] == photo_id and self.alive[row] else None

    def remove(self, photo_id: int) -> None:
        if (row := self._row(photo_id)) is not None:
            self.alive[row] = False

    def relabel(self, photo_id: int, label: str | None) -> None:
        if (row := self._row(photo_id)) is not None:
            self.labels[row] = label
            self.label_codes[row] = self._codes.setdefault(label, len(self._codes))

    def apply(self, changes: Iterable[PhotoChange]) -> None:
        """Relabels and deletes from the store's change log (rows not here are skipped)."""
        for change in changes:
            if change.deleted:
                self.remove(change.photo_id)
            else:
                self.relabel(change.photo_id, change.label)

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
        if not len(self) or n <= 0:
            return []
        query = np.asarray(query, dtype=np.float32)
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        if labels:
            wanted = [self._codes[label] for label in labels if label in self._codes]
            allowed = np.isin(self.label_codes, wanted) & self.alive
            if int(allowed.sum()) >= n:
                # The IVF cells read hold enough of the labels' rows unless the labels are rare; then
                # the exact search over just those rows is cheap.
                found = self._search_ann(query, n, allowed) if self._ann is not None else []
                return found if len(found) == n else self._exact(query, n, np.flatnonzero(allowed))
        everyone = None if self.alive.all() else self.alive
        if self._ann is not None:
            return self._search_ann(query, n, everyone)
        return self._exact(query, n, None if everyone is None else np.flatnonzero(everyone))

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
