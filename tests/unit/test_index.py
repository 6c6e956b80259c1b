"""Gallery store (SQLite and PostgreSQL through SQLAlchemy) and the in-memory vector index."""

import datetime as dt

import numpy as np
import pytest

from backend.models.index import GalleryStore, VectorIndex, labelled_images
from shared.errors import IdempotencyConflict, InvalidLabel, PhotoNotFound
from tests.conftest import SEED
from tests.postgres_server import PostgresServer


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_exact_search_ranks_by_cosine_similarity():
    index = VectorIndex(dim=3)
    index.extend([(1, "a", unit([1, 0, 0])), (2, "b", unit([1, 1, 0])), (3, "c", unit([0, 0, 1]))])
    matches = index.search(unit([1, 0.1, 0]), n=2)
    assert [m.id for m in matches] == [1, 2]
    assert matches[0].similarity > matches[1].similarity
    assert index.search(unit([1, 0, 0]), n=10)[0].similarity == pytest.approx(1.0)


def test_breed_filter_and_its_fallback():
    index = VectorIndex(dim=2)
    index.extend([(1, "husky", unit([1, 0])), (2, "pug", unit([0.9, 0.1])), (3, "husky", unit([0, 1]))])
    # Filtered: only huskies, even though the pug is closer.
    assert [m.id for m in index.search(unit([1, 0]), n=2, labels=["husky"])] == [1, 3]
    # Too few huskies for n=3: all photos instead.
    assert {m.id for m in index.search(unit([1, 0]), n=3, labels=["husky", "beagle"])} == {1, 2, 3}
    assert [m.id for m in index.search(unit([1, 0]), n=1, labels=["beagle"])] == [1]


def test_ann_index_takes_over_for_large_galleries_with_high_recall():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 32))
    vectors = centres[rng.integers(0, 20, 3000)] + 0.3 * rng.normal(size=(3000, 32))
    exact, ann = VectorIndex(32, ann_threshold=10**9), VectorIndex(32, ann_threshold=1000)
    rows = [(i + 1, None, v) for i, v in enumerate(vectors)]
    exact.extend(rows[:1500])
    exact.extend(rows[1500:])
    ann.extend(rows[:1500])
    ann.extend(rows[1500:])  # built at 1,500, then grown
    assert ann._ann is not None and ann._ann.ntotal == 3000 and exact._ann is None
    queries = centres[:10] + 0.3 * rng.normal(size=(10, 32))
    recall = np.mean(
        [len({m.id for m in exact.search(q, 10)} & {m.id for m in ann.search(q, 10)}) / 10 for q in queries]
    )
    assert recall >= 0.95


def test_breed_filter_on_the_ann_index_keeps_to_the_breeds_with_high_recall():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(20, 32))
    kinds = rng.integers(0, 20, 3000)
    vectors = centres[kinds] + 0.3 * rng.normal(size=(3000, 32))
    labels = [f"breed-{k % 6}" for k in kinds]
    labels[7] = "rare"  # one photo of its kind
    rows = [(i + 1, label, v) for i, (label, v) in enumerate(zip(labels, vectors))]
    exact, ann = VectorIndex(32, ann_threshold=10**9), VectorIndex(32, ann_threshold=1000)
    exact.extend(rows), ann.extend(rows)
    # As the app filters: by the breeds the model sees in the photo, so the photos of those breeds lie
    # near the query (centres 0, 1, 6, 7, 12, 13 are breed-0 and breed-1 photos).
    wanted = ["breed-0", "breed-1"]
    queries = centres[[0, 1, 6, 7, 12, 13]] + 0.3 * rng.normal(size=(6, 32))
    recalls = []
    for q in queries:
        found = ann.search(q, 10, wanted)
        assert len(found) == 10 and {m.label for m in found} <= set(wanted)
        recalls.append(len({m.id for m in found} & {m.id for m in exact.search(q, 10, wanted)}) / 10)
    assert np.mean(recalls) >= 0.95
    # A label with fewer photos than asked for: every photo is a candidate (the fallback), as when exact.
    assert [m.id for m in ann.search(vectors[7], 1, ["rare"])] == [8]


