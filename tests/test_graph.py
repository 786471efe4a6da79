"""Gene graphs: fixed degree, self-loops, prior edges, co-expression, deterministic hashing."""

from __future__ import annotations

import numpy as np
import pytest

from sktx.graph import (
    _cosine_knn,
    build_gene_graph,
    gene_set_embedding,
    hash_genes,
    pca_gene_loadings,
    prior_gene_sets,
)


def _coexpressed(n_cells=300, seed=0):
    """Two programmes: genes 0-4 move together, genes 5-9 move together, 10-11 noise."""
    rng = np.random.RandomState(seed)
    z = rng.normal(size=(n_cells, 2))
    X = np.abs(rng.normal(scale=0.1, size=(n_cells, 12)))
    X[:, :5] += np.abs(z[:, :1]) * 2
    X[:, 5:10] += np.abs(z[:, 1:]) * 2
    return X


def test_graph_fixed_degree_self_first_unique():
    X = _coexpressed()
    genes = [f"G{i}" for i in range(12)]
    g = build_gene_graph(X, genes, n_neighbors=4, gene_sets=False)
    assert g.neighbors.shape == (12, 4)
    assert (g.neighbors[:, 0] == np.arange(12)).all()
    assert all(len(set(row)) == 4 for row in g.neighbors.tolist())
    assert (g.source[:, 0] == 0).all() and (g.source[:, 1:] == 2).all()
    csr = g.to_csr()
    assert csr.shape == (12, 12) and csr.nnz == 48


def test_coexpression_neighbours_follow_programmes():
    g = build_gene_graph(
        _coexpressed(), [f"G{i}" for i in range(12)], n_neighbors=4, gene_sets=False
    )
    for i in range(5):
        assert set(g.neighbors[i, 1:]) <= set(range(5))
    for i in range(5, 10):
        assert set(g.neighbors[i, 1:]) <= set(range(5, 10))


def test_prior_edges_from_gene_sets():
    rng = np.random.RandomState(1)
    X = rng.rand(100, 12)  # no co-expression structure
    genes = [f"G{i}" for i in range(12)]
    sets = {"a": genes[:6], "b": genes[6:], "c": genes[:3], "d": genes[9:]}
    g = build_gene_graph(X, genes, n_neighbors=5, gene_sets=sets, prior_fraction=0.5)
    for i in range(12):
        prior = g.neighbors[i][g.source[i] == 1]
        assert len(prior) == 2
        same = set(range(6)) if i < 6 else set(range(6, 12))
        assert set(prior) <= same
    assert g.neighbors_of("G0")["G0"] == "self"


def test_degree_clipped_to_gene_count():
    g = build_gene_graph(np.random.RandomState(0).rand(20, 3), ["A", "B", "C"], n_neighbors=16)
    assert g.neighbors.shape == (3, 3)


def test_hash_is_deterministic_and_salt_free():
    # fixed values: Python's salted hash() would change between processes
    h = hash_genes(["GATA1", "gata1", "KLF1"])
    assert h.tolist()[0] == h.tolist()[1]
    assert h.shape == (3, 2)
    assert (h[:, 0] < 2**14).all() and (h[:, 1] >= 2**14).all()
    assert h.tolist()[0] == hash_genes(["GATA1"]).tolist()[0]
    assert h[0].tolist() == [13326, 28221]


def test_gene_set_embedding_and_reader(tmp_path):
    gmt = tmp_path / "sets.gmt"
    gmt.write_text("a\tdesc\tX\tY\tZ\nb\tdesc\tY\tW\n")
    sets = prior_gene_sets(str(gmt))
    assert sets == {"a": ["X", "Y", "Z"], "b": ["Y", "W"]}
    genes, emb = gene_set_embedding(sets, n_components=8)
    assert set(genes) == {"X", "Y", "Z", "W"} and emb.shape == (4, 8)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert prior_gene_sets(False) == {}
    with pytest.raises(FileNotFoundError, match="not found"):
        prior_gene_sets(str(tmp_path / "missing.gmt"))


def test_prior_gene_sets_is_the_shared_grammar(tmp_path, monkeypatch):
    from sktx.genesets import _io, read_gene_sets

    gmt = tmp_path / "sets.gmt"
    gmt.write_text("a\tdesc\tG0\tG1\tG2\nb\tdesc\tG5\tG6\n")
    specs = [str(gmt), f"{gmt}::b", {"p": f"{gmt}::a", "q": ["G7", "G8"]}, [gmt, {"c": ["G9"]}]]
    for spec in specs:
        assert prior_gene_sets(spec) == read_gene_sets(spec)
    assert prior_gene_sets(f"{gmt}::b") == {"b": ["G5", "G6"]}
    # the graph and every later reader share one parse of the file
    calls = []
    parse = _io._parse_gmt
    monkeypatch.setattr(_io, "_parse_gmt", lambda path: calls.append(path) or parse(path))
    gmt.write_text("a\tdesc\tG0\tG1\tG2\tG3\nb\tdesc\tG5\tG6\n")  # a new version
    X, genes = _coexpressed(), [f"G{i}" for i in range(12)]
    first = build_gene_graph(X, genes, n_neighbors=4, gene_sets=str(gmt))
    again = build_gene_graph(X, genes, n_neighbors=4, gene_sets=gmt)
    prior_gene_sets(str(gmt))
    assert len(calls) == 1
    np.testing.assert_array_equal(first.neighbors, again.neighbors)
    with pytest.raises(TypeError, match="`gene_sets` must be None, False"):
        prior_gene_sets(3.5)


