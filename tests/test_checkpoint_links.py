"""Links in a checkpoint folder are kept as links, never followed into the results.

A trainable's checkpoint folder may hold a link to a large dataset, to a file
the results' readers must not see, or a dangling one. Copying it into the
trial's folder keeps each as a link: nothing outside the folder is copied, and
a copy that fails part way leaves no partial folder behind.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon
from tuned_client import tune
from tuned_client.checkpoint import copy_tree


def _links_checkpoint(config: dict[str, Any]) -> None:
    import os
    import tempfile

    from tuned_client import tune

    src = tempfile.mkdtemp(dir=config["scratch"])
    with open(os.path.join(src, "weights.bin"), "wb") as f:
        f.write(b"w" * 100)
    os.symlink("/etc", os.path.join(src, "etc_dir"))
    os.symlink(config["secret"], os.path.join(src, "secret_file"))
    os.symlink("/nonexistent/dangling", os.path.join(src, "dangling"))
    os.symlink("weights.bin", os.path.join(src, "relative"))
    tune.report({"step": 1}, checkpoint=tune.Checkpoint.from_directory(src))


def test_links_in_a_checkpoint_are_copied_as_links(daemon: RunningDaemon, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("private key material")
    secret.chmod(0o600)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    tuner = tune.Tuner(
        _links_checkpoint,
        param_space={"secret": str(secret), "scratch": str(scratch)},
        run_config=tune.RunConfig(name="links", storage_path=str(tmp_path / "results")),
    )
    result = tuner.fit()[0]
    assert result.error is None
    assert result.checkpoint is not None
    stored = Path(result.checkpoint.path)
    for name, target in (
        ("etc_dir", "/etc"),
        ("secret_file", str(secret)),
        ("dangling", "/nonexistent/dangling"),
        ("relative", "weights.bin"),
    ):
        assert (stored / name).is_symlink(), name
        assert os.readlink(stored / name) == target
    assert (stored / "relative").read_bytes() == b"w" * 100
    # Nothing of /etc or of the secret came into the results as files.
    files = [p for p in (tmp_path / "results").rglob("*") if p.is_file() and not p.is_symlink()]
    assert not any("private key material" in p.read_text(errors="ignore") for p in files)
    assert sum(p.stat().st_size for p in files) < 1 << 20
    assert not list((tmp_path / "results").rglob(".tmp_checkpoint*"))


def test_a_copy_that_fails_part_way_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for name in ("a", "b", "sub/c"):
        (src / name).write_bytes(b"x" * 1000)
    copied: list[str] = []
    real_copyfile = shutil.copyfile

    def copyfile_until_full(s: str, d: str, **kw: Any) -> Any:
        if copied:
            raise OSError(errno.ENOSPC, "No space left on device")
        copied.append(s)
        return real_copyfile(s, d, **kw)

    monkeypatch.setattr(shutil, "copyfile", copyfile_until_full)  # what copy2 calls
    with pytest.raises(shutil.Error):
        copy_tree(src, tmp_path / "dest")
    assert copied  # one file was copied before the disk "filled"
    assert not (tmp_path / "dest").exists()