@pytest.fixture(scope="module")
def postgres():
    with PostgresServer() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    """The same store code on the embedded default (SQLite) and on a cluster's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gallery.db'}"
    return request.getfixturevalue("postgres").new_database(tmp_path.name.lower())


def test_store_add_is_durable_and_a_new_process_sees_it(store_url):
    url = store_url
    store = GalleryStore(url)
    photo = store.add(unit([1, 2, 3]), b"jpeg-bytes", "model-a", "husky", "user", "upload:x.jpg")
    store.add(unit([3, 2, 1]), b"other", "model-b", None, "none", "upload:y.jpg")
    store.engine.dispose()  # as if the app stopped

    reopened = GalleryStore(url)
    assert reopened.count() == 2 and reopened.count("model-a") == 1
    assert reopened.thumbnails([photo.id, 999]) == {photo.id: b"jpeg-bytes"}
    rows = reopened.rows_after(0, "model-a")
    assert [(r[0], r[1]) for r in rows] == [(photo.id, "husky")]
    np.testing.assert_allclose(rows[0][2], unit([1, 2, 3]))
    assert reopened.rows_after(photo.id, "model-a") == []


def test_a_marker_is_claimed_once(store_url):
    first, second = GalleryStore(store_url), GalleryStore(store_url)
    assert first.claim("seeded:m") is True
    assert second.claim("seeded:m") is False
    first.release("seeded:m")
    assert second.claim("seeded:m") is True
    # When it was claimed, as every replica reads it (how long a claim to seed holds the others back).
    claimed_at = first.marker_at("seeded:m")
    assert claimed_at.tzinfo is not None
    assert abs((dt.datetime.now(dt.UTC) - claimed_at).total_seconds()) < 60
    assert first.marker_at("seeded:m:done") is None


def test_folder_layout_gives_labels():
    found = {path.name: label for path, label in labelled_images(SEED)}
    assert found["chelsea.png"] == "cat"
    assert found["dog-on-porch.jpg"] is None  # top-level files: the model predicts the label
    assert "README.md" not in found


def test_replicas_starting_together_on_one_new_database_all_start(store_url):
    """Each Gallery replica creates the tables it needs; on PostgreSQL, CREATE TABLE IF NOT EXISTS from
    several connections at once can fail on a unique violation unless they take turns."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(6) as pool:
        stores = list(pool.map(lambda _: GalleryStore(store_url), range(6)))
    stores[0].add(unit([1, 0, 0]), b"jpeg", "model-a", "x", "user", "upload:a.jpg")
    assert all(store.count() == 1 for store in stores)


def test_removed_and_relabelled_rows_are_searched_as_they_now_are():
    index = VectorIndex(dim=2)
    index.extend([(1, "husky", unit([1, 0])), (2, "pug", unit([0.9, 0.1])), (3, "husky", unit([0, 1]))])
    index.remove(1)
    assert len(index) == 2
    assert [m.id for m in index.search(unit([1, 0]), n=3)] == [2, 3]
    # The breed filter counts only live rows: one husky left is too few for n=2, so all rows answer.
    assert [m.id for m in index.search(unit([1, 0]), n=2, labels=["husky"])] == [2, 3]
    index.relabel(2, "husky")
    assert [(m.id, m.label) for m in index.search(unit([1, 0]), n=2, labels=["husky"])] == [(2, "husky"), (3, "husky")]
    index.remove(99)  # not here (another embedder's photo, or deleted twice): nothing happens
    assert index.last_id == 3


def test_removed_rows_leave_the_ann_index_too():
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(2000, 16))
    index = VectorIndex(16, ann_threshold=1000)
    index.extend([(i + 1, "dog" if i % 2 else "cat", v) for i, v in enumerate(vectors)])
    assert index._ann is not None
    nearest = index.search(vectors[10], 1)[0].id
    assert nearest == 11
    index.remove(11)
    assert 11 not in {m.id for m in index.search(vectors[10], 20)}
    assert 11 not in {m.id for m in index.search(vectors[10], 20, labels=["cat"])}


def test_listing_relabelling_and_deleting_photos_with_a_change_log(store_url):
    store = GalleryStore(store_url)
    ids = [
        store.add(unit([1, i, 0]), f"jpeg-{i}".encode(), "m", label, "folder", f"upload:{i}.jpg", added_by="ops").id
        for i, label in enumerate(["husky", "pug", "husky", None])
    ]
    page = store.page(offset=0, limit=2)
    assert page.total == 4 and [p.id for p in page.photos] == [ids[3], ids[2]]  # newest first
    assert [p.id for p in store.page(offset=2, limit=2).photos] == [ids[1], ids[0]]
    huskies = store.page(label="husky")
    assert huskies.total == 2 and {p.id for p in huskies.photos} == {ids[0], ids[2]}
    first = store.get(ids[0])
    assert (first.label, first.source, first.added_by) == ("husky", "upload:0.jpg", "ops")
    assert first.added_at.tzinfo is not None

    start = store.last_change_id()
    relabelled = store.relabel(ids[1], "  malamute ")
    assert (relabelled.label, relabelled.label_source) == ("malamute", "user")
    store.delete(ids[2])
    with pytest.raises(PhotoNotFound):
        store.delete(ids[2])
    with pytest.raises(PhotoNotFound):
        store.get(ids[2])
    with pytest.raises(PhotoNotFound):
        store.relabel(ids[2], "x")
    assert store.thumbnails([ids[2]]) == {} and store.count() == 3
    changes = store.changes_after(start)
    assert [(c.photo_id, c.deleted, c.label) for c in changes] == [(ids[1], False, "malamute"), (ids[2], True, None)]
    assert store.changes_after(changes[-1].id) == []

    # A replica's index, built before the changes, catches up from the log.
    index = VectorIndex(3)
    index.extend(
        [(ids[0], "husky", unit([1, 0, 0])), (ids[1], "pug", unit([1, 1, 0])), (ids[2], "husky", unit([1, 2, 0]))]
    )
    index.apply(changes)
    assert {(m.id, m.label) for m in index.search(unit([1, 1, 0]), n=5)} == {(ids[0], "husky"), (ids[1], "malamute")}


