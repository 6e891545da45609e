"""The weight converter's own checks, without a framework: the job runners (`python -m tf_impl.jobs`,
`python -m torch_impl.jobs`) are replaced by stand-ins that write what a runner would, or fail, so each
refusal and clean-up is tested in milliseconds. The real round trips are in test_compare_cli.py."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from compare import convert
from data import arch, weights as neutral

from test_compare_cli import cli

MNIST = ((28, 28, 1), 10)


def save_weights(path, model: str = "cnn", seed: int = 0):
    """A neutral weights file of `model` for MNIST at `path` (whatever its suffix: np.load reads the zip)."""
    neutral.save(path, neutral.initial_weights(arch.build_layers(model, *MNIST), seed))
    return path


def quiet(_line: str) -> None:
    pass


def test_weights_exported_from_a_native_file_are_checked_against_the_model(tmp_path, monkeypatch):
    """A .keras file of another model exported fine and was written out as a cnn's .npz when the exported
    weights were not checked (or the source file was checked in their place: here it holds a valid cnn's
    arrays, as a stand-in, while the export yields an MLP's)."""
    src = save_weights(tmp_path / "model.keras", "cnn")

    def export_an_mlp(backend, job, work, threads, debug=False):
        assert (backend, job["op"]) == ("tf", "export")
        save_weights(job["out"], "mlp")
    monkeypatch.setattr(convert, "_run_jobs", export_an_mlp)
    with pytest.raises(convert.ConvertError, match=r"model\.keras does not hold a cnn for mnist \(.*check --model"):
        convert.convert("cnn", "mnist", src, tmp_path / "out.npz", log=quiet)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]  # nothing written, no partial file


def test_a_failed_job_runner_is_quoted_by_its_last_stderr_lines(tmp_path, monkeypatch):
    """The error quotes the end of the child's stderr, where Python puts the exception (the first lines of
    a long traceback passed), without its blank lines."""
    stderr = "\n".join(f"line {i}" + ("\n" if i % 5 == 0 else "") for i in range(20)) + "\n\n"
    monkeypatch.setattr(convert.subprocess, "run",
                        lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, stdout="", stderr=stderr))
    with pytest.raises(convert.ConvertError) as e:
        convert._run_jobs("tf", {"op": "export"}, tmp_path, 0)
    tail = " / ".join(f"line {i}" for i in range(20 - convert.STDERR_TAIL_LINES, 20))
    assert str(e.value) == f"python -m tf_impl.jobs (export) failed with exit status 1: {tail}"
    monkeypatch.setattr(convert.subprocess, "run",
                        lambda cmd, **kw: subprocess.CompletedProcess(cmd, -9, stdout="", stderr=""))
    with pytest.raises(convert.ConvertError, match="exit status -9: no message$"):
        convert._run_jobs("torch", {"op": "import"}, tmp_path, 0)


@pytest.mark.parametrize("leaves", ["file", "folder"])
def test_a_failed_import_leaves_no_partial_target(tmp_path, monkeypatch, leaves):
    """The target is written under a hidden partial name and renamed when whole; an importer that failed
    half-way left that partial file (or folder) behind when the clean-up was dropped."""
    src = save_weights(tmp_path / "w.npz")

    def import_half(backend, job, work, threads, debug=False):
        assert (backend, job["op"]) == ("tf", "import") and job["out"].startswith(str(tmp_path.resolve()))
        if leaves == "file":
            with open(job["out"], "wb") as f:
                f.write(b"half a model")
        else:
            Path(job["out"]).mkdir()
            (Path(job["out"]) / "variables").write_bytes(b"half")
        raise convert.ConvertError("python -m tf_impl.jobs (import) failed with exit status -9: no message")
    monkeypatch.setattr(convert, "_run_jobs", import_half)
    with pytest.raises(convert.ConvertError, match="exit status -9"):
        convert.convert("cnn", "mnist", src, tmp_path / "model.keras", log=quiet)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.npz"]


def test_a_missing_target_folder_is_a_one_line_exit_2(tmp_path, monkeypatch, capsys):
    """--to in a folder that does not exist: one line naming it, exit 2, before any child runs (without the
    check the copy failed with exit 1, after the export)."""
    monkeypatch.chdir(tmp_path)
    save_weights(tmp_path / "w.npz")
    rc, err = cli(["convert", "--model", "cnn", "--dataset", "mnist", "--from", "w.npz", "--to", "nowhere/o.npz"],
                  capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "--to nowhere/o.npz: folder nowhere does not exist; create it first" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.npz"]


@pytest.mark.parametrize("to", ["w.npz", "sub/../w.npz", "link.npz"])
def test_the_same_file_as_source_and_target_is_refused(tmp_path, monkeypatch, capsys, to):
    """--from and --to naming one file, however spelt (a symlink, a '..'), would replace the source with
    its own copy: refused with exit 2 and the file left as it was."""
    monkeypatch.chdir(tmp_path)
    src = save_weights(tmp_path / "w.npz")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.npz").symlink_to(src)
    before = src.read_bytes()
    rc, err = cli(["convert", "--model", "cnn", "--dataset", "mnist", "--from", "w.npz", "--to", to], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "--from and --to are the same file; choose another --to" in err, err
    assert src.read_bytes() == before and (tmp_path / "link.npz").is_symlink()
