"""The abstractive path on a tiny random T5 built here (no hub, no download): loading, prefix,
generation defaults, chunking and streaming are real; only the weights are random."""

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GenerationConfig, PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

from backend.models.text import Seq2SeqSummarizer, load_summarizer, split_sentences
from ui.examples import APOLLO_11, SOURDOUGH

WINDOW = 32  # tokens; the Apollo article is ~190, so it needs several chunks


def build_tiny_t5(path: Path, task_params: dict | None = None) -> Path:
    """A word-level tokenizer over the example articles and a 1-layer T5, saved like a hub checkpoint."""
    specials = ["<pad>", "</s>", "<unk>"]
    words = sorted(set((APOLLO_11 + " " + SOURDOUGH).split()) | {"summarize:", "abstract:"})
    vocab = {w: i for i, w in enumerate(specials + words)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=WINDOW
    ).save_pretrained(path)
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(vocab),
        d_model=16,
        d_ff=32,
        d_kv=8,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        task_specific_params=task_params,
    )
    model = T5ForConditionalGeneration(config)
    model.generation_config = GenerationConfig(max_length=6, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory) -> Path:
    return build_tiny_t5(tmp_path_factory.mktemp("tiny-t5"))


@pytest.fixture(scope="module")
def summarizer(tiny_t5) -> Seq2SeqSummarizer:
    return load_summarizer("seq2seq", model=str(tiny_t5))


def normalise(text: str) -> str:
    return " ".join(text.split())


def test_loads_from_a_local_path_with_t5_prefix(summarizer):
    assert summarizer.model_name == "seq2seq/" + Path(summarizer.model_name).name
    assert summarizer.prefix == "summarize: "
    assert summarizer.input_window == WINDOW
    prompt = summarizer._generate_kwargs("Men have landed", {})["input_ids"][0]
    assert summarizer.tokenizer.decode(prompt, skip_special_tokens=True).startswith("summarize: Men")


def test_checkpoint_task_parameters_are_the_defaults_and_arguments_override(tmp_path):
    path = build_tiny_t5(tmp_path, {"summarization": {"prefix": "abstract: ", "num_beams": 2, "max_length": 5}})
    loaded = Seq2SeqSummarizer.load(path)
    assert loaded.prefix == "abstract: "
    assert loaded.generation == {"num_beams": 2, "max_length": 5}
    overridden = Seq2SeqSummarizer.load(path, prefix="summarize: ", num_beams=1, min_length=2)
    assert overridden.prefix == "summarize: "
    assert overridden.generation == {"num_beams": 1, "max_length": 5, "min_length": 2}


def test_long_article_is_chunked_at_sentences_and_nothing_is_dropped(summarizer):
    chunks = summarizer.preprocess(APOLLO_11)
    assert len(chunks) > 3
    assert all(summarizer._token_count(chunk) <= WINDOW for chunk in chunks)
    assert normalise(" ".join(chunks)) == normalise(APOLLO_11)
    # Chunks end at sentence ends wherever a sentence fits in a window.
    fitting = [s for s in split_sentences(APOLLO_11) if summarizer._token_count(s) <= WINDOW]
    for sentence in fitting:
        assert any(sentence in chunk for chunk in chunks)


def test_a_short_first_chunk_starts_the_stream_sooner_and_the_rest_fill_the_window(tiny_t5):
    whole = load_summarizer("seq2seq", model=str(tiny_t5))
    short_first = load_summarizer("seq2seq", model=str(tiny_t5))
    short_first.first_chunk_tokens = 16
    article = "The crew is well. The sea is calm. The moon is up. " + APOLLO_11  # short sentences first
    chunks = short_first.preprocess(article)
    counts = [short_first._token_count(chunk) for chunk in chunks]
    assert counts[0] <= 16 < whole._token_count(whole.preprocess(article)[0])
    assert all(count <= WINDOW for count in counts)
    assert normalise(" ".join(chunks)) == normalise(article)
    # After the first, chunks are packed as without the setting: the same chunks for the same text.
    assert chunks[1:] == whole.preprocess(" ".join(chunks[1:]))


def test_summary_has_one_partial_summary_per_chunk_within_the_length_limit(summarizer):
    summary = summarizer.summarize(APOLLO_11, max_length=4)
    assert summary.pieces == len(summarizer.preprocess(APOLLO_11))
    # max_length counts the decoder start token: at most 3 words from each chunk.
    assert 0 < len(summary.text.split()) <= 3 * summary.pieces
    # Without the override the checkpoint's own max_length (6) applies: longer output.
    assert len(summarizer.summarize(APOLLO_11).text.split()) > len(summary.text.split())


def test_stream_is_token_by_token_and_equals_the_summary(summarizer):
    pieces = list(summarizer.stream(APOLLO_11, num_beams=1))
    assert len(pieces) > summarizer.summarize(APOLLO_11).pieces  # finer than one piece per chunk
    assert normalise("".join(pieces)) == normalise(summarizer.summarize(APOLLO_11, num_beams=1).text)


def test_beam_search_streams_one_chunk_at_a_time(summarizer):
    chunks = summarizer.preprocess(APOLLO_11)
    pieces = list(summarizer.stream(APOLLO_11, num_beams=2))
    assert len(pieces) == len(chunks)
    assert normalise("".join(pieces)) == normalise(summarizer.summarize(APOLLO_11, num_beams=2).text)


def test_generation_errors_reach_the_stream_consumer(summarizer):
    with pytest.raises(ValueError):
        list(summarizer.stream(APOLLO_11, num_beams=1, max_length=-3))
