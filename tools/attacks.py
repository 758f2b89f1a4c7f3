"""What an attacker who can write the model store drops into it (tests and ``make chaos``).

Every payload writes a marker file when its code runs, so "the marker does not exist"
proves that no code ran. The skops payload is a working model plus one hidden attribute
that skops builds by calling a callable with arguments from the file
(``ConstructorFromReduceNode``): harmless unless the loader trusts the callable.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

from service.manifest import Manifest
from service.signing import file_sha256, sign, version_files
from service.store import ModelStore

# Callables that run code from a string, and how each is called to write the marker.
CODE_RUNNERS = ("timeit.timeit", "cProfile.run", "builtins.exec", "joblib.load", "_pickle.loads")


class WritesMarker:
    """Unpickling this writes ``marker``: what a hostile pickle does."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (os.system, (f"touch {self.marker}",))


def _value(value: Any, node_id: int) -> dict[str, Any]:
    return {
        "__class__": "str", "__module__": "builtins", "__loader__": "JsonNode",
        "content": json.dumps(value), "is_json": True, "__id__": node_id,
    }  # fmt: skip


def _call_args(runner: str, marker: Path, extra: dict[str, bytes]) -> list[dict[str, Any]]:
    code = f"open({str(marker)!r}, 'w').write('code ran')"
    if runner == "timeit.timeit":  # timeit(stmt, setup): setup runs once, then a million passes
        return [_value("pass", 9001), _value(code, 9002)]
    if runner in ("cProfile.run", "builtins.exec"):
        return [_value(code, 9001)]
    payload = pickle.dumps(WritesMarker(marker))
    if runner == "joblib.load":
        bomb = marker.with_name(marker.name + ".pickle")
        bomb.write_bytes(payload)
        return [_value(str(bomb), 9001)]
    if runner == "_pickle.loads":
        extra["payload.bin"] = payload
        bytes_node = {
            "__class__": "bytes", "__module__": "builtins", "__loader__": "BytesNode",
            "file": "payload.bin", "__id__": 9001,
        }  # fmt: skip
        return [bytes_node]
    raise ValueError(f"no payload for {runner}")


def evil_skops(source: Path, target: Path, marker: Path, runner: str = "timeit.timeit") -> str:
    """Copy a working skops model to ``target`` with a hidden attribute that calls ``runner``.

    Returns the type name skops reports for it (``get_untrusted_types``).
    """
    with zipfile.ZipFile(source) as z:
        files = {n: z.read(n) for n in z.namelist()}
    schema = json.loads(files["schema.json"])
    module, _, name = runner.rpartition(".")
    state = schema["content"]  # the estimator's __dict__ (a DictNode)
    extra: dict[str, bytes] = {}
    state["content"]["_calibration"] = {
        "__class__": name, "__module__": module, "__loader__": "ConstructorFromReduceNode",
        "content": {
            "__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
            "content": _call_args(runner, marker, extra), "__id__": 9000,
        },
    }  # fmt: skip
    key_types = state["key_types"]["content"]
    key_types.append(dict(key_types[0]))  # one more str key
    files["schema.json"] = json.dumps(schema).encode()
    files.update(extra)
    with zipfile.ZipFile(target, "w") as z:
        for member, data in files.items():
            z.writestr(member, data)
    return runner


def plant_version(
    store: ModelStore,
    name: str,
    version: str,
    marker: Path,
    runner: str = "timeit.timeit",
    signing_key: bytes | None = None,
) -> Path:
    """A new version of ``name``: the current one's skops model carrying ``runner``.

    Its manifest trusts ``runner``, lists the digests, has no compiled graph (so the
    skops file is what loads) and is signed when ``signing_key`` is given (an attacker
    who also holds the key: the loader must refuse anyway). Not promoted.
    """
    source = store.manifest(name, store.current(name))
    if source.format != "skops":
        raise ValueError(f"{name} is not a skops model")
    directory = store.version_dir(name, version)
    directory.mkdir()
    artifact = directory / "model.skops"
    evil_skops(store.version_dir(name, source.version) / source.artifact, artifact, marker, runner)
    manifest = source.model_copy(
        update={
            "version": version, "artifact": artifact.name, "sha256": file_sha256(artifact),
            "trusted_types": [runner], "compiled": None, "signature": None,
            "files": version_files(directory),
        }
    )  # fmt: skip
    if signing_key is not None:
        manifest.signature = sign(signing_key, manifest.signed_fields())
    manifest.write(directory)
    return directory


def tamper(directory: Path, **changes: Any) -> Manifest:
    """Rewrite fields of a version's manifest in place, keeping its signature."""
    fields = json.loads((directory / "manifest.json").read_text())
    fields.update(changes)
    (directory / "manifest.json").write_text(json.dumps(fields))
    return Manifest.read(directory)


def copy_version(store: ModelStore, name: str, source: str, target: str) -> Path:
    """A byte-for-byte copy of a signed version under a new directory name."""
    src, dst = store.version_dir(name, source), store.version_dir(name, target)
    dst.mkdir()
    for entry in src.iterdir():
        (dst / entry.name).write_bytes(entry.read_bytes())
    return dst


def signed_copy(store: ModelStore, name: str, source: str, target: str, key: bytes) -> Path:
    """The control: ``source`` republished as ``target`` and signed with the real key."""
    directory = copy_version(store, name, source, target)
    manifest = tamper(directory, version=target)
    manifest.files = version_files(directory)
    manifest.signature = sign(key, manifest.signed_fields())
    manifest.write(directory)
    return directory


def artifacts(version_dir: Path) -> list[Path]:
    """Every artifact of a version: the estimator and, when published, its compiled graph."""
    return sorted(p for p in version_dir.iterdir() if p.name != "manifest.json")


def flip_a_byte(directory: Path) -> None:
    """Bit rot after publishing: a byte in the middle of every artifact flipped, so no
    digest matches any more (refused as ``digest_mismatch``)."""
    for artifact in artifacts(directory):
        data = bytearray(artifact.read_bytes())
        data[len(data) // 2] ^= 0xFF
        artifact.write_bytes(bytes(data))


def cut_short_and_resign(directory: Path, key: bytes, keep: int = 200) -> Manifest:
    """A publisher bug: every artifact cut to ``keep`` bytes, then digested and signed as
    it is, so only loading it can find it broken (``corrupt_artifact``)."""
    manifest = Manifest.read(directory)
    for artifact in artifacts(directory):
        artifact.write_bytes(artifact.read_bytes()[:keep])
    manifest.sha256 = file_sha256(directory / manifest.artifact)
    if manifest.compiled and manifest.compiled.artifact:
        manifest.compiled.sha256 = file_sha256(directory / manifest.compiled.artifact)
    manifest.files = version_files(directory)
    manifest.signature = sign(key, manifest.signed_fields())
    manifest.write(directory)
    return manifest
