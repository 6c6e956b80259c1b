"""The Dog photo tab in Debian's Chromium: upload a photo, see breeds and similar photos."""

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Locator, Page, expect

from backend.models.vision import BreedClassifier, dog_breeds
from shared.config import Limits
from shared.images import decode_image, heat_overlay, to_model_input
from tests.conftest import PHOTOS

pytestmark = pytest.mark.serve

TIMEOUT_MS = 120_000


@pytest.fixture
def tab(page: Page, serve_app: str) -> Page:
    page.goto(serve_app + "/ui/")
    page.get_by_role("tab", name="Dog photo").click()
    expect(page.locator("#find")).to_be_visible(timeout=TIMEOUT_MS)
    return page


def upload(page: Page, name: str) -> None:
    page.locator("#photo input[type=file]").set_input_files(str(PHOTOS[name]))
    expect(page.locator("#photo img")).to_be_visible(timeout=TIMEOUT_MS)


def similar_photos(page: Page) -> list[tuple[int, str]]:
    """The similar photos the page shows: (natural width of the loaded image, its caption) each. Waits
    until every image has loaded (or failed: then its width is 0)."""
    gallery: Locator = page.locator("#similar")
    expect(gallery.locator("img").first).to_be_visible(timeout=TIMEOUT_MS)
    for image in gallery.locator("img").all():  # thumbnails load lazily: bring each into view
        image.scroll_into_view_if_needed()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#similar img')].every(img => img.complete)", timeout=TIMEOUT_MS
    )
    images = gallery.locator("img").evaluate_all("imgs => imgs.map(img => img.naturalWidth)")
    captions = gallery.locator(".caption-label").all_inner_texts()
    return list(zip(images, captions, strict=True))


def test_upload_dog_photo_and_see_breeds_and_similar_photos(tab: Page, screenshots_dir):
    upload(tab, "dog")
    tab.locator("#find").click()
    verdict = tab.locator("#photo-verdict")
    expect(verdict).to_contain_text("A dog", timeout=TIMEOUT_MS)
    expect(verdict).to_contain_text("malamute")
    expect(verdict).to_contain_text(re.compile(r"Answered by dog-breeds/\d+"))  # a registered version
    expect(tab.locator("#breeds")).to_contain_text("malamute")
    shown = similar_photos(tab)
    assert len(shown) == 6  # the slider's default
    assert all(width > 0 for width, _ in shown), shown  # every thumbnail really loaded
    # The gallery's two dogs (labelled with their predicted breed) come before anything else.
    first_two = [caption.split(" · ")[0] for _, caption in shown[:2]]
    assert all(label in dog_breeds() for label in first_two), shown
    assert all(re.fullmatch(r".+ · similarity -?\d\.\d\d", caption) for _, caption in shown), shown
    tab.screenshot(path=screenshots_dir / "dog-photo.png", full_page=True)


def test_an_image_url_gives_a_breed(tab: Page, image_server):
    """A working URL: the test's loopback image server, which is on the app's allowlist."""
    tab.locator("#photo-url textarea, #photo-url input").first.fill(f"{image_server.url}/photos/dog-on-porch.jpg")
    tab.locator("#find").click()
    expect(tab.locator("#photo-verdict")).to_contain_text("A dog", timeout=TIMEOUT_MS)
    expect(tab.locator("#breeds")).to_contain_text("malamute")


def test_cat_photo_is_not_a_dog(tab: Page, screenshots_dir):
    upload(tab, "cat")
    tab.locator("#find").click()
    expect(tab.locator("#photo-verdict")).to_contain_text("Not a dog", timeout=TIMEOUT_MS)
    expect(tab.locator("#photo-verdict")).to_contain_text("Egyptian cat")
    expect(tab.locator("#breeds")).to_be_hidden()
    assert all(width > 0 for width, _ in similar_photos(tab))
    tab.screenshot(path=screenshots_dir / "cat-photo.png", full_page=True)


def test_a_photo_added_through_the_ui_is_found_by_the_next_find(tab: Page):
    upload(tab, "dog2")
    tab.get_by_text("Add this photo to the gallery").click()
    tab.locator("#add-label textarea, #add-label input").first.fill("Siberian husky")
    tab.locator("#add").click()
    verdict = tab.locator("#photo-verdict")
    expect(verdict).to_contain_text("Added to the gallery as photo #", timeout=TIMEOUT_MS)
    expect(verdict).to_contain_text("Siberian husky (user)")
    tab.locator("#find").click()  # the same photo: identity is the point here
    expect(verdict).to_contain_text("A dog", timeout=TIMEOUT_MS)
    width, caption = similar_photos(tab)[0]
    assert width > 0 and caption == "Siberian husky · similarity 1.00"


