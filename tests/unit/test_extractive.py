"""The embedded default summarizer on the real all-MiniLM-L6-v2 weights."""

import numpy as np
import pytest

from backend.models.text import ExtractiveSummarizer, select_mmr, split_sentences
from shared.errors import InvalidArticle
from ui.examples import APOLLO_11, SOURDOUGH


@pytest.fixture(scope="module")
def summarizer() -> ExtractiveSummarizer:
    return ExtractiveSummarizer.load(max_sentences=3)


def test_real_minilm_weights_reproduce_the_published_similarity(summarizer):
    # The model card's example: 0.943 between these two sentences.
    a, b = summarizer.forward(["That is a happy person", "That is a very happy person"])
    assert float(a @ b) == pytest.approx(0.943, abs=0.005)


def test_summary_is_article_sentences_in_article_order(summarizer):
    sentences = split_sentences(APOLLO_11)
    summary = summarizer.summarize(APOLLO_11)
    assert summary.model == "extractive/all-MiniLM-L6-v2"
    assert summary.pieces == 3
    picked = [s for s in sentences if s in summary.text]
    assert len(picked) == 3
    assert summary.text == " ".join(picked)  # verbatim, in the article's order


def test_length_is_configurable_per_call(summarizer):
    assert summarizer.summarize(SOURDOUGH, max_sentences=1).pieces == 1
    assert summarizer.summarize(SOURDOUGH, max_sentences=5).pieces == 5
    # A text no longer than the requested summary comes back whole.
    short = "One sentence here. And a second one."
    assert summarizer.summarize(short, max_sentences=3).text == short


def test_off_topic_sentence_is_left_out(summarizer):
    off_topic = "Preheat the oven and grease a loaf tin with butter."
    text = APOLLO_11 + " " + off_topic
    assert off_topic not in summarizer.summarize(text, max_sentences=4).text


def test_redundancy_control_skips_repeated_sentence(summarizer):
    repeated = "Armstrong and Aldrin landed the lunar module on the moon."
    text = " ".join([repeated, APOLLO_11, repeated.replace("landed", "set down")])
    with_mmr = summarizer.summarize(text, max_sentences=3, diversity=0.5).text
    assert not (repeated in with_mmr and repeated.replace("landed", "set down") in with_mmr)


def test_stream_yields_sentences_that_make_the_summary(summarizer):
    pieces = list(summarizer.stream(APOLLO_11))
    assert len(pieces) == 3
    assert "".join(pieces) == summarizer.summarize(APOLLO_11).text


def test_text_without_sentences_is_refused(summarizer):
    with pytest.raises(InvalidArticle):
        summarizer.summarize("... !!! ???")


def test_mmr_trades_relevance_for_novelty():
    # Rows 0 and 1 are near-duplicates close to the centroid; row 2 is different.
    e = np.array([[1.0, 0.0, 0.0], [0.99, 0.14, 0.0], [0.6, 0.0, 0.8], [0.0, 1.0, 0.0]])
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    assert select_mmr(e, 2, diversity=0.0) == [0, 1]
    assert select_mmr(e, 2, diversity=0.7) != [0, 1]
    assert select_mmr(e, 10, diversity=0.3) == [0, 1, 2, 3]
