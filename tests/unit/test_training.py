"""The pure parts of the training job (the stratified split, the per-epoch metrics), and `retriever train`
refusing a folder that cannot make a model before it starts anything."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.jobs.train_head import epoch_metrics, stratified_split
from tests.conftest import PHOTOS, ROOT


def test_the_split_keeps_every_breed_on_both_sides():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 2)
    train, val = stratified_split(labels, val_fraction=0.2, seed=0)
    assert sorted([*train, *val]) == list(range(15))
    assert set(labels[train]) == set(labels[val]) == {0, 1, 2}
    assert len(val) == 2 + 1 + 1  # 20% of each breed, at least one


def test_the_split_is_the_same_for_the_same_seed():
    labels = np.repeat(np.arange(4), 6)
    first, second = stratified_split(labels, 0.25, seed=7), stratified_split(labels, 0.25, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize(("labels", "message"), [([0, 0, 0, 1], "at least 2 photos"), ([0, 0, 0], "at least 2 breeds")])
def test_folders_that_cannot_make_a_model_are_refused(labels, message):
    with pytest.raises(ValueError, match=message):
        stratified_split(np.array(labels), 0.2, seed=0)


def test_macro_f1_counts_every_breed_the_same():
    # Nine of one breed right, the one photo of the rare breed wrong: accuracy looks good, macro F1 does not.
    targets = torch.tensor([0] * 9 + [1])
    logits = torch.tensor([[2.0, 0.0]] * 10)
    metrics = epoch_metrics(logits, targets)
    assert metrics["accuracy"] == pytest.approx(0.9)
    assert metrics["macro_f1"] == pytest.approx((18 / 19 + 0) / 2)
    assert metrics["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, targets)))


def test_retriever_train_refuses_such_a_folder_at_once(tmp_path):
    (tmp_path / "photos" / "husky").mkdir(parents=True)
    shutil.copy(PHOTOS["dog"], tmp_path / "photos" / "husky" / "a.jpg")
    shutil.copy(PHOTOS["dog2"], tmp_path / "photos" / "husky" / "b.jpg")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "retriever"), "train", str(tmp_path / "photos")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RETRIEVER_DATA_DIR": str(tmp_path / "data")},
    )
    assert done.returncode == 1
    assert "needs at least 2 breeds" in done.stdout
    assert not (tmp_path / "data" / "mlflow.db").exists()  # refused before any run or Ray work
