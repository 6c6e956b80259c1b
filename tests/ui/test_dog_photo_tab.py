"""The Dog photo tab in Debian's Chromium: upload a photo, see breeds and similar photos."""

import pytest
from playwright.sync_api import Page, expect

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


def test_upload_dog_photo_and_see_breeds_and_similar_photos(tab: Page, screenshots_dir):
    upload(tab, "dog")
    tab.locator("#find").click()
    expect(tab.locator("#photo-verdict")).to_contain_text("A dog", timeout=TIMEOUT_MS)
    expect(tab.locator("#photo-verdict")).to_contain_text("malamute")
    expect(tab.locator("#photo-verdict")).to_contain_text("Answered by dog-breeds/1")  # the registry's version
    expect(tab.locator("#breeds")).to_contain_text("malamute")
    thumbnails = tab.locator("#similar img")
    expect(thumbnails.first).to_be_visible(timeout=TIMEOUT_MS)
    assert thumbnails.count() >= 2
    expect(tab.locator("#similar")).to_contain_text("similarity")
    tab.screenshot(path=screenshots_dir / "dog-photo.png", full_page=True)


def test_cat_photo_is_not_a_dog(tab: Page, screenshots_dir):
    upload(tab, "cat")
    tab.locator("#find").click()
    expect(tab.locator("#photo-verdict")).to_contain_text("Not a dog", timeout=TIMEOUT_MS)
    expect(tab.locator("#photo-verdict")).to_contain_text("tiger cat")
    tab.screenshot(path=screenshots_dir / "cat-photo.png", full_page=True)


def test_add_a_photo_to_the_gallery(tab: Page):
    upload(tab, "dog2")
    tab.get_by_text("Add this photo to the gallery").click()
    tab.locator("#add-label textarea, #add-label input").first.fill("Siberian husky")
    tab.locator("#add").click()
    expect(tab.locator("#photo-verdict")).to_contain_text("Added to the gallery as photo #", timeout=TIMEOUT_MS)
    expect(tab.locator("#photo-verdict")).to_contain_text("Siberian husky (user)")


def test_find_without_a_photo_says_what_to_do(tab: Page):
    tab.locator("#find").click()
    expect(tab.locator("#photo-verdict")).to_contain_text("Upload a photo or give an image URL first", timeout=TIMEOUT_MS)


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
    # Gradio's max_file_size is the API's max_image_bytes (ui/app.py): refused before it is uploaded.
    expect(tab.get_by_text('File(s) exceed the maximum allowed size of 10.0 Mb: "huge.jpg"')).to_be_visible(timeout=TIMEOUT_MS)
    tab.wait_for_timeout(1000)  # the toast slides in
    tab.screenshot(path=screenshots_dir / "upload-over-the-cap.png")  # the toast is fixed to the viewport