def test_find_without_a_photo_says_what_to_do(tab: Page):
    tab.locator("#find").click()
    expect(tab.locator("#photo-verdict")).to_contain_text(
        "Upload a photo or give an image URL first", timeout=TIMEOUT_MS
    )


def test_blocked_url_shows_an_error(tab: Page):
    tab.locator("#photo-url textarea, #photo-url input").first.fill("http://169.254.169.254/latest/meta-data/")
    tab.locator("#find").click()
    expect(tab.locator("#photo-verdict")).to_contain_text("non-public address", timeout=TIMEOUT_MS)


def test_transparent_png_upload_is_handled_by_our_decoder(tab: Page, tmp_path):
    from PIL import Image

    rgba = Image.open(PHOTOS["dog"]).convert("RGBA")
    rgba.putalpha(200)
    path = tmp_path / "translucent-dog.png"
    rgba.save(path)
    tab.locator("#photo input[type=file]").set_input_files(str(path))
    expect(tab.locator("#photo img")).to_be_visible(timeout=TIMEOUT_MS)
    tab.locator("#find").click()
    expect(tab.locator("#photo-verdict")).to_contain_text("A dog", timeout=TIMEOUT_MS)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/not-an-image", "content type text/html"),
        ("/missing.jpg", "HTTP 404"),
        ("/slow", "did not answer within 10 s"),  # a URL that never answers: cut off, not a spinner
        ("/endless", "over the limit of 10 MiB"),  # one that streams forever
    ],
)
def test_image_urls_that_fail_show_why(tab: Page, image_server, path: str, message: str):
    tab.locator("#photo-url textarea, #photo-url input").first.fill(image_server.url + path)
    tab.locator("#find").click()
    verdict = tab.locator("#photo-verdict")
    expect(verdict).to_contain_text("Cannot use this photo", timeout=TIMEOUT_MS)
    expect(verdict).to_contain_text(message)
    assert "Traceback" not in verdict.inner_text()


def test_a_file_that_is_not_an_image_shows_an_error(tab: Page, tmp_path, screenshots_dir):
    fake = tmp_path / "holiday.jpg"
    fake.write_bytes(b"these are not the bytes of a JPEG " * 100)
    tab.locator("#photo input[type=file]").set_input_files(str(fake))
    tab.locator("#find").click()
    verdict = tab.locator("#photo-verdict")
    expect(verdict).to_contain_text("Cannot use this photo", timeout=TIMEOUT_MS)
    expect(verdict).to_contain_text("not an image")
    tab.screenshot(path=screenshots_dir / "not-an-image-upload.png", full_page=True)


def test_an_upload_over_the_size_cap_shows_the_limit(tab: Page, tmp_path, screenshots_dir):
    big = tmp_path / "huge.jpg"
    big.write_bytes(b"\xff\xd8\xff" + b"\0" * (10 * 2**20 + 1))  # 10 MiB + a few bytes: over max_image_bytes
    tab.locator("#photo input[type=file]").set_input_files(str(big))
    # Gradio's max_file_size is the API's max_image_bytes (ui/app.py, GradioUI): refused before it is uploaded.
    expect(tab.get_by_text('File(s) exceed the maximum allowed size of 10.0 Mb: "huge.jpg"')).to_be_visible(
        timeout=TIMEOUT_MS
    )
    tab.wait_for_timeout(1000)  # the toast slides in
    tab.screenshot(path=screenshots_dir / "upload-over-the-cap.png")  # the toast is fixed to the viewport


