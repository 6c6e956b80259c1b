"""Article pages reduced to their text (shared/articles.py), and the Article tab's highlights of the
sentences a summary picked (ui/callbacks.py): pure functions on real text."""

from __future__ import annotations

import pytest

from backend.models.text import split_sentences
from shared.articles import page_text
from shared.errors import InvalidArticle
from tests.image_server import SITE_FOOTER, SITE_MENU, news_page
from ui.callbacks import highlighted, summary_options
from ui.examples import APOLLO_11, SOURDOUGH


def test_a_news_page_is_reduced_to_its_article():
    text = page_text(news_page(SOURDOUGH).encode(), "text/html; charset=utf-8")
    assert split_sentences(SOURDOUGH) == [s for s in split_sentences(text) if s != "Men walk on moon"]
    for furniture in (*SITE_MENU.split()[:3], SITE_FOOTER, "Most read"):
        assert furniture not in text


def test_plain_text_pages_keep_their_text_in_their_charset():
    assert page_text("Crème brûlée. It sets.".encode("latin-1"), "text/plain; charset=ISO-8859-1") == (
        "Crème brûlée. It sets."
    )
    assert page_text(b"Plain words.", "text/plain") == "Plain words."


def test_a_page_without_an_article_says_so():
    with pytest.raises(InvalidArticle, match="no article text"):
        page_text(b"<html><body><script>var tracking = 1;</script></body></html>", "text/html")


def test_the_picked_sentences_are_highlighted_where_they_are_in_the_article():
    article = APOLLO_11.replace(". ", ".\n", 2)  # line breaks the summarizer reads as spaces
    sentences = split_sentences(APOLLO_11)
    picked = [sentences[3], sentences[0]]  # in summary order, not the article's
    segments = highlighted(article, picked)
    assert "".join(text for text, _ in segments) == article  # the whole article, nothing lost or doubled
    marked = [text for text, label in segments if label == "in the summary"]
    assert [" ".join(text.split()) for text in marked] == [sentences[0], sentences[3]]
    assert highlighted(article, ["A sentence the article does not hold."]) == [(article, None)]


def test_the_length_is_sentences_for_extractive_and_bounds_for_abstractive_models():
    options = summary_options(4)
    assert (options.max_sentences, options.min_length, options.max_length) == (4, 40, 200)
