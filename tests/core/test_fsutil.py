import pytest

from dlsec.fsutil import atomic_write_text, atomic_write_with, sha256_file


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")

    def half_write(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write_with(target, half_write)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_sha256_of_a_known_string(tmp_path):
    path = atomic_write_text(tmp_path / "abc", "abc")
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_secret_mode_is_applied(tmp_path):
    path = atomic_write_text(tmp_path / "key", "s", mode=0o600)
    assert path.stat().st_mode & 0o777 == 0o600
