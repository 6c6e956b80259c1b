"""The Gradio layout. Pure layout: every behaviour is a plain callback passed in."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import gradio as gr

SummarizeCallback = Callable[[str], AsyncIterator[tuple[str, str]]]

CSS = """
#summary textarea { font-size: 1.05rem; line-height: 1.5; }
#summary-info { min-height: 1.5em; color: var(--body-text-color-subdued); }
"""


def build_blocks(summarize: SummarizeCallback, articles: dict[str, str]) -> gr.Blocks:
    """`summarize(article)` yields (summary so far, info line) as the summary streams in."""
    with gr.Blocks(title="Retriever", analytics_enabled=False) as blocks:
        gr.Markdown("# Retriever\nSummaries of articles, served by Ray Serve.")
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
            gr.Examples(
                examples=[[text] for text in articles.values()],
                example_labels=list(articles),
                inputs=[article],
                label="Examples",
            )
        clear.add([article, summary, info])
        run.click(summarize, inputs=article, outputs=[summary, info], api_name="summarize")
    return blocks
