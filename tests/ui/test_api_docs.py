"""The API's docs page in Debian's Chromium, offline: Swagger UI (served by the app itself, no CDN) takes
an API key through its Authorize button and sends it with "Try it out"."""

import pytest
from playwright.sync_api import Page, expect

from tests.api.test_access import KEYS, keys_in_force

pytestmark = pytest.mark.serve
TIMEOUT_MS = 60_000
LIST_GALLERY = "#operations-default-list_gallery_api_v1_gallery_get"


def execute_list_gallery(page: Page) -> str:
    """Run GET /api/v1/gallery from the docs page; the status it shows."""
    operation = page.locator(LIST_GALLERY)
    if not operation.locator(".execute").is_visible():
        operation.locator(".opblock-summary").click()
    expect(operation.locator(".parameters input").first).to_have_value("0")  # offset's default, filled in
    operation.locator(".execute").click()
    status = operation.locator(".live-responses-table .response .response-col_status").first
    expect(status).to_be_visible(timeout=TIMEOUT_MS)
    text = status.inner_text().strip()
    operation.locator(".btn-clear").click()
    return text


def test_the_docs_authorize_button_sends_the_key(page: Page, serve_app: str, api_keys_file, screenshots_dir):
    with keys_in_force(serve_app, api_keys_file):
        page.goto(serve_app + "/docs")
        expect(page.locator(LIST_GALLERY)).to_be_visible(timeout=TIMEOUT_MS)
        assert execute_list_gallery(page).startswith("401")
        page.locator(".auth-wrapper .authorize").click()
        page.locator(".modal-ux input").fill(KEYS["reader"])
        page.locator(".modal-ux .auth-btn-wrapper .authorize").click()
        page.screenshot(path=screenshots_dir / "api-docs-authorized.png")
        page.locator(".modal-ux .btn-done").click()
        assert execute_list_gallery(page).startswith("200")
