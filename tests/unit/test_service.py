"""Start-up housekeeping of the service tree."""

from imgfac_twisted.service import remove_unfinished_work


def test_half_made_work_of_a_killed_daemon_is_removed(tmp_path):
    """Staging folders and builds' work files (base images, whole or partial) go at start; target images and logs stay."""
    staging = tmp_path / "builders" / "b1" / "staging"
    staging.mkdir(parents=True)
    (staging / "half.qcow2").write_bytes(b"half")
    (tmp_path / "builders" / "b1" / "builder.log").write_text("log")
    (tmp_path / "builders" / "b2").mkdir()
    (tmp_path / "builders" / "b2" / "image.raw").write_bytes(b"done")
    build = tmp_path / "builds" / "d1"
    build.mkdir(parents=True)
    (build / "base.raw.partial").write_bytes(b"half")
    (build / "base.raw").write_bytes(b"done")
    (build / "console.log").write_text("installer said")
    remove_unfinished_work(str(tmp_path))
    assert not staging.exists() and not build.exists()
    assert (tmp_path / "builders" / "b1" / "builder.log").exists()
    assert (tmp_path / "builders" / "b2" / "image.raw").exists()