def test_builtin_gene_sets_are_used_by_default():
    sets = prior_gene_sets(None)
    assert sets and all(isinstance(v, list) for v in sets.values())


def test_go_bp_embedding_covers_unmeasured_genes(genesets_dir):
    sets = prior_gene_sets(str(genesets_dir / "go_bp_2021.gmt"))
    genes, emb = gene_set_embedding(sets, 32)
    assert len(genes) > 14000 and emb.shape == (len(genes), 32)
    row = {g: i for i, g in enumerate(genes)}
    # functionally related genes are closer than unrelated ones
    cos = emb[row["MAPK1"]] @ emb[row["MAPK3"]]
    assert cos > emb[row["MAPK1"]] @ emb[row["HBB"]]


def test_pca_loadings_sparse_and_dense_agree():
    import scipy.sparse as sp

    X = _coexpressed()
    dense = pca_gene_loadings(X, 3)
    sparse = pca_gene_loadings(sp.csr_matrix(X), 3)
    assert dense.shape == (12, 3)
    assert np.allclose(np.abs(dense), np.abs(sparse), atol=1e-4)


def test_pca_of_a_wide_sparse_matrix_is_randomized_and_agrees(monkeypatch):
    import scipy.sparse as sp

    import sktx.graph as graph

    rng = np.random.RandomState(0)
    # rank-3 signal plus a little noise: both solvers find the same 3 components
    X = rng.rand(300, 3) @ rng.rand(3, 40) * 3 + rng.rand(300, 40) * 0.01
    arpack = pca_gene_loadings(sp.csr_matrix(X), 3)
    calls = []
    real_toarray = sp.csr_matrix.toarray
    monkeypatch.setattr(graph, "_PCA_ARPACK_MAX_GENES", 30)
    monkeypatch.setattr(
        sp.csr_matrix, "toarray", lambda self, *a, **k: calls.append(1) or real_toarray(self)
    )
    randomized = pca_gene_loadings(sp.csr_matrix(X), 3)
    assert calls, "a panel wider than _PCA_ARPACK_MAX_GENES is densified"
    assert randomized.dtype == np.float32
    np.testing.assert_allclose(np.abs(randomized), np.abs(arpack), atol=2e-3)


def _tied_groups(noise: float) -> np.ndarray:
    """Three groups of four rows, equal within a group up to ``noise``."""
    rng = np.random.RandomState(0)
    emb = np.repeat(rng.randn(3, 8), 4, axis=0)
    return emb + rng.randn(*emb.shape) * noise


@pytest.mark.parametrize("noise", [0.0, 1e-13])
def test_cosine_knn_breaks_ties_by_index_whatever_the_float_noise(noise):
    # genes in exactly the same sets have equal embedding rows; which of them become
    # neighbours must not depend on last-bit rounding (sklearn's NearestNeighbors
    # ordered such ties differently with 1 and 2 threads)
    idx = _cosine_knn(_tied_groups(noise), 3)
    expected = [[j for j in range(4 * (i // 4), 4 * (i // 4) + 4) if j != i] for i in range(12)]
    assert idx.tolist() == expected


def test_cosine_knn_next_group_also_in_index_order_and_chunking_changes_nothing(monkeypatch):
    import sktx.graph as graph

    emb = _tied_groups(1e-13)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    idx = _cosine_knn(emb, 5)
    for i in range(12):
        g = i // 4
        cos = [unit[i] @ unit[4 * h] if h != g else -np.inf for h in range(3)]
        nxt = int(np.argmax(cos))
        assert idx[i, 3:].tolist() == [4 * nxt, 4 * nxt + 1]
    monkeypatch.setattr(graph, "_KNN_CHUNK", 5)
    assert np.array_equal(graph._cosine_knn(emb, 5), idx)


def test_cosine_knn_without_ties_matches_the_euclidean_order_of_unit_rows():
    from sklearn.neighbors import NearestNeighbors

    X = np.random.RandomState(1).randn(300, 6)
    X[:3] = 0  # zero rows stay zero and sit at distance 1 from every unit row
    unit = np.zeros_like(X)
    unit[3:] = X[3:] / np.linalg.norm(X[3:], axis=1, keepdims=True)
    _, ref = NearestNeighbors(n_neighbors=8).fit(unit).kneighbors(unit[3:])
    ref = np.array([r[r != i + 3][:7] for i, r in enumerate(ref)])
    assert np.array_equal(_cosine_knn(X, 7)[3:], ref)
