"""The sentence encoder on ONNX Runtime against sentence-transformers, on the real all-MiniLM-L6-v2 weights."""

import json
import subprocess
import sys

import numpy as np
import pytest

from backend.models.sentence_encoder import supports
from backend.models.text import ExtractiveSummarizer, default_sentence_encoder_path, split_sentences
from bench.load import ARTICLE_600
from tests.conftest import ROOT
from ui.examples import APOLLO_11, SOURDOUGH

ARTICLES = {"apollo": APOLLO_11, "sourdough": SOURDOUGH, "bench-600-words": ARTICLE_600.read_text(encoding="utf-8")}
# float32 through two runtimes: measured ~2e-7 apart; a real difference (another pooling) is ~1e-1.
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="module")
def on_onnx(cache_dir):
    return ExtractiveSummarizer.load(runtime="onnx", cache_dir=cache_dir)


@pytest.fixture(scope="module")
def on_torch():
    return ExtractiveSummarizer.load(runtime="torch")


@pytest.mark.parametrize("article", ARTICLES)
def test_embeddings_match_sentence_transformers_and_pick_the_same_sentences(on_onnx, on_torch, article):
    text = ARTICLES[article]
    sentences = split_sentences(text)
    difference = np.abs(on_onnx.forward(sentences) - on_torch.forward(sentences)).max()
    assert difference <= TOLERANCE
    assert on_onnx.summarize(text).text == on_torch.summarize(text).text


def test_the_encoder_process_never_imports_torch_and_exports_once(on_onnx, tmp_path):
    """The Summarizer replica's first start exports in a child process; a second load reuses the file."""
    cache_dir = tmp_path / "cache"
    script = (
        "import sys\n"
        "from backend.models.text import ExtractiveSummarizer\n"
        f"model = ExtractiveSummarizer.load(runtime='onnx', cache_dir={str(cache_dir)!r})\n"
        "from pathlib import Path\n"
        f"exported = next(Path({str(cache_dir)!r}).glob('*.onnx')).stat().st_mtime_ns\n"
        f"model = ExtractiveSummarizer.load(runtime='onnx', cache_dir={str(cache_dir)!r})\n"
        f"print(model.summarize({APOLLO_11!r}).text)\n"
        "print('torch' in sys.modules)\n"
        f"print(next(Path({str(cache_dir)!r}).glob('*.onnx')).stat().st_mtime_ns == exported)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    summary, torch_loaded, reused = done.stdout.strip().splitlines()[-3:]
    assert summary == on_onnx.summarize(APOLLO_11).text
    assert torch_loaded == "False"
    assert reused == "True"
    assert len(list(cache_dir.glob("*"))) == 1  # the export only: no partial file left behind


def test_a_checkpoint_with_other_pooling_stays_on_sentence_transformers(tmp_path, on_torch):
    """CLS pooling is not what the ONNX encoder computes: such a checkpoint runs as sentence-transformers
    does, with its own pooling, rather than with the wrong one."""
    packaged = default_sentence_encoder_path()
    checkpoint = tmp_path / "minilm-cls"
    checkpoint.mkdir()
    for item in packaged.iterdir():
        (checkpoint / item.name).symlink_to(item)
    (checkpoint / "1_Pooling").unlink()
    (checkpoint / "1_Pooling").mkdir()
    pooling = json.loads((packaged / "1_Pooling" / "config.json").read_text())
    pooling |= {"pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True}
    (checkpoint / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    assert supports(packaged) and not supports(checkpoint)

    cls_pooled = ExtractiveSummarizer.load(checkpoint, runtime="onnx", cache_dir=tmp_path / "cache")
    sentences = split_sentences(APOLLO_11)
    assert not (tmp_path / "cache").exists()  # nothing exported
    assert np.abs(cls_pooled.forward(sentences) - on_torch.forward(sentences)).max() > 100 * TOLERANCE
