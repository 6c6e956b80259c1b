"""Usable by everyone, in Debian's Chromium: axe-core (from the axe-playwright-python wheel, nothing
downloaded) finds no serious or critical violation on any tab, before or after an answer; the main flows
work from the keyboard alone."""

from __future__ import annotations

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

from backend.models.text import split_sentences
from tests.conftest import PHOTOS, wait_until_idle
from ui.examples import APOLLO_11

pytestmark = pytest.mark.serve

TIMEOUT_MS = 120_000
BLOCKING = {"serious", "critical"}


@pytest.fixture
def ui(page: Page, serve_app: str) -> Page:
    page.goto(serve_app + "/ui/")
    expect(page.locator("#summarize")).to_be_visible(timeout=TIMEOUT_MS)
    return page


def blocking_violations(page: Page) -> list[str]:
    """axe's serious and critical violations on the page once no event runs (Gradio dims an output while
    its event runs): rule, impact, where."""
    wait_until_idle(page, TIMEOUT_MS)
    found = Axe().run(page).response["violations"]
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[node['target'] for node in v['nodes']]}"
        for v in found
        if v["impact"] in BLOCKING
    ]


def test_every_tab_before_and_after_an_answer_has_no_serious_violation(ui: Page, tmp_path):
    seen: dict[str, list[str]] = {}
    seen["article"] = blocking_violations(ui)
    ui.locator("#article textarea").fill(APOLLO_11)
    ui.locator("#summarize").click()
    expect(ui.locator("#highlights .token.highlighted").first).to_be_visible(timeout=TIMEOUT_MS)
    seen["article, summarized"] = blocking_violations(ui)

    ui.get_by_role("tab", name="Dog photo").click()
    expect(ui.locator("#find")).to_be_visible()
    seen["dog photo"] = blocking_violations(ui)
    ui.get_by_label("Show where it looked").check()  # before the photo: one Find, nothing left running
    ui.locator("#photo input[type=file]").set_input_files(str(PHOTOS["dog-bicycle"]))
    ui.locator("#find").click()
    expect(ui.locator("#heat-map img")).to_be_visible(timeout=TIMEOUT_MS)
    expect(ui.locator("#similar img").first).to_be_visible(timeout=TIMEOUT_MS)
    alt = ui.locator("#heat-map img").get_attribute("alt")
    assert "malamute" in alt, alt  # the heat map says what it shows
    assert all("similarity" in a for a in ui.locator("#similar img").evaluate_all("i => i.map(x => x.alt)"))
    seen["dog photo, found"] = blocking_violations(ui)
    notes = tmp_path / "notes.jpg"
    notes.write_bytes(b"not a photo")
    ui.get_by_text("Several photos at once").click()
    ui.locator("#batch-photos input[type=file]").set_input_files([str(PHOTOS["dog"]), str(notes)])
    ui.locator("#batch-run").click()
    expect(ui.locator("#batch-status")).to_contain_text("2 photos", timeout=TIMEOUT_MS)
    seen["dog photo, several"] = blocking_violations(ui)

    ui.get_by_role("tab", name="Gallery").click()
    expect(ui.locator("#gallery-grid img").first).to_be_visible(timeout=TIMEOUT_MS)
    seen["gallery"] = blocking_violations(ui)
    ui.locator("#gallery-grid img").first.click()
    expect(ui.locator("#gallery-relabel")).to_be_visible(timeout=TIMEOUT_MS)
    seen["gallery, a photo selected"] = blocking_violations(ui)
    assert {where: found for where, found in seen.items() if found} == {}


def focus_by_tab(page: Page, selector: str, text: str | None = None, presses: int = 60) -> None:
    """Press Tab until the keyboard focus is in `selector` (on an element reading `text`, if given), as a
    keyboard user moves through the page."""
    for _ in range(presses):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            """([s, text]) => { const e = document.activeElement?.closest(s);
                return !!e && (text === null || e.textContent.trim() === text); }""",
            [selector, text],
        )
        if focused:
            return
    raise AssertionError(f"{selector} {text or ''} is not reachable with Tab within {presses} presses")


def test_paste_and_summarize_with_the_keyboard_alone(ui: Page):
    focus_by_tab(ui, "#article")
    ui.keyboard.insert_text(APOLLO_11)  # what pasting does
    focus_by_tab(ui, "#summarize")
    ui.keyboard.press("Enter")
    expect(ui.locator("#summary-info")).to_contain_text("extractive/all-MiniLM-L6-v2", timeout=TIMEOUT_MS)
    summary = ui.locator("#summary textarea").input_value()
    assert summary == " ".join(s for s in split_sentences(APOLLO_11) if s in summary) and summary


def test_choose_a_photo_and_find_with_the_keyboard_alone(ui: Page):
    focus_by_tab(ui, "[role=tab]", "Dog photo")
    ui.keyboard.press("Enter")
    expect(ui.locator("#find")).to_be_visible(timeout=TIMEOUT_MS)
    with ui.expect_file_chooser() as chooser:
        focus_by_tab(ui, "#photo")
        ui.keyboard.press("Enter")  # the upload area opens the file dialog
    chooser.value.set_files(str(PHOTOS["dog"]))
    expect(ui.locator("#photo img")).to_be_visible(timeout=TIMEOUT_MS)
    focus_by_tab(ui, "#find")
    ui.keyboard.press("Enter")
    expect(ui.locator("#photo-verdict")).to_contain_text("A dog", timeout=TIMEOUT_MS)
    expect(ui.locator("#breeds")).to_contain_text("malamute")
