"""Image embeddings of a frozen SAM encoder kept on disk, shared by runs, seeds and processes.

A frozen encoder's embedding of an image is a pure function of the encoder's weights, its preprocessing
and the image's pixels.  A method that asks a frozen SAM about the same slices in every run (SemiSAM
encodes every unlabeled slice once per run: ~1h15m of a 2h40m LiteMedSAM run on a 2-core CPU) can read
them back instead of encoding again.  Entries are keyed by a digest of exactly those inputs, so a store
never answers for another checkpoint, input size, normalisation or patch; nothing about a run's config
or method enters the key, and one directory serves every run and every process at once (each file is
written under a temporary name and renamed into place).

Reading an entry instead of encoding changes no result as long as the encoder gives the same numbers
for an image alone as in a batch (LiteMedSAM, 6 slices at 128 px, one and two torch threads: bitwise
equal); the store is therefore not part of a run's config.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from bench.sam.model import AdaptedSAM

STORE_FORMAT = 1


def encoder_identity(sam: AdaptedSAM) -> str:
    """Digest of everything ``AdaptedSAM.embed`` depends on besides the image: the encoder's tensors
    (parameters and buffers, BatchNorm statistics included), its input size and pixel statistics."""
    digest = hashlib.sha256(f"format={STORE_FORMAT};image_size={sam.image_size}".encode())
    for statistics in (sam.pixel_mean, sam.pixel_std):
        digest.update(statistics.detach().cpu().contiguous().numpy().tobytes())
    for name, tensor in sorted(sam.image_encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class EmbeddingStore:
    """``directory/<encoder digest>/<image digest>.pt``, one file per image.

    Only for an encoder that does not train: the digest is taken once, when the store is opened."""

    def __init__(self, directory: str | Path, sam: AdaptedSAM) -> None:
        if not sam.encoder_frozen:
            raise ValueError("EmbeddingStore: the SAM image encoder has trainable parameters; its embeddings "
                             "change as it trains and cannot be stored")
        self.identity = encoder_identity(sam)
        self.directory = Path(directory).expanduser() / self.identity[:24]
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(f"sam_embedding_store={directory}: cannot create {self.directory} ({error})") from error
        about = self.directory / "encoder.json"
        if not about.exists():
            self._write_atomically(about, lambda path: path.write_text(json.dumps(
                {"encoder_sha256": self.identity, "image_size": sam.image_size, "format": STORE_FORMAT},
                indent=2) + "\n"))

    def path_for(self, image: torch.Tensor) -> Path:
        digest = hashlib.sha256(f"{image.dtype};{tuple(image.shape)};".encode())
        digest.update(image.detach().cpu().contiguous().numpy().tobytes())
        return self.directory / f"{digest.hexdigest()}.pt"

    def get(self, image: torch.Tensor, device: torch.device) -> torch.Tensor | None:
        """The stored embedding of ``image`` (one image, ``[C, H, W]``), or ``None``.  An unreadable file
        (say, a disk that filled up) counts as absent and is removed, so that it is written again."""
        path = self.path_for(image)
        if not path.exists():
            return None
        try:
            embedding = torch.load(path, map_location=device, weights_only=True)
        except Exception:  # torch raises several types for a truncated file
            path.unlink(missing_ok=True)
            return None
        return embedding

    def put(self, image: torch.Tensor, embedding: torch.Tensor) -> None:
        path = self.path_for(image)
        if path.exists():
            return
        tensor = embedding.detach().cpu().contiguous().clone()
        self._write_atomically(path, lambda temporary: torch.save(tensor, temporary))

    @staticmethod
    def _write_atomically(path: Path, write) -> None:
        """Another process sees the whole file or none of it."""
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".partial-", suffix=path.suffix)
        os.close(handle)
        try:
            write(Path(temporary))
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
