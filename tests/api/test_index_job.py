"""`retriever index` (Ray Data batch inference) run as a user runs it, into the running app's gallery."""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.conftest import PHOTOS, ROOT, SEED_PHOTOS

pytestmark = pytest.mark.serve


def test_index_a_folder_and_find_its_photos_through_the_running_app(serve_app, gallery_database, tmp_path):
    folder = tmp_path / "my-dogs"
    (folder / "Siberian husky").mkdir(parents=True)
    # A photo the gallery does not hold yet: the seed dog, mirrored and cropped.
    Image.open(SEED_PHOTOS["dog"]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).crop((60, 40, 700, 560)).save(
        folder / "Siberian husky" / "porch-mirrored.jpg", quality=95
    )
    shutil.copy(PHOTOS["dog2"], folder / "unsorted-dog.jpg")
    (folder / "notes.jpg").write_text("not a photo")

    retriever = Path(sys.executable).parent / "retriever"
    done = subprocess.run(
        [str(retriever), "index", str(folder), "--database-url", gallery_database],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Added 2 photos" in done.stdout
    assert "Skipped file:notes.jpg" in done.stdout

    query = (folder / "Siberian husky" / "porch-mirrored.jpg").read_bytes()
    deadline = time.monotonic() + 30  # the gallery replica's refresh interval is 1 s
    while True:
        response = httpx.post(f"{serve_app}/api/v1/photos", files={"file": ("q.jpg", query, "image/jpeg")}, timeout=60)
        best = response.json()["top_matches"][0]
        if best["similarity"] > 0.999 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert best["class"] == "Siberian husky"
    assert best["similarity"] == pytest.approx(1.0, abs=1e-3)