def test_show_where_it_looked_draws_the_heat_map_over_the_photo(tab: Page, screenshots_dir):
    """Ticking the box after a Find explains that photo; the image shown is the in-process overlay
    (a PNG, so pixel for pixel); unticking hides it, and a photo that is not a dog has none."""
    model = BreedClassifier.packaged()
    pixels = to_model_input(decode_image(PHOTOS["dog-bicycle"].read_bytes(), Limits()), model.input_spec)
    _, explanation = model.explain(pixels)
    expected = heat_overlay(pixels, explanation.heat)

    upload(tab, "dog-bicycle")
    tab.locator("#find").click()
    expect(tab.locator("#photo-verdict")).to_contain_text("A dog", timeout=TIMEOUT_MS)
    heat_map = tab.locator("#heat-map")
    expect(heat_map).to_be_hidden()
    tab.get_by_label("Show where it looked").check()
    expect(heat_map).to_contain_text(f"Where it looked for {explanation.breed}", timeout=TIMEOUT_MS)
    image = heat_map.locator("img")
    expect(image).to_be_visible()
    shown = tab.request.get(image.get_attribute("src"))
    assert shown.ok, shown.status
    drawn = np.asarray(Image.open(io.BytesIO(shown.body())).convert("RGB")).astype(int)
    assert drawn.shape == expected.shape and np.abs(drawn - expected).max() <= 1  # float rounding at most
    tab.screenshot(path=screenshots_dir / "dog-photo-heat-map.png", full_page=True)

    tab.get_by_label("Show where it looked").uncheck()
    expect(heat_map).to_be_hidden()
    tab.get_by_label("Show where it looked").check()
    upload(tab, "cat")
    tab.locator("#find").click()
    expect(tab.locator("#photo-verdict")).to_contain_text("Not a dog", timeout=TIMEOUT_MS)
    expect(heat_map).to_be_hidden()


def test_three_photos_dropped_at_once_give_three_rows_a_csv_and_the_dog_added(
    tab: Page, serve_app: str, tmp_path, screenshots_dir
):
    """Two photos and a file that is not one, chosen together: a row each, in order, the bad file with
    its reason; the CSV download holds the same table; the dog, chosen by default, goes to the gallery."""
    notes = tmp_path / "notes.jpg"
    notes.write_bytes(b"this is not a photo")
    tab.get_by_text("Several photos at once").click()
    tab.locator("#batch-photos input[type=file]").set_input_files(
        [str(PHOTOS["dog-bicycle"]), str(notes), str(PHOTOS["cat"])]
    )
    tab.locator("#batch-run").click()
    expect(tab.locator("#batch-status")).to_contain_text("3 photos: 1 dog, 1 could not be used.", timeout=TIMEOUT_MS)
    rows = tab.locator("#batch-table [role=row].virtual-row")  # Gradio's grid (its sizing copy is aria-hidden)
    expect(rows).to_have_count(3)
    cells = [row.get_by_role("gridcell").all_inner_texts() for row in rows.all()]
    assert [c[0].strip() for c in cells] == ["dog-bicycle-crop.jpg", "notes.jpg", "cat-face-crop.jpg"], cells
    assert [c[1].strip() for c in cells] == ["yes", "?", "no"], cells
    assert cells[0][2].strip() == "malamute" and cells[0][3].strip().endswith("%"), cells
    assert "not an image" in cells[1][4] and "Egyptian cat" in cells[2][4], cells
    tab.screenshot(path=screenshots_dir / "dog-photo-several.png", full_page=True)
    with tab.expect_download() as download:
        tab.locator("#batch-csv").click()
    lines = Path(download.value.path()).read_text(encoding="utf-8").splitlines()
    assert lines[0] == "Photo,Dog?,Top breed,Confidence,Note" and len(lines) == 4, lines
    assert lines[1].startswith("dog-bicycle-crop.jpg,yes,malamute,"), lines
    assert lines[3].startswith("cat-face-crop.jpg,no,"), lines

    # The dog is chosen to add, the cat may be; the file that is not a photo is not offered.
    chosen = tab.locator("#batch-chosen")
    expect(chosen.get_by_label("1. dog-bicycle-crop.jpg")).to_be_checked()
    expect(chosen.get_by_label("3. cat-face-crop.jpg")).not_to_be_checked()
    expect(chosen.get_by_label("2. notes.jpg")).to_have_count(0)
    tab.locator("#batch-add").click()
    expect(tab.locator("#batch-status")).to_contain_text("Added 1 photo to the gallery: #", timeout=TIMEOUT_MS)
    photo_id = int(re.search(r"#(\d+) malamute", tab.locator("#batch-status").inner_text()).group(1))
    stored = tab.request.get(f"{serve_app}/api/v1/gallery/{photo_id}").json()
    assert (stored["label"], stored["label_source"], stored["source"]) == (
        "malamute",
        "predicted",
        "upload:dog-bicycle-crop.jpg",
    )
