"""A frozen SAM encoder's embeddings on disk: an entry answers only for the same encoder weights,
preprocessing and pixels; what is read back equals what was encoded; a run that reads the store
trains exactly as one that encodes, and the store is not part of a run's config."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from bench import EmbeddingStore, TaskSpec, sam_for
from bench.cli import main
from bench.runs import RunSpec
from bench.sam.embedding_store import encoder_identity

PATCH = 32


def frozen_tiny_sam(pixel_normalization: str = "pretraining"):
    torch.manual_seed(0)
    task = TaskSpec(in_channels=1, num_classes=4, patch_size=(PATCH, PATCH), total_steps=10,
                    options={"sam_model": "tiny", "sam_random_init": True})
    sam = sam_for(task, class_tokens=False, decoder_init="checkpoint", adaptation="frozen", report=False,
                  pixel_normalization=pixel_normalization)
    sam.requires_grad_(False)
    return sam.eval()


def test_an_embedding_read_back_equals_the_one_written_and_answers_only_its_image(tmp_path):
    sam = frozen_tiny_sam()
    images = torch.rand(2, 1, PATCH, PATCH)
    embeddings = sam.embed(images)
    EmbeddingStore(tmp_path, sam).put(images[0], embeddings[0])
    reopened = EmbeddingStore(tmp_path, sam)  # another run or process on the same directory
    assert torch.equal(reopened.get(images[0], torch.device("cpu")), embeddings[0])
    assert reopened.get(images[1], torch.device("cpu")) is None
    changed_pixel = images[0].clone()
    changed_pixel[0, 5, 5] += 1e-3
    assert reopened.get(changed_pixel, torch.device("cpu")) is None
    assert not list(reopened.directory.glob(".partial-*"))


def test_another_encoder_or_preprocessing_never_reads_the_entry(tmp_path):
    sam = frozen_tiny_sam()
    image = torch.rand(1, PATCH, PATCH)
    EmbeddingStore(tmp_path, sam).put(image, sam.embed(image[None])[0])
    other_weight = frozen_tiny_sam()
    with torch.no_grad():
        next(other_weight.image_encoder.parameters()).view(-1)[0] += 1e-3
    other_buffer = frozen_tiny_sam()  # a buffer (as BatchNorm statistics) is part of the encoder too
    other_buffer.image_encoder.register_buffer("statistic", torch.zeros(3))
    other_preprocessing = frozen_tiny_sam(pixel_normalization="sam")
    for other in (other_weight, other_buffer, other_preprocessing):
        assert encoder_identity(other) != encoder_identity(sam)
        assert EmbeddingStore(tmp_path, other).get(image, torch.device("cpu")) is None
    assert EmbeddingStore(tmp_path, frozen_tiny_sam()).get(image, torch.device("cpu")) is not None


def test_a_truncated_entry_counts_as_absent_and_is_written_again(tmp_path):
    sam = frozen_tiny_sam()
    image = torch.rand(1, PATCH, PATCH)
    embedding = sam.embed(image[None])[0]
    store = EmbeddingStore(tmp_path, sam)
    store.put(image, embedding)
    path = store.path_for(image)
    path.write_bytes(path.read_bytes()[:100])
    assert store.get(image, torch.device("cpu")) is None
    store.put(image, embedding)
    assert torch.equal(store.get(image, torch.device("cpu")), embedding)


def test_a_trainable_encoder_is_refused(tmp_path):
    sam = frozen_tiny_sam()
    next(sam.image_encoder.parameters()).requires_grad_(True)
    with pytest.raises(ValueError, match="trainable"):
        EmbeddingStore(tmp_path, sam)


def test_the_store_is_not_part_of_a_runs_config():
    common = dict(method="semisam", dataset="synthetic", labels="1", seed=0, budget="smoke")
    plain = RunSpec(**common, options={"sam_model": "tiny"})
    stored = RunSpec(**common, options={"sam_model": "tiny", "sam_embedding_store": "/somewhere"})
    assert stored.key == plain.key and stored.config() == plain.config()


def test_semisam_runs_with_the_store_train_exactly_as_without_and_skip_encoding(tmp_path, smoke_args):
    """Three smoke runs of one seed: without a store, filling a store, reading it back (from a sweep file)."""
    store = tmp_path / "store"
    common = ["run", "--methods", "semisam", "--dataset", "synthetic", "--labels", "2", "--seeds", "1",
              "--sam-model", "tiny", "--sam-random-init", *smoke_args]
    sweep_file = tmp_path / "sweep.yaml"  # the store as an experiment-file key
    sweep_file.write_text(yaml.safe_dump({"sam_embedding_store": str(store)}))
    outcomes = {}
    for name, extra in (("plain", []), ("filling", ["--sam-embedding-store", str(store)]),
                        ("reading", ["--config", str(sweep_file)])):
        assert main([*common, "--out", str(tmp_path / name), *extra]) == 0
        (run,) = [path.parent for path in (tmp_path / name).rglob("summary.json")]
        outcomes[name] = run
    (encoder_directory,) = [path for path in store.iterdir() if path.is_dir()]
    stored = list(encoder_directory.glob("*.pt"))
    assert stored and json.loads((encoder_directory / "encoder.json").read_text())["image_size"] > 0
    for name in ("filling", "reading"):
        assert (outcomes[name] / "per_case.csv").read_text() == (outcomes["plain"] / "per_case.csv").read_text()
        assert json.loads((outcomes[name] / "summary.json").read_text())["key"] == \
            json.loads((outcomes["plain"] / "summary.json").read_text())["key"]
    hit_fractions = [line.split(",") for line in (outcomes["reading"] / "train_log.csv").read_text().splitlines()]
    column = hit_fractions[0].index("sam_cache_hit_fraction")
    assert float(hit_fractions[1][column]) == 1.0  # the first step already reads every slice from disk
    first_filling = (outcomes["filling"] / "train_log.csv").read_text().splitlines()[1].split(",")[column]
    assert float(first_filling) < 1.0
