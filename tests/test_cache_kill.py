"""A writer killed with SIGKILL in the middle of a cache write leaves the cache usable: the next run reuses every
valid entry, recomputes the interrupted one and removes the killed writer's temporary file. And the other
atomic writes' contracts."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from hspace.cache import ArtifactCache
from hspace.files import atomic_write_bytes

WRITER = textwrap.dedent(
    """
    import sys, time
    from hspace.cache import ArtifactCache
    from hspace.files import atomic_write_bytes

    def slow_save(value, path):
        def write(f):
            f.write(value[:4])
            f.flush()
            print("writing", flush=True)
            time.sleep(60)  # killed here
            f.write(value[4:])
        atomic_write_bytes(path, write)

    ArtifactCache(sys.argv[1]).get("blob", {"key": "b"}, lambda: b"0123456789", slow_save, lambda p: p.read_bytes())
    """
)


def save(value: bytes, path) -> None:
    atomic_write_bytes(path, lambda f: f.write(value))


def load(path) -> bytes:
    data = path.read_bytes()
    if len(data) != 10:
        raise ValueError("truncated")
    return data


def test_kill_during_a_cache_write_leaves_a_usable_cache(tmp_path):
    cache = ArtifactCache(tmp_path)
    cache.get("blob", {"key": "a"}, lambda: b"aaaaaaaaaa", save, load)  # a valid entry from an earlier run
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=30)
    leftovers = list((tmp_path / "blob").glob(".*.tmp"))
    assert len(leftovers) == 1 and not cache.path("blob", {"key": "b"}).exists()  # no entry, a stale temp file

    start = time.perf_counter()
    again = ArtifactCache(tmp_path)
    assert again.get("blob", {"key": "a"}, lambda: b"recomputed", save, load) == b"aaaaaaaaaa"
    assert again.get("blob", {"key": "b"}, lambda: b"0123456789", save, load) == b"0123456789"
    assert again.hits == [f"blob/{cache.path('blob', {'key': 'a'}).name}"] and len(again.misses) == 1
    assert not list((tmp_path / "blob").glob(".*.tmp"))  # the killed writer's temporary file is gone
    assert time.perf_counter() - start < 10  # the dead writer's lock did not block the next one


def test_entries_get_the_usual_file_mode(tmp_path):
    old = os.umask(0o022)
    try:
        ArtifactCache(tmp_path).get("blob", {"key": "a"}, lambda: b"aaaaaaaaaa", save, load)
    finally:
        os.umask(old)
    (entry,) = (tmp_path / "blob").glob("*.safetensors")
    assert entry.stat().st_mode & 0o777 == 0o644


def test_an_unreadable_entry_is_discarded_with_a_note(tmp_path, capsys):
    cache = ArtifactCache(tmp_path)
    path = cache.path("blob", {"key": "a"})
    path.parent.mkdir(parents=True)
    path.write_bytes(b"abc")
    assert cache.get("blob", {"key": "a"}, lambda: b"aaaaaaaaaa", save, load) == b"aaaaaaaaaa"
    assert "discarding the unreadable cache entry" in capsys.readouterr().err


def test_an_entry_the_disk_fails_to_read_is_kept(tmp_path):
    """A read error of the disk (or of memory) is not the entry's fault: the run stops in one line and the entry,
    which may have taken long to compute, stays."""
    import pytest

    from hspace.errors import UserError

    cache = ArtifactCache(tmp_path)
    cache.get("blob", {"key": "a"}, lambda: b"aaaaaaaaaa", save, load)

    def failing_disk(path):
        raise OSError(5, "Input/output error")

    with pytest.raises(UserError, match=r"cannot read the cache entry .* \(Input/output error\)"):
        cache.get("blob", {"key": "a"}, lambda: b"recomputed", save, failing_disk)
    assert cache.get("blob", {"key": "a"}, lambda: b"recomputed", save, load) == b"aaaaaaaaaa"

    def out_of_memory(path):
        raise MemoryError

    with pytest.raises(MemoryError):
        cache.get("blob", {"key": "a"}, lambda: b"recomputed", save, out_of_memory)
    assert cache.get("blob", {"key": "a"}, lambda: b"recomputed", save, load) == b"aaaaaaaaaa"


def test_an_entry_removed_while_it_is_read_is_a_miss(tmp_path):
    """Another job that found the entry damaged removed it between the check and the read: computed again."""
    cache = ArtifactCache(tmp_path)
    cache.get("blob", {"key": "a"}, lambda: b"aaaaaaaaaa", save, load)

    def removed_meanwhile(path):
        path.unlink()
        return load(path)

    assert cache.get("blob", {"key": "a"}, lambda: b"recomputed", save, removed_meanwhile) == b"recomputed"
    assert cache.get("blob", {"key": "a"}, lambda: b"other", save, load) == b"recomputed"


def test_a_cache_that_cannot_be_written_is_one_line(tmp_path):
    import pytest

    from hspace.errors import UserError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="is a file: point cache_dir or HSPACE_CACHE"):
        ArtifactCache(blocker).check_writable()
    if os.geteuid() != 0:  # root writes anywhere
        readonly = tmp_path / "readonly"
        readonly.mkdir(mode=0o555)
        with pytest.raises(UserError, match="cannot be written"):
            ArtifactCache(readonly).check_writable()


def test_a_directory_write_replaces_an_earlier_one_but_not_a_folder_of_other_files(tmp_path):
    from hspace.errors import UserError
    from hspace.files import atomic_write_directory

    def fill(version):
        return lambda staging: (staging / "weights.bin").write_text(version)

    target = tmp_path / "model"
    atomic_write_directory(target, fill("1"))
    atomic_write_directory(target, fill("2"))  # an earlier write of the same kind is replaced
    assert (target / "weights.bin").read_text() == "2"
    (target / "last.ckpt").write_text("a checkpoint")
    with pytest.raises(UserError, match=r"model already exists and holds last.ckpt, which this write would delete"):
        atomic_write_directory(target, fill("3"))
    assert sorted(p.name for p in target.iterdir()) == ["last.ckpt", "weights.bin"]
    assert (target / "weights.bin").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.lock", "model"]  # no staging folder left beside it


def test_a_directory_replacement_that_fails_keeps_the_earlier_write(tmp_path, monkeypatch):
    """The earlier directory is renamed aside before the new one takes its place: when that last rename fails
    (a full disk), the earlier one is put back, and nothing is left beside it."""
    from pathlib import Path

    from hspace.files import atomic_write_directory

    target = tmp_path / "model"
    atomic_write_directory(target, lambda staging: (staging / "weights.bin").write_text("1"))
    rename = Path.rename

    def fails_into_place(self, destination):
        if Path(destination) == target and self.name.startswith(".model."):  # the new write's staging folder
            raise OSError(28, "No space left on device")
        return rename(self, destination)

    monkeypatch.setattr(Path, "rename", fails_into_place)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_directory(target, lambda staging: (staging / "weights.bin").write_text("2"))
    assert (target / "weights.bin").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.lock", "model"]


def test_a_directory_write_clears_what_a_killed_writer_left_and_puts_back_what_it_had_moved_aside(tmp_path):
    """A writer killed while filling its staging folder leaves it beside the target; one killed between
    moving the earlier directory aside and moving the new one in leaves the target missing. The next writer,
    holding the target's lock, clears both and restores the earlier directory first; other hidden folders
    beside the target are left alone."""
    import shutil

    from hspace.files import atomic_write_directory

    target = tmp_path / "model"
    atomic_write_directory(target, lambda staging: (staging / "weights.bin").write_text("1"))
    (tmp_path / ".model.abc12345").mkdir()  # a killed writer's half-filled staging folder
    (tmp_path / ".model.abc12345" / "weights.bin").write_text("half")
    aside = tmp_path / ".model.old.def_6789"
    aside.mkdir()
    shutil.move(target, aside / "model")  # killed right after moving the earlier write aside
    (tmp_path / ".model.backup").mkdir()  # not a name a writer makes
    assert not target.exists()

    def fails(staging):
        raise RuntimeError("the fill fails")

    with pytest.raises(RuntimeError):  # even a write that fails puts the earlier directory back first
        atomic_write_directory(target, fails)
    assert (target / "weights.bin").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.backup", ".model.lock", "model"]
    (tmp_path / ".model.old.ghi_0123").mkdir()  # killed after the new write moved in: the old copy goes
    (tmp_path / ".model.old.ghi_0123" / "model").mkdir()
    atomic_write_directory(target, lambda staging: (staging / "weights.bin").write_text("2"))
    assert (target / "weights.bin").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.backup", ".model.lock", "model"]


def test_writers_of_one_directory_take_turns(tmp_path):
    """The second writer waits for the first's lock; neither sees the other's staging folder as a dead one."""
    import threading

    from hspace.files import atomic_write_directory

    target = tmp_path / "model"
    started, release = threading.Event(), threading.Event()

    def slow(staging):
        (staging / "weights.bin").write_text("first")
        started.set()
        release.wait(timeout=30)

    first = threading.Thread(target=atomic_write_directory, args=(target, slow))
    first.start()
    assert started.wait(timeout=30)
    second = threading.Thread(
        target=atomic_write_directory, args=(target, lambda staging: (staging / "weights.bin").write_text("second"))
    )
    second.start()
    second.join(timeout=0.5)
    assert second.is_alive() and not target.exists()  # waiting, and the first's staging folder is intact
    release.set()
    first.join(timeout=30)
    second.join(timeout=30)
    assert (target / "weights.bin").read_text() == "second"


def test_ranks_use_an_entry_only_when_every_rank_could_read_it(tmp_path):
    """get_across_ranks: an entry this rank reads but another could not is computed again by all (together), so
    that no rank waits in the computation's gathers for one that returned early."""

    class OtherRankFailed:
        is_split, rank = True, 1

        def all_agree(self, value: bool) -> bool:
            return False  # this rank read it; rank 0 did not

        def barrier(self) -> None:
            pass

    cache = ArtifactCache(tmp_path)
    cache.get("blob", {"key": "a"}, lambda: b"aaaaaaaaaa", save, load)
    value = cache.get_across_ranks("blob", {"key": "a"}, lambda: b"computed", save, load, OtherRankFailed())
    assert value == b"computed"
