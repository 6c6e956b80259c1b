"""The Summarizer deployment's class, in-process (no Ray cluster): how user_config maps to the model."""

import pytest

from backend.deployments.summarizer import Summarizer, SummarizerSettings
from shared.schemas import SummarizeOptions
from ui.examples import SOURDOUGH

SummarizerReplica = Summarizer.func_or_class  # the plain class behind @serve.deployment


@pytest.fixture(scope="module")
def replica():
    replica = SummarizerReplica()
    replica.reconfigure({"max_sentences": 2, "torch_threads": 1})
    return replica


def test_user_config_sets_the_default_length_and_requests_override_it(replica):
    assert replica.summarize(SOURDOUGH, SummarizeOptions()).pieces == 2
    assert replica.summarize(SOURDOUGH, SummarizeOptions(max_sentences=4)).pieces == 4
    assert "".join(replica.stream(SOURDOUGH, SummarizeOptions(max_sentences=1))).count(". ") == 0


def test_changing_per_call_settings_does_not_reload_the_model(replica):
    model = replica.model
    replica.reconfigure({"max_sentences": 4, "diversity": 0.5, "torch_threads": 1})
    assert replica.model is model
    assert replica.summarize(SOURDOUGH, SummarizeOptions()).pieces == 4
    assert replica.status().model == "extractive/all-MiniLM-L6-v2"


def test_settings_reject_unknown_keys_and_bad_values():
    with pytest.raises(ValueError):
        SummarizerSettings.model_validate({"kind": "magic"})
    with pytest.raises(ValueError):
        SummarizerSettings.model_validate({"max_sentence": 3})
    seq2seq = SummarizerSettings(kind="seq2seq", num_beams=1)
    assert seq2seq.load_params() == {"model": "t5-small", "prefix": None}
    assert seq2seq.call_defaults() == {"num_beams": 1}
