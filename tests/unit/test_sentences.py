from concurrent.futures import ThreadPoolExecutor

from backend.models.text import split_sentences
from ui.examples import APOLLO_11, SOURDOUGH


def test_apollo_article_splits_into_its_six_sentences():
    sentences = split_sentences(APOLLO_11)
    assert len(sentences) == 6
    assert sentences[0] == "HOUSTON -- Men have landed and walked on the moon."
    # "P.M.," and "Col. Edwin E. Aldrin Jr." do not end sentences.
    assert sentences[1].endswith("at 4:17:40 P.M., Eastern daylight time.")
    assert "Col. Edwin E. Aldrin Jr. of the Air Force" in sentences[3]
    # A quotation holding two sentences stays inside the sentence that quotes it.
    assert sentences[2].endswith('"Houston, Tranquility Base here. The Eagle has landed."')


def test_decimals_abbreviations_and_punctuation():
    text = (
        "Prices rose 3.5 percent to $12.40 in the U.S. on Monday. Dr. Smith, e.g. the lead author, "
        'agreed... Then he left! "Is it over?" she asked. Yes.'
    )
    assert split_sentences(text) == [
        "Prices rose 3.5 percent to $12.40 in the U.S. on Monday.",
        "Dr. Smith, e.g. the lead author, agreed...",
        "Then he left!",
        '"Is it over?" she asked.',
        "Yes.",
    ]


def test_paragraph_breaks_end_sentences_and_punctuation_only_pieces_are_dropped():
    text = "A title without a full stop\n\nThe body starts here.\r\n\r\n* * *\n\nThe end."
    assert split_sentences(text) == ["A title without a full stop", "The body starts here.", "The end."]


def test_text_without_words_has_no_sentences():
    assert split_sentences("  \n\n ... !!! ") == []


def test_articles_split_at_once_in_several_threads_split_as_alone():
    """A Summarizer replica runs its calls on a thread pool: two articles at once must not mix."""
    alone = {article: split_sentences(article) for article in (APOLLO_11, SOURDOUGH)}

    def split_often(number: int) -> list[list[str]]:
        article = APOLLO_11 if number % 2 else SOURDOUGH
        return [split_sentences(article) for _ in range(20)]

    with ThreadPoolExecutor(6) as pool:
        for number, splits in enumerate(pool.map(split_often, range(12))):
            assert all(split == alone[APOLLO_11 if number % 2 else SOURDOUGH] for split in splits)
