"""The Gradio UI in Debian's Chromium, through the Serve proxy, as a user clicks it."""

from contextlib import closing

import pytest
from playwright.sync_api import Page, expect

from backend.models.text import split_sentences
from ui.examples import APOLLO_11

pytestmark = pytest.mark.serve

TIMEOUT_MS = 120_000


@pytest.fixture
def ui(page: Page, serve_app: str) -> Page:
    page.goto(serve_app + "/")  # the root leads a browser to the UI
    expect(page.get_by_role("button", name="Summarize")).to_be_visible(timeout=TIMEOUT_MS)
    return page


def summary_box(page: Page):
    return page.locator("#summary textarea")


def test_paste_apollo_article_and_read_its_summary(ui: Page, screenshots_dir):
    assert ui.url.endswith("/ui/")
    ui.locator("#article textarea").fill(APOLLO_11)
    ui.get_by_role("button", name="Summarize").click()
    expect(ui.locator("#summary-info")).to_contain_text("extractive/all-MiniLM-L6-v2", timeout=TIMEOUT_MS)
    summary = summary_box(ui).input_value()
    picked = [s for s in split_sentences(APOLLO_11) if s in summary]
    assert len(picked) == 3
    assert summary == " ".join(picked)
    ui.screenshot(path=screenshots_dir / "article-summary.png", full_page=True)


def test_an_example_article_is_summarized(ui: Page):
    ui.get_by_text("Apollo 11 lands").click()
    expect(ui.locator("#article textarea")).to_have_value(APOLLO_11, timeout=TIMEOUT_MS)
    ui.get_by_role("button", name="Summarize").click()
    expect(ui.locator("#summary-info")).to_contain_text("extractive/all-MiniLM-L6-v2", timeout=TIMEOUT_MS)
    summary = summary_box(ui).input_value()
    assert summary.startswith("HOUSTON -- Men have landed and walked on the moon.")
    picked = [s for s in split_sentences(APOLLO_11) if s in summary]
    assert summary == " ".join(picked)  # whole sentences of the article, in its order


def test_empty_article_shows_an_error_not_a_spinner(ui: Page, screenshots_dir):
    ui.get_by_role("button", name="Summarize").click()
    expect(ui.locator("#summary-info")).to_contain_text("Cannot summarize: The article is empty", timeout=TIMEOUT_MS)
    ui.screenshot(path=screenshots_dir / "article-empty-error.png")
    assert summary_box(ui).input_value() == ""


def test_article_over_the_limit_is_refused_with_the_limit(ui: Page):
    ui.locator("#article textarea").fill("word " * 20_001)
    ui.get_by_role("button", name="Summarize").click()
    expect(ui.locator("#summary-info")).to_contain_text("the limit is 100,000", timeout=TIMEOUT_MS)


def test_programs_can_call_the_ui_through_gradio_client(serve_app: str):
    from gradio_client import Client

    with closing(Client(serve_app + "/ui/", verbose=False, download_files=False)) as client:
        summary, info = client.predict(APOLLO_11, api_name="/summarize")
    assert summary.startswith("HOUSTON -- Men have landed and walked on the moon.")
    assert "extractive/all-MiniLM-L6-v2" in info


def marked_sentences(page: Page) -> list[str]:
    """The sentences the highlighted article marks, whitespace as the summarizer reads it."""
    marks = page.locator("#highlights .token.highlighted .text")  # Gradio's marked spans
    return [" ".join(text.split()) for text in marks.all_inner_texts()]


def test_a_longer_summary_highlighted_in_the_article_and_downloaded(ui: Page, screenshots_dir):
    """The length slider changes the summary; the article is shown with exactly the summary's sentences
    highlighted; the summary downloads as a text file."""
    ui.locator("#article textarea").fill(APOLLO_11)
    ui.get_by_role("button", name="Summarize").click()
    expect(ui.locator("#summary-info")).to_contain_text("extractive/all-MiniLM-L6-v2", timeout=TIMEOUT_MS)
    expect(ui.locator("#highlights")).to_be_visible(timeout=TIMEOUT_MS)
    short = summary_box(ui).input_value()
    assert sorted(marked_sentences(ui)) == sorted(s for s in split_sentences(APOLLO_11) if s in short)

    ui.locator("#length input[type=number]").fill("5")
    ui.locator("#length input[type=number]").press("Enter")
    ui.get_by_role("button", name="Summarize").click()
    expect(summary_box(ui)).not_to_have_value(short, timeout=TIMEOUT_MS)
    expect(ui.locator("#summary-info")).to_contain_text("extractive/all-MiniLM-L6-v2", timeout=TIMEOUT_MS)
    longer = summary_box(ui).input_value()
    picked = [s for s in split_sentences(APOLLO_11) if s in longer]
    assert len(picked) == 5 and longer == " ".join(picked), longer
    expect(ui.locator("#highlights .token.highlighted")).to_have_count(5, timeout=TIMEOUT_MS)
    assert sorted(marked_sentences(ui)) == sorted(picked)
    ui.screenshot(path=screenshots_dir / "article-highlights.png", full_page=True)

    with ui.expect_download() as download:
        ui.locator("#summary-download").click()
    assert download.value.suggested_filename.endswith(".txt")
    assert open(download.value.path(), encoding="utf-8").read() == longer + "\n"


def test_an_article_address_is_fetched_into_the_box_and_summarized(ui: Page, image_server):
    """The test's loopback server (on the app's allowlist) serves a news page; a private address is refused."""
    ui.locator("#article-url input, #article-url textarea").first.fill(f"{image_server.url}/news/apollo-11.html")
    ui.get_by_role("button", name="Fetch", exact=True).click()
    expect(ui.locator("#summary-info")).to_contain_text("extractive/all-MiniLM-L6-v2", timeout=TIMEOUT_MS)
    assert APOLLO_11 in ui.locator("#article textarea").input_value()  # the page's article, in the box
    summary = summary_box(ui).input_value()
    assert summary.startswith("HOUSTON -- Men have landed and walked on the moon."), summary
    ui.locator("#article-url input, #article-url textarea").first.fill("http://10.9.8.7/news.html")
    ui.get_by_role("button", name="Fetch", exact=True).click()
    expect(ui.locator("#summary-info")).to_contain_text("non-public address", timeout=TIMEOUT_MS)