@pytest.mark.parametrize(
    "label, problem",
    [
        ("rex\x00", "U+0000"),
        ("line\nbreak", "U+000A"),
        ("esc\x1b[31m", "U+001B"),
        ("x" * 101, "at most 100"),
    ],
)
def test_labels_with_control_characters_or_too_long_are_refused_alike_on_both_stores(store_url, label, problem):
    store = GalleryStore(store_url)
    with pytest.raises(InvalidLabel, match=problem.replace("+", r"\+")):
        store.add(unit([1, 0]), b"j", "m", label, "user", "upload:x")
    photo = store.add(unit([1, 0]), b"j", "m", "  Husky  ", "user", "upload:x")
    with pytest.raises(InvalidLabel):
        store.relabel(photo.id, label)
    assert store.get(photo.id).label == "Husky" and store.count() == 1
    # Unicode that is text (accents, emoji, scripts) is kept as typed.
    assert store.relabel(photo.id, "Chien de Saint-Hubert 🐕 柴犬").label == "Chien de Saint-Hubert 🐕 柴犬"


def test_an_add_sent_again_with_its_idempotency_key_stores_one_photo(store_url):
    store = GalleryStore(store_url)
    photo = dict(embedding=unit([1, 0]), thumbnail=b"j", embedder="m", label="pug", label_source="user", source="s")
    first, created = store.add_once("key:writer", "k-1", "sha-a", **photo)
    again, created_again = store.add_once("key:writer", "k-1", "sha-a", **photo)
    assert created and not created_again and again == first and store.count() == 1
    # The key belongs to its caller: another caller's same key is another add.
    _, other_created = store.add_once("key:other", "k-1", "sha-a", **photo)
    assert other_created and store.count() == 2
    with pytest.raises(IdempotencyConflict):
        store.add_once("key:writer", "k-1", "sha-b", **photo)
    # Once the photo is deleted, the key may store again.
    store.delete(first.id)
    _, created_after_delete = store.add_once("key:writer", "k-1", "sha-a", **photo)
    assert created_after_delete


def test_a_gallery_from_before_added_by_is_upgraded_keeping_its_photos(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE photos (id INTEGER PRIMARY KEY, label VARCHAR(200), label_source VARCHAR(20),"
            " source VARCHAR(1000), added_at DATETIME, embedder VARCHAR(200), embedding BLOB, thumbnail BLOB)"
        )
        db.execute(
            "INSERT INTO photos VALUES (1, 'husky', 'folder', 'seed:a.jpg', '2026-01-01 00:00:00', 'm', ?, ?)",
            (unit([1, 0]).tobytes(), b"j"),
        )
    store = GalleryStore(f"sqlite:///{path}")
    old = store.get(1)
    assert (old.label, old.added_by) == ("husky", None)
    assert store.thumbnails([1]) == {1: b"j"} and store.page(label="husky").total == 1
    newest = store.add(unit([0, 1]), b"j", "m", None, "none", "upload:x", added_by="ops")
    assert (newest.id, newest.added_by) == (2, "ops")
    store.delete(2)  # the old table would give id 2 again to the next add
    assert store.add(unit([0, 1]), b"j", "m", None, "none", "upload:y").id == 3
    assert GalleryStore(f"sqlite:///{path}").get(3).source == "upload:y"  # upgraded once, opened again as is


def test_a_deleted_photos_id_is_never_given_to_another(store_url):
    store = GalleryStore(store_url)
    first = store.add(unit([1, 0]), b"j", "m", "a", "user", "s")
    store.delete(first.id)
    assert store.add(unit([1, 0]), b"j", "m", "b", "user", "s").id > first.id
