"""The Gallery tab in Debian's Chromium: browse the stored photos, filter by label, relabel one, delete one
(after a confirmation), and see a Find stop returning it."""

import io
import uuid

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from tests.conftest import PHOTOS, wait_until_idle
from tests.ui.test_dog_photo_tab import TIMEOUT_MS, similar_photos, upload

pytestmark = pytest.mark.serve


@pytest.fixture
def stored_photo(serve_app: str):
    """A photo the test adds through the API (a rotated cheetah crop, under a label of its own), and
    deletes again if the test did not."""
    out = io.BytesIO()
    Image.open(PHOTOS["cheetah2"]).convert("RGB").rotate(8, expand=False).save(out, "JPEG")
    label = f"ui-cheetah-{uuid.uuid4().hex[:6]}"
    with httpx.Client(base_url=serve_app, timeout=120) as client:
        added = client.post(
            "/api/v1/gallery", files={"file": ("c.jpg", out.getvalue(), "image/jpeg")}, data={"label": label}
        )
        assert added.status_code == 201, added.text
        yield added.json()["id"], label
        client.delete(f"/api/v1/gallery/{added.json()['id']}")


def filter_by(page: Page, label: str) -> None:
    page.locator("#gallery-filter input, #gallery-filter textarea").first.fill(label)
    page.locator("#gallery-show").click()


def find_cheetah(page: Page) -> list[str]:
    """The similar photos' labels a Find of the cheetah face crop shows (the six nearest: the big cats
    among them)."""
    page.get_by_role("tab", name="Dog photo").click()
    upload(page, "cheetah")
    page.locator("#find").click()
    expect(page.locator("#photo-verdict")).to_contain_text("Not a dog", timeout=TIMEOUT_MS)
    labels = [caption.split(" · ")[0] for _, caption in similar_photos(page)]
    page.get_by_role("tab", name="Gallery").click()
    wait_until_idle(page)  # the tab's own browse, under the filter it shows, has answered
    return labels


def test_browse_relabel_and_delete_a_photo(page: Page, serve_app: str, stored_photo, screenshots_dir):
    photo_id, label = stored_photo
    page.goto(serve_app + "/ui/")
    page.get_by_role("tab", name="Gallery").click()
    status = page.locator("#gallery-status")
    expect(status).to_contain_text("newest first", timeout=TIMEOUT_MS)
    expect(status).to_contain_text("Photos 1–")
    grid = page.locator("#gallery-grid")
    expect(grid.locator(".caption-label").first).to_have_text(f"#{photo_id} · {label}")  # the newest
    page.screenshot(path=screenshots_dir / "gallery-tab.png", full_page=True)

    filter_by(page, label)
    expect(status).to_contain_text(f"Photos 1–1 of 1 labelled {label}", timeout=TIMEOUT_MS)
    grid.locator("img").first.click()
    details = page.locator("#gallery-details")
    expect(details).to_contain_text(f"Photo #{photo_id} · {label} (user) · from upload:c.jpg", timeout=TIMEOUT_MS)
    relabelled = f"{label}-renamed"
    page.locator("#gallery-label input, #gallery-label textarea").first.fill(relabelled)
    page.locator("#gallery-relabel").click()
    expect(status).to_contain_text(f"Photo #{photo_id} is now labelled {relabelled}.", timeout=TIMEOUT_MS)
    expect(status).to_contain_text(f"No photos labelled {label}.")  # it left the filter's label
    assert relabelled in find_cheetah(page)

    filter_by(page, relabelled)
    expect(status).to_contain_text("Photos 1–1 of 1", timeout=TIMEOUT_MS)
    grid.locator("img").first.click()
    expect(details).to_contain_text(f"Photo #{photo_id}", timeout=TIMEOUT_MS)
    page.locator("#gallery-delete").click()
    confirm = page.locator("#gallery-confirm-delete")
    expect(confirm).to_be_visible()
    page.screenshot(path=screenshots_dir / "gallery-delete-confirmation.png", full_page=True)
    page.locator("#gallery-cancel-delete").click()
    expect(confirm).to_be_hidden()
    httpx.get(f"{serve_app}/api/v1/gallery/{photo_id}").raise_for_status()  # cancelled: still there

    page.locator("#gallery-delete").click()
    confirm.click()
    expect(status).to_contain_text(f"Deleted photo #{photo_id}.", timeout=TIMEOUT_MS)
    expect(status).to_contain_text(f"No photos labelled {relabelled}.")
    expect(page.locator("#gallery-editor")).to_be_hidden()
    assert httpx.get(f"{serve_app}/api/v1/gallery/{photo_id}").status_code == 404
    assert relabelled not in find_cheetah(page)
