"""load_h5ad on the real shared files and on broken ones; fetchers against a local server."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import threading

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from sktx import DataContractError
from sktx.datasets import _fetch, fetch_norman2019, get_data_dir, load_h5ad, make_perturbseq


def _small_counts(path, *, key="target_gene", control="non-targeting"):
    adata = make_perturbseq(
        n_cells=150,
        n_genes=25,
        n_perturbations=3,
        n_combinations=1,
        perturbation_key=key,
        control_label=control,
        random_state=1,
    )
    del adata.uns["simulation"]
    adata.write_h5ad(path)
    return adata


# ---------------------------------------------------------------- real data


def test_load_norman_log_normalised(norman_path):
    adata = load_h5ad(
        norman_path,
        perturbation_key="perturbation",
        control_label="control",
        cell_type_key="cell_type",
    )
    assert adata.shape == (5961, 500)
    meta = adata.uns["sktx"]
    assert meta["perturbation_key"] == "perturbation"
    assert meta["control_label"] == "control"
    assert meta["cell_type_key"] == "cell_type"
    assert meta["normalized"] is False
    assert meta["x_is_log1p"] is True
    assert "counts" not in adata.layers  # nothing to keep: the file has no counts
    raw = ad.read_h5ad(norman_path)
    np.testing.assert_array_equal(adata.X.toarray(), raw.X.toarray())


def test_load_datlinger_counts_are_normalised(datlinger_path):
    adata = load_h5ad(datlinger_path, control_label="control")
    raw = ad.read_h5ad(datlinger_path)
    meta = adata.uns["sktx"]
    assert meta["normalized"] is True and meta["x_is_log1p"] is True
    assert meta["target_sum"] == 1e4
    assert "cell_type_key" not in meta
    assert "log1p" in adata.uns
    # counts kept verbatim, X = log1p(counts / total * 1e4)
    np.testing.assert_array_equal(adata.layers["counts"].toarray(), raw.X.toarray())
    counts = raw.X.toarray().astype(np.float64)
    expected = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    np.testing.assert_allclose(adata.X.toarray(), expected, rtol=1e-4, atol=1e-5)


def test_load_normalize_false_and_true(datlinger_path, tmp_path):
    kept = load_h5ad(datlinger_path, control_label="control", normalize=False)
    assert kept.uns["sktx"]["normalized"] is False
    assert kept.uns["sktx"]["x_is_log1p"] is False
    assert float(kept.X.max()) == 271.0
    # forced on a file that looks normalised: treated as counts anyway
    path = tmp_path / "nonint.h5ad"
    a = _small_counts(path)
    a.X = a.X * 1.5  # non-integer "counts" (e.g. ambient-corrected)
    a.write_h5ad(path)
    assert load_h5ad(path, normalize="auto").uns["sktx"]["normalized"] is False
    forced = load_h5ad(path, normalize=True)
    assert forced.uns["sktx"]["normalized"] is True
    np.testing.assert_allclose(np.expm1(forced.X.toarray()).sum(1), 1e4, rtol=1e-3)


def test_load_backed(datlinger_path):
    adata = load_h5ad(datlinger_path, control_label="control", backed="r")
    try:
        assert adata.isbacked
        assert adata.uns["sktx"]["x_is_log1p"] is False
        assert adata.uns["sktx"]["normalized"] is False
        assert adata.n_obs == 7500
    finally:
        adata.file.close()


def test_backed_values_scanned_in_chunks(tmp_path, monkeypatch):
    from sktx.datasets import _io

    path = tmp_path / "neg.h5ad"
    a = _small_counts(path)
    X = a.X.toarray()
    X[140, 3] = -1.0  # in the last chunk
    a.X = sp.csr_matrix(X)
    a.write_h5ad(path)
    monkeypatch.setattr(_io, "_BACKED_CHUNK", 50)
    with pytest.raises(DataContractError, match=r"negative values.*cell000140"):
        load_h5ad(path, backed="r")


def test_backed_refuses_normalize_true_and_rplus(datlinger_path):
    with pytest.raises(ValueError, match="backed"):
        load_h5ad(datlinger_path, control_label="control", backed="r", normalize=True)
    with pytest.raises(ValueError, match="'r\\+'"):
        load_h5ad(datlinger_path, control_label="control", backed="r+")
    with pytest.raises(ValueError, match="normalize"):
        load_h5ad(datlinger_path, control_label="control", normalize="yes")


# ---------------------------------------------------------------- errors


def test_missing_file_names_path_and_shared_folder(tmp_path):
    missing = tmp_path / "nope.h5ad"
    with pytest.raises(FileNotFoundError) as err:
        load_h5ad(missing)
    assert str(missing) in str(err.value)
    assert "../shared/data" in str(err.value)


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(IsADirectoryError, match="directory"):
        load_h5ad(tmp_path)


@pytest.mark.parametrize("content", [b"not an hdf5 file at all", b""])
def test_not_h5ad(tmp_path, content):
    path = tmp_path / "bad.h5ad"
    path.write_bytes(content)
    with pytest.raises(OSError, match=r"could not read .*bad\.h5ad.*write_h5ad") as err:
        load_h5ad(path)
    assert "download it again" in str(err.value)


def test_truncated_h5ad(tmp_path):
    good = tmp_path / "good.h5ad"
    _small_counts(good)
    data = good.read_bytes()
    bad = tmp_path / "truncated.h5ad"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match="truncated"):
        load_h5ad(bad)


@pytest.mark.filterwarnings("ignore:Element .* without encoding metadata")
def test_hdf5_that_is_not_anndata(tmp_path):
    import h5py

    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f["something"] = np.arange(3)
    with pytest.raises(OSError, match=r"could not read .*plain\.h5"):
        load_h5ad(path)


def test_wrong_key_lists_columns_and_suggests(norman_path):
    with pytest.raises(DataContractError) as err:
        load_h5ad(norman_path, perturbation_key="guide", control_label="control")
    msg = str(err.value)
    assert "`obs['guide']` not found" in msg
    assert "`cell_type`" in msg and "`perturbation`" in msg
    assert "perturbation_key='perturbation'" in msg
    assert "norman2019_mcfaline2023_devel.h5ad" in msg


def test_wrong_control_label(datlinger_path):
    with pytest.raises(DataContractError, match=r"no control cells.*'control'"):
        load_h5ad(datlinger_path)  # default 'non-targeting' is not in this file


def test_cell_type_without_controls_warns(tmp_path):
    path = tmp_path / "ct.h5ad"
    a = _small_counts(path)
    ctrl = (a.obs["target_gene"] == "non-targeting").to_numpy()
    a.obs["cell_type"] = np.where(ctrl, "A", "B")
    a.write_h5ad(path)
    with pytest.warns(UserWarning, match=r"\['B'\].*no `non-targeting` cells"):
        load_h5ad(path, cell_type_key="cell_type")


def test_file_on_disk_unchanged(tmp_path):
    path = tmp_path / "x.h5ad"
    _small_counts(path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    load_h5ad(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_written_result_round_trips(tmp_path):
    path = tmp_path / "x.h5ad"
    _small_counts(path)
    out = load_h5ad(path)
    out.write_h5ad(tmp_path / "y.h5ad")
    again = ad.read_h5ad(tmp_path / "y.h5ad")
    assert dict(again.uns["sktx"]) == {k: out.uns["sktx"][k] for k in again.uns["sktx"]}
    assert set(again.uns["sktx"]) == set(out.uns["sktx"])


# ---------------------------------------------------------------- fetchers


@pytest.fixture
def local_server(tmp_path):
    """Serve ``tmp_path/'www'`` on 127.0.0.1 (random port) from a thread."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _scperturb_like(path):
    """A small file labelled like scPerturb: `perturbation`, `control`, `A_B` pairs."""
    adata = make_perturbseq(
        n_cells=160,
        n_genes=30,
        n_perturbations=3,
        n_combinations=1,
        perturbation_key="perturbation",
        control_label="control",
        random_state=3,
    )
    del adata.uns["simulation"]
    adata.obs["perturbation"] = (
        adata.obs["perturbation"].astype(str).str.replace("+", "_", regex=False).astype("category")
    )
    adata.write_h5ad(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_from_local_server(local_server, tmp_path, monkeypatch):
    root, url = local_server
    sha = _scperturb_like(root / "norman.h5ad")
    entry = dataclasses.replace(
        _fetch._REGISTRY["norman2019"], url=f"{url}/norman.h5ad", known_hash=f"sha256:{sha}"
    )
    monkeypatch.setitem(_fetch._REGISTRY, "norman2019", entry)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    cache = tmp_path / "cache"
    monkeypatch.setenv("SKTX_DATA_DIR", str(cache))

    adata = fetch_norman2019()
    assert (cache / entry.filename).exists()
    meta = adata.uns["sktx"]
    assert meta["perturbation_key"] == "target_gene"
    assert meta["control_label"] == "control"
    assert meta["source"] == entry.url
    assert meta["normalized"] is True and "counts" in adata.layers
    labels = set(adata.obs["target_gene"])
    assert "control" in labels
    assert any("+" in lab for lab in labels) and not any("_" in lab for lab in labels)
    # cached: works with the server gone (file already there with the right hash)
    (root / "norman.h5ad").unlink()
    again = fetch_norman2019(data_dir=cache)
    assert again.shape == adata.shape


def test_fetch_wrong_checksum(local_server, tmp_path, monkeypatch):
    root, url = local_server
    _scperturb_like(root / "norman.h5ad")
    entry = dataclasses.replace(
        _fetch._REGISTRY["norman2019"], url=f"{url}/norman.h5ad", known_hash="sha256:" + "0" * 64
    )
    monkeypatch.setitem(_fetch._REGISTRY, "norman2019", entry)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with pytest.raises(ValueError, match=r"checksum mismatch .*norman\.h5ad.*not kept") as err:
        fetch_norman2019(data_dir=tmp_path / "cache")
    assert "0" * 64 in str(err.value)
    assert not (tmp_path / "cache" / entry.filename).exists()


def test_fetch_unreachable(tmp_path, monkeypatch):
    # A port nobody listens on: a clear error naming the URL and the cache folder.
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    entry = dataclasses.replace(
        _fetch._REGISTRY["replogle2022_k562_essential"], url=f"http://127.0.0.1:{port}/x.h5ad"
    )
    monkeypatch.setitem(_fetch._REGISTRY, "replogle2022_k562_essential", entry)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    from sktx.datasets import fetch_replogle2022_k562_essential

    with pytest.raises(OSError, match=r"could not download .*127\.0\.0\.1.*SKTX_DATA_DIR"):
        fetch_replogle2022_k562_essential(data_dir=tmp_path)


def test_registry_urls_and_hashes():
    for name, entry in _fetch._REGISTRY.items():
        assert entry.url.startswith("https://zenodo.org/records/"), name
        assert entry.url.endswith(entry.filename), name
        algo, digest = entry.known_hash.split(":")
        assert algo == "md5" and len(digest) == 32, name


def test_data_dir_order(tmp_path, monkeypatch):
    monkeypatch.setenv("SKTX_DATA_DIR", str(tmp_path / "env"))
    assert get_data_dir() == tmp_path / "env"
    assert get_data_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("SKTX_DATA_DIR")
    assert "sktx" in str(get_data_dir())


def test_docstring_examples():
    import doctest

    from sktx.datasets import _io

    for module in (_io, _fetch):
        result = doctest.testmod(module, verbose=False)
        assert result.failed == 0, module.__name__
    assert doctest.testmod(_io).attempted > 0
