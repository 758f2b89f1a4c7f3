"""A store writer's broken entries: read without hanging, refused with a reason, per model.

Every case is something a person who can write the store can leave in it. The
store must never block on it (a FIFO), never read outside the store (a symlink)
and never let it raise out of the calls every other model depends on.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from service.errors import PredictorError
from service.store import ModelStore, StoreEntryBroken


@pytest.fixture(autouse=True)
def _no_hang() -> Iterator[None]:
    """A read that blocks (a FIFO opened without O_NONBLOCK) fails the test instead of hanging."""

    def hung(*_: object) -> None:
        raise TimeoutError("the store blocked on a read")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _bad_utf8(path: Path, outside: Path) -> None:
    path.write_bytes(b"\xff\xfe1\n")


def _directory(path: Path, outside: Path) -> None:
    path.mkdir()


def _fifo(path: Path, outside: Path) -> None:
    os.mkfifo(path)


def _symlink_out(path: Path, outside: Path) -> None:
    target = outside / "planted"
    target.write_text("1\n")
    path.symlink_to(target)


def _not_a_version(path: Path, outside: Path) -> None:
    path.write_text("../../etc\n")


def _huge(path: Path, outside: Path) -> None:
    path.write_bytes(b"1" * 100_000)


BROKEN: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "bad utf-8": (_bad_utf8, "is not UTF-8"),
    "directory": (_directory, "is a directory, not a file"),
    "fifo": (_fifo, "is a FIFO, not a file"),
    "symlink out of the store": (_symlink_out, "leaves the model store"),
    "not a version name": (_not_a_version, "which is not a version name"),
    "oversized": (_huge, "is larger than"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_current_is_reported_for_its_model_only(store: ModelStore, tmp_path, case):
    plant, reason = BROKEN[case]
    current = store.root / "diabetes" / "current"
    current.unlink()
    plant(current, tmp_path)

    assert store.current("diabetes") is None
    problem = store.problem("diabetes")
    assert isinstance(problem, StoreEntryBroken) and reason in problem.message
    assert problem.kind == "bad_current"
    # The model is still listed (so it can be reported), and nothing else changed.
    assert store.names() == ["diabetes", "iris", "iris-rf"]
    assert store.current("iris") == "1" and store.problem("iris") is None


@pytest.mark.parametrize("case", ["bad utf-8", "directory", "fifo", "symlink out of the store"])
def test_broken_manifest_raises_a_503_naming_it(store: ModelStore, tmp_path, case):
    plant, reason = BROKEN[case]
    version = store.version_dir("iris", "1")
    planted = store.version_dir("iris", "2")
    planted.mkdir()
    plant(planted / "manifest.json", tmp_path)

    with pytest.raises(StoreEntryBroken) as err:
        store.manifest("iris", "2")
    assert err.value.status == 503 and err.value.code == "store_entry_broken"
    assert reason in err.value.message
    assert set(store.broken_versions("iris")) == {"2"}
    assert store.manifest("iris", "1").version == "1" and version.is_dir()
    with pytest.raises(StoreEntryBroken):
        store.promote("iris", "2")  # a version that cannot be read is never promoted
    assert store.current("iris") == "1"


def test_manifest_that_is_not_json_or_names_another_version(store: ModelStore):
    planted = store.version_dir("iris", "2")
    planted.mkdir()
    (planted / "manifest.json").write_text("{not json")
    with pytest.raises(StoreEntryBroken, match="manifest is not valid"):
        store.manifest("iris", "2")
    (planted / "manifest.json").write_bytes(
        (store.version_dir("iris", "1") / "manifest.json").read_bytes()
    )
    with pytest.raises(StoreEntryBroken, match="manifest names iris version 1"):
        store.manifest("iris", "2")


def test_model_directory_symlinked_out_of_the_store_is_not_a_model(store: ModelStore, tmp_path):
    outside = tmp_path / "elsewhere"
    (outside / "1").mkdir(parents=True)
    (outside / "current").write_text("1\n")
    (store.root / "evil").symlink_to(outside)
    (store.root / "inside").symlink_to(store.root / "iris")  # inside the store: fine
    assert "evil" not in store.names() and "inside" in store.names()
    with pytest.raises(PredictorError) as err:
        store.manifest("evil", "1")
    assert err.value.status == 404


def test_last_known_good_pointer(store: ModelStore):
    (store.root / "iris" / "verified").unlink(missing_ok=True)  # as before any worker served
    assert store.verified("iris") is None
    assert store.mark_verified("iris", "1") and store.verified("iris") == "1"
    (store.root / "iris" / "verified").write_text("7\n")  # a version that does not exist
    assert store.verified("iris") is None
    with pytest.raises(PredictorError):
        store.promote("iris", "verified")  # the pointer's name is never a version
