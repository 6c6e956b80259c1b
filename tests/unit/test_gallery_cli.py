"""`retriever gallery list|relabel|delete` on a gallery store of its own (a temp SQLite file): what an
operator sees and what the store holds afterwards."""

import numpy as np
from typer.testing import CliRunner

from backend.models.index import GalleryStore
from retriever.cli import cli


def gallery(tmp_path) -> tuple[str, list[int]]:
    url = f"sqlite:///{tmp_path / 'gallery.db'}"
    store = GalleryStore(url)
    ids = [
        store.add(np.ones(4, np.float32), b"j", "m", label, "folder", f"seed:{i}.jpg", added_by=by).id
        for i, (label, by) in enumerate([("husky", None), ("pug", "ops"), ("husky", "alice")])
    ]
    return url, ids


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, ["gallery", *args], input=input, terminal_width=200)


def test_list_shows_the_newest_first_with_who_added_them(tmp_path):
    url, ids = gallery(tmp_path)
    listed = run("list", "--database-url", url)
    assert listed.exit_code == 0 and "Gallery photos 1-3 of 3" in listed.output
    rows = [line for line in listed.output.splitlines() if "seed:" in line]
    assert [row.split("│")[1].strip() for row in rows] == [str(i) for i in reversed(ids)]
    assert "alice" in rows[0] and "ops" in rows[1]
    huskies = run("list", "--label", "husky", "--database-url", url)
    assert "Gallery photos 1-2 of 2 labelled 'husky'" in huskies.output and "pug" not in huskies.output


def test_relabel_and_delete_change_the_store_and_say_so(tmp_path):
    url, ids = gallery(tmp_path)
    assert run("relabel", str(ids[1]), "Siberian husky", "--database-url", url).output.strip() == (
        f"Photo {ids[1]}: labelled 'Siberian husky'."
    )
    refused = run("relabel", str(ids[1]), "bad\x07label", "--database-url", url)
    assert refused.exit_code == 1 and "U+0007" in refused.output
    assert GalleryStore(url).get(ids[1]).label == "Siberian husky"

    kept = run("delete", str(ids[0]), "--database-url", url, input="n\n")
    assert kept.exit_code == 1 and GalleryStore(url).count() == 3  # not confirmed: nothing deleted
    deleted = run("delete", str(ids[0]), "999", "--yes", "--database-url", url)
    assert deleted.exit_code == 1 and "Deleted 1 photo(s)." in deleted.output and "No such photo: 999" in deleted.output
    assert GalleryStore(url).count() == 2
