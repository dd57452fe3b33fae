"""Pack the SSL4MIS ACDC folder losslessly into one small archive, and unpack it on another machine.

Why: a remote GPU machine that only receives the working tree (64 MiB here) cannot read
``../shared/data/acdc`` (130 MB of float32 h5 files).  The SSL4MIS images are per-volume min-max
normalised integers, so each image has at most a few thousand distinct float32 values: stored as the
table of those values plus a uint16 index per pixel, then xz-compressed, the folder fits in ~21 MB.
Nothing is approximated: unpacking rebuilds every ``image`` (float32), ``label`` (uint8) and every HDF5
attribute bit for bit, and checks each array against the SHA-256 recorded when packing.

    python benchmarks/remote/pack_acdc.py pack ../shared/data/acdc .acdc/volumes.tar.xz --include 'data/*.h5'
    python benchmarks/remote/pack_acdc.py pack ../shared/data/acdc .acdc/slices.tar.xz --include 'data/slices/*.h5'
    python benchmarks/remote/pack_acdc.py unpack .acdc/slices.tar.xz /tmp/data/acdc   # archives merge

Every archive carries the list files; ``--include`` splits the h5 files between archives, so each part
fits one transfer (the slices are ~48 MB packed, the val/test volumes ~18 MB).

The archive is for moving data between one's own machines; never commit it (ACDC's licence).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import sys
import tarfile
import tempfile
from pathlib import Path

import h5py
import numpy as np

MANIFEST = "manifest.json"
ARRAY_KEYS = ("image", "label")


def digest(array: np.ndarray) -> str:
    """Dtype, shape and bytes: two arrays with the same digest are identical."""
    hasher = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    hasher.update(np.ascontiguousarray(array).tobytes())
    return hasher.hexdigest()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def add_bytes(archive: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    archive.addfile(info, io.BytesIO(payload))


def plain_attributes(attributes: h5py.AttributeManager, where: Path) -> dict:
    values = {}
    for key, value in attributes.items():
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise ValueError(f"{where}: attribute {key!r} has dtype {array.dtype}; only numbers are packed")
        values[key] = {"dtype": array.dtype.str, "value": array.tolist()}
    return values


def selected_files(source: Path, include: list[str] | None) -> list[Path]:
    """Every non-h5 file (the lists), and the h5 files matching one of ``include`` (all when None)."""
    files = sorted(path for path in source.rglob("*") if path.is_file())
    h5_files = [path for path in files if path.suffix == ".h5" and (
        include is None or any(path.relative_to(source).match(pattern) for pattern in include))]
    if not h5_files:
        raise FileNotFoundError(f"{source}: no .h5 file matches {include or 'data/*.h5'}; expected the SSL4MIS "
                                "ACDC layout (data/*.h5, data/slices/*.h5)")
    return [path for path in files if path.suffix != ".h5"] + h5_files


def pack(source: Path, archive_path: Path, include: list[str] | None = None) -> dict:
    files = selected_files(source, include)
    manifest: dict = {"h5": {}, "other": []}
    archive_path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive_path, "w:xz", preset=9 | lzma.PRESET_EXTREME) as archive:
        for path in files:
            relative = path.relative_to(source).as_posix()
            if path.suffix != ".h5":
                archive.add(path, arcname=f"other/{relative}")
                manifest["other"].append(relative)
                continue
            with h5py.File(path, "r") as handle:
                if sorted(handle.keys()) != sorted(ARRAY_KEYS):
                    raise ValueError(f"{path}: datasets {sorted(handle.keys())}; expected {list(ARRAY_KEYS)}")
                image, label = handle["image"][()], handle["label"][()]
                entry = {
                    "image_sha256": digest(image),
                    "label_sha256": digest(label),
                    "image_dtype": image.dtype.str,
                    "label_dtype": label.dtype.str,
                    "attributes": {name: plain_attributes(obj.attrs, path)
                                   for name, obj in (("/", handle), ("image", handle["image"]), ("label", handle["label"]))},
                }
            values, index = np.unique(image, return_inverse=True)
            if len(values) > np.iinfo(np.uint16).max + 1:
                raise ValueError(f"{path}: {len(values)} distinct image values do not fit a uint16 index")
            add_bytes(archive, f"h5/{relative}/values.npy", npy_bytes(values))
            add_bytes(archive, f"h5/{relative}/index.npy", npy_bytes(index.reshape(image.shape).astype(np.uint16)))
            add_bytes(archive, f"h5/{relative}/label.npy", npy_bytes(label))
            manifest["h5"][relative] = entry
        add_bytes(archive, MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
    return manifest


def unpack(archive_path: Path, target: Path) -> int:
    """Rebuild the folder; every array is checked against its packed digest."""
    arrays: dict[str, dict[str, np.ndarray]] = {}
    with tarfile.open(archive_path, "r:xz") as archive:
        manifest = json.loads(archive.extractfile(MANIFEST).read())
        for member in archive.getmembers():
            if member.name.startswith("other/"):
                destination = target / member.name.removeprefix("other/")
                destination.parent.mkdir(parents=True, exist_ok=True)
                destination.write_bytes(archive.extractfile(member).read())
            elif member.name.startswith("h5/"):
                relative, part = member.name.removeprefix("h5/").rsplit("/", 1)
                arrays.setdefault(relative, {})[part.removesuffix(".npy")] = np.load(io.BytesIO(archive.extractfile(member).read()))
    if set(arrays) != set(manifest["h5"]):
        raise ValueError(f"{archive_path}: arrays for {len(arrays)} files, manifest lists {len(manifest['h5'])}")
    for relative, parts in arrays.items():
        entry = manifest["h5"][relative]
        image = parts["values"][parts["index"].astype(np.int64)].astype(np.dtype(entry["image_dtype"]))
        label = parts["label"].astype(np.dtype(entry["label_dtype"]))
        for name, array in (("image", image), ("label", label)):
            if digest(array) != entry[f"{name}_sha256"]:
                raise ValueError(f"{archive_path}: {relative} '{name}' does not match its packed digest")
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(destination, "w") as handle:
            handle.create_dataset("image", data=image)
            handle.create_dataset("label", data=label)
            for owner, attributes in entry["attributes"].items():
                obj = handle if owner == "/" else handle[owner]
                for key, stored in attributes.items():
                    obj.attrs[key] = np.asarray(stored["value"], dtype=np.dtype(stored["dtype"]))
    return len(arrays)


def verify(source: Path, unpacked: Path, include: list[str] | None = None) -> None:
    """Every array and attribute of the unpacked folder equals the source's; other files byte-equal."""
    for path in selected_files(source, include):
        twin = unpacked / path.relative_to(source)
        if path.suffix != ".h5":
            if path.read_bytes() != twin.read_bytes():
                raise ValueError(f"{twin}: differs from {path}")
            continue
        with h5py.File(path, "r") as original, h5py.File(twin, "r") as copy:
            for key in ARRAY_KEYS:
                a, b = original[key][()], copy[key][()]
                if a.dtype != b.dtype or a.shape != b.shape or not np.array_equal(a, b):
                    raise ValueError(f"{twin}: '{key}' differs from {path}")
                if dict(original[key].attrs) != dict(copy[key].attrs):
                    raise ValueError(f"{twin}: '{key}' attributes differ from {path}")
            if dict(original.attrs) != dict(copy.attrs):
                raise ValueError(f"{twin}: file attributes differ from {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pack_parser = commands.add_parser("pack", help="pack SOURCE into ARCHIVE, then unpack to a temporary folder and verify")
    pack_parser.add_argument("source", type=Path)
    pack_parser.add_argument("archive", type=Path)
    pack_parser.add_argument("--include", action="append", default=None, metavar="GLOB",
                             help="pack only the h5 files matching GLOB (relative to SOURCE; repeatable)")
    unpack_parser = commands.add_parser("unpack", help="rebuild the folder from ARCHIVE into TARGET")
    unpack_parser.add_argument("archive", type=Path)
    unpack_parser.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    if args.command == "pack":
        manifest = pack(args.source, args.archive, args.include)
        with tempfile.TemporaryDirectory() as scratch:
            unpack(args.archive, Path(scratch))
            verify(args.source, Path(scratch), args.include)
        print(f"{args.archive}: {len(manifest['h5'])} h5 files and {len(manifest['other'])} others, "
              f"{args.archive.stat().st_size / 2**20:.1f} MiB, verified identical after unpacking")
    else:
        count = unpack(args.archive, args.target)
        print(f"{args.target}: {count} h5 files rebuilt and checked against their digests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
