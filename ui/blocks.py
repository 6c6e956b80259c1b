"""The Gradio layout. Pure layout: every behaviour is a plain callback passed in."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import gradio as gr

ShareLineCallback = Callable[[], Awaitable[str]]


class Callbacks(Protocol):
    def summarize(self, article: str, length: int) -> AsyncIterator[tuple]: ...

    def summarize_url(self, url: str, length: int) -> AsyncIterator[tuple]: ...

    async def summary_views(self, article: str, summary: str, picked: list[str] | None) -> tuple: ...

    async def find(self, photo: str | None, url: str, matches: int, explain: bool) -> tuple: ...

    async def explain_toggled(self, photo: str | None, url: str, matches: int, explain: bool) -> tuple: ...

    async def add(self, photo: str | None, url: str, label: str) -> str: ...

    async def analyse_many(self, files: list[str] | None) -> tuple: ...

    async def add_many(self, files: list[str] | None, chosen: list[int] | None) -> str: ...

    # The Gallery tab's: each answers (photos, status, view, editor, details, label, confirmation).
    async def browse(self, label: str) -> tuple: ...

    async def newer(self, view: object) -> tuple: ...

    async def older(self, view: object) -> tuple: ...

    async def select(self, view: object, event: gr.SelectData) -> tuple: ...

    async def relabel(self, view: object, label: str) -> tuple: ...

    async def delete(self, view: object) -> tuple: ...


CSS = """
#summary textarea { font-size: 1.05rem; line-height: 1.5; }
#summary-info { min-height: 1.5em; color: var(--body-text-color-subdued); }
#photo-verdict { min-height: 1.5em; font-size: 1.05rem; }
#gallery-status { min-height: 1.5em; }
#gallery-details { min-height: 1.5em; }
#share-link { padding: 0.4em 0.8em; border-radius: var(--radius-md); background: var(--background-fill-secondary); }
/* WCAG AA contrast (4.5:1) where Gradio draws pale grey on white: slider bounds, the upload's "or", the footer. */
.min_value, .max_value, .or, footer, footer a, footer button { color: #4b5563 !important; }
/* gr.File's "upload more" button holds a second upload control inside it (axe: nested-interactive); the
   list's own clear button and a new drop do the same. (Its aria-label is Gradio's untranslated key.) */
#batch-photos button[aria-label="common.upload"] { display: none; }
"""
# Gradio's orange with white text is 2.8:1 and its red 3.8:1; these are 5.2:1 and 6.5:1 (WCAG AA), the
# hovers darker still.
THEME = gr.themes.Default().set(
    button_cancel_background_fill="#b91c1c",
    button_cancel_background_fill_hover="#991b1b",
    button_cancel_background_fill_dark="#b91c1c",
    button_cancel_background_fill_hover_dark="#991b1b",
    button_cancel_text_color="#ffffff",
    button_cancel_text_color_dark="#ffffff",
    button_primary_background_fill="#c2410c",
    button_primary_background_fill_hover="#9a3412",
    button_primary_background_fill_dark="#c2410c",
    button_primary_background_fill_hover_dark="#9a3412",
    button_primary_text_color="#ffffff",
    button_primary_text_color_dark="#ffffff",
)


def unopened_uploads(image: gr.Image) -> gr.Image:
    """Make `image` hand the uploaded file's path to the callback unopened. Gradio's own preprocess
    opens every upload with PIL first, and a file that is not an image fails there with a bare "Error";
    the callback decodes it once, with the API's checks, and says what is wrong with it. (Set on the
    instance: a gr.Image subclass would make Gradio write a .pyi stub beside this module.)"""
    preprocess = image.preprocess

    def hand_over(payload):
        if payload is None or not payload.path:  # nothing, or a pasted data: URL (Gradio decodes those)
            return preprocess(payload)
        return str(payload.path)

    image.preprocess = hand_over
    return image


def build_blocks(
    callbacks: Callbacks,
    articles: dict[str, str],
    share_line: ShareLineCallback | None = None,
) -> gr.Blocks:
    """`callbacks.summarize(article, length)` yields (summary so far, info line, its sentences) as the summary
    streams in, `summarize_url` the fetched article first; `summary_views` answers the highlighted article
    and the summary's download;
    `callbacks.find` answers (verdict, breed label, similar photos, heat map), `callbacks.add` a message;
    `share_line()`, when the app is shared, the line that shows the public link."""
    with gr.Blocks(title="Retriever", analytics_enabled=False) as blocks:
        gr.Markdown("# Retriever\nSummaries of articles and dog breeds, served by Ray Serve.")
        if share_line is not None:
            link = gr.Markdown("Creating the share link…", elem_id="share-link")
            blocks.load(share_line, outputs=link, api_visibility="private")
        with gr.Tab("Article"):
            with gr.Row(equal_height=True):
                with gr.Column(scale=3):
                    article = gr.Textbox(
                        label="Article",
                        placeholder="Paste an article here, or pick an example below.",
                        lines=14,
                        max_lines=30,
                        elem_id="article",
                    )
                    with gr.Row(equal_height=True):
                        article_url = gr.Textbox(
                            label="…or the address of an article (fetched, then summarized)",
                            placeholder="https://example.com/news/story.html",
                            max_lines=1,
                            scale=4,
                            elem_id="article-url",
                        )
                        fetch = gr.Button("Fetch", scale=1, elem_id="summarize-url")
                    length = gr.Slider(
                        1,
                        10,
                        value=3,
                        step=1,
                        label="Summary length (sentences; about 40 words each for an abstractive model)",
                        elem_id="length",
                    )
                    with gr.Row():
                        clear = gr.ClearButton(value="Clear", variant="secondary")
                        run = gr.Button("Summarize", variant="primary", elem_id="summarize")
                with gr.Column(scale=2):
                    summary = gr.Textbox(
                        label="Summary",
                        lines=10,
                        interactive=False,
                        buttons=["copy"],
                        elem_id="summary",
                    )
                    info = gr.Markdown(elem_id="summary-info")
                    download = gr.DownloadButton("Download the summary", visible=False, elem_id="summary-download")
            highlights = gr.HighlightedText(
                label="The article, with the summary's sentences highlighted",
                combine_adjacent=True,
                show_legend=False,
                show_inline_category=False,
                color_map={"in the summary": "#fde68a"},
                visible=False,
                elem_id="highlights",
            )
            picked = gr.State()  # the extractive summary's sentences, for the highlights
            gr.Examples(
                examples=[[text] for text in articles.values()],
                example_labels=list(articles),
                inputs=[article],
                label="Examples",
            )
        with gr.Tab("Dog photo"):
            with gr.Row():
                with gr.Column(scale=2):
                    photo = unopened_uploads(
                        gr.Image(
                            label="Dog photo",
                            # The uploaded file reaches the callback untouched (no conversion by Gradio):
                            # it is decoded once, by shared.images, with the API's checks.
                            type="filepath",
                            image_mode=None,
                            sources=["upload", "clipboard"],
                            height=320,
                            elem_id="photo",
                        )
                    )
                    url = gr.Textbox(
                        label="…or an image URL", placeholder="https://example.com/dog.jpg", elem_id="photo-url"
                    )
                    matches = gr.Slider(1, 20, value=6, step=1, label="Similar photos to show", elem_id="matches")
                    explain = gr.Checkbox(label="Show where it looked", value=False, elem_id="explain")
                    find = gr.Button("Find breed and similar photos", variant="primary", elem_id="find")
                    with gr.Accordion("Add this photo to the gallery", open=False):
                        label = gr.Textbox(
                            label="Breed", placeholder="Empty: the predicted breed, if it is a dog", elem_id="add-label"
                        )
                        add = gr.Button("Add to gallery", elem_id="add")
                with gr.Column(scale=3):
                    verdict = gr.Markdown(elem_id="photo-verdict")
                    breeds = gr.Label(label="Most likely breeds", num_top_classes=5, visible=False, elem_id="breeds")
                    looked = gr.Image(
                        label="Where it looked",
                        type="numpy",
                        format="png",
                        interactive=False,
                        visible=False,
                        height=320,
                        buttons=["download"],
                        elem_id="heat-map",
                    )
                    similar = gr.Gallery(
                        label="Similar photos in the gallery",
                        visible=False,  # until there are some: an empty gallery's placeholder fails axe's ARIA rules
                        columns=3,
                        height="auto",
                        object_fit="cover",
                        elem_id="similar",
                    )
            with gr.Accordion("Several photos at once", open=False, elem_id="batch"):
                many = gr.File(
                    label="Photos (choose or drop several)",
                    file_count="multiple",
                    type="filepath",
                    height=140,
                    elem_id="batch-photos",
                )
                analyse_many = gr.Button("Analyse the photos", variant="primary", elem_id="batch-run")
                many_status = gr.Markdown(elem_id="batch-status")
                many_table = gr.Dataframe(
                    interactive=False,
                    wrap=True,
                    # fixed widths, so a long note wraps inside the table instead of running past its edge
                    column_widths=["22%", "8%", "16%", "12%", "42%"],
                    visible=False,
                    elem_id="batch-table",
                )
                many_csv = gr.DownloadButton("Download the table (CSV)", visible=False, elem_id="batch-csv")
                many_chosen = gr.CheckboxGroup(
                    label="Photos to add to the gallery (a dog with its predicted breed)",
                    visible=False,
                    elem_id="batch-chosen",
                )
                many_add = gr.Button("Add the chosen photos to the gallery", visible=False, elem_id="batch-add")
        with gr.Tab("Gallery") as gallery_tab:
            with gr.Row(equal_height=True):
                label_filter = gr.Textbox(
                    label="Label", placeholder="Every label", scale=4, elem_id="gallery-filter", max_lines=1
                )
                show = gr.Button("Show", scale=1, elem_id="gallery-show")
            status = gr.Markdown(elem_id="gallery-status")
            grid = gr.Gallery(
                label="Gallery photos (click one to relabel or delete it)",
                columns=6,
                height="auto",
                object_fit="cover",
                allow_preview=False,
                fit_columns=False,  # one photo stays a thumbnail, not a full-width banner
                elem_id="gallery-grid",
            )
            with gr.Row():
                newer = gr.Button("← Newer", size="sm", elem_id="gallery-newer")
                older = gr.Button("Older →", size="sm", elem_id="gallery-older")
            with gr.Group(visible=False, elem_id="gallery-editor") as editor:
                details = gr.Markdown(elem_id="gallery-details", padding=True)
                with gr.Row(equal_height=True):
                    new_label = gr.Textbox(label="Label", scale=3, max_lines=1, elem_id="gallery-label")
                    relabel = gr.Button("Save label", scale=1, elem_id="gallery-relabel")
                    delete = gr.Button("Delete photo…", variant="stop", scale=1, elem_id="gallery-delete")
                with gr.Row(visible=False) as confirm:
                    gr.Markdown("Delete this photo for good? Searches stop finding it within a second.", padding=True)
                    confirmed = gr.Button("Yes, delete it", variant="stop", elem_id="gallery-confirm-delete")
                    cancel = gr.Button("Cancel", elem_id="gallery-cancel-delete")
            view = gr.State()
        clear.add([article, article_url, summary, info])
        page = [grid, status, view, editor, details, new_label, confirm]
        show.click(callbacks.browse, inputs=label_filter, outputs=page, api_name="browse_gallery")
        for event in (gallery_tab.select, label_filter.submit):
            event(callbacks.browse, inputs=label_filter, outputs=page, api_visibility="private")
        newer.click(callbacks.newer, inputs=view, outputs=page, api_visibility="private")
        older.click(callbacks.older, inputs=view, outputs=page, api_visibility="private")
        grid.select(callbacks.select, inputs=view, outputs=page, api_visibility="private")
        relabel.click(callbacks.relabel, inputs=[view, new_label], outputs=page, api_visibility="private")
        new_label.submit(callbacks.relabel, inputs=[view, new_label], outputs=page, api_visibility="private")
        delete.click(lambda: gr.update(visible=True), outputs=confirm, api_visibility="private")
        cancel.click(lambda: gr.update(visible=False), outputs=confirm, api_visibility="private")
        confirmed.click(callbacks.delete, inputs=view, outputs=page, api_visibility="private")
        views = {"fn": callbacks.summary_views, "inputs": [article, summary, picked], "outputs": [highlights, download]}
        run.click(
            callbacks.summarize, inputs=[article, length], outputs=[summary, info, picked], api_name="summarize"
        ).then(**views, api_visibility="private")
        from_url = {
            "fn": callbacks.summarize_url,
            "inputs": [article_url, length],
            "outputs": [article, summary, info, picked],
        }
        fetch.click(**from_url, api_name="summarize_url").then(**views, api_visibility="private")
        article_url.submit(**from_url, api_visibility="private").then(**views, api_visibility="private")
        found = [verdict, breeds, similar, looked]
        find.click(callbacks.find, inputs=[photo, url, matches, explain], outputs=found, api_name="find")
        explain.change(
            callbacks.explain_toggled, inputs=[photo, url, matches, explain], outputs=found, api_visibility="private"
        )
        add.click(callbacks.add, inputs=[photo, url, label], outputs=[verdict], api_name="add")
        analyse_many.click(
            callbacks.analyse_many,
            inputs=many,
            outputs=[many_status, many_table, many_csv, many_chosen, many_add],
            api_name="analyse_many",
        )
        many_add.click(callbacks.add_many, inputs=[many, many_chosen], outputs=many_status, api_name="add_many")
    return blocks
