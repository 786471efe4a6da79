"""A Perturb-seq simulator with a known sparse gene-regulatory network."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.linalg import svds
from sklearn.utils import check_random_state

__all__ = ["make_perturbseq"]

# Cells generated per block: bounds peak memory at ~block x n_genes floats.
_BLOCK = 2048


def _gene_names(n_genes: int, gene_names, rng: np.random.RandomState) -> list[str]:
    if gene_names is None or (isinstance(gene_names, str) and gene_names == "synthetic"):
        width = max(5, len(str(n_genes)))
        return [f"G{i:0{width}d}" for i in range(n_genes)]
    if isinstance(gene_names, str) and gene_names != "symbols":
        raise ValueError(
            f"`gene_names` must be 'synthetic', 'symbols' or a sequence of names, got "
            f"{gene_names!r}."
        )
    if isinstance(gene_names, str):
        from sktx.genesets import BUILTIN_GENE_SETS

        seen: dict[str, None] = {}
        for genes in BUILTIN_GENE_SETS.values():
            seen.update(dict.fromkeys(genes))
        symbols = list(seen)[:n_genes]
        width = max(5, len(str(n_genes)))
        filler = [f"SIM{i:0{width}d}" for i in range(n_genes - len(symbols))]
        names = symbols + filler
        rng.shuffle(names)
        return names
    names = [str(g) for g in gene_names]
    if len(names) < n_genes:
        raise ValueError(
            f"`gene_names` has {len(names)} names but `n_genes={n_genes}`; pass at least "
            "`n_genes` names, 'symbols' or 'synthetic'."
        )
    names = names[:n_genes]
    if len(set(names)) != n_genes:
        dups = pd.Index(names)[pd.Index(names).duplicated()].unique().tolist()[:5]
        raise ValueError(f"`gene_names` must be unique; duplicated: {dups}.")
    return names


def _check_params(
    n_cells,
    n_genes,
    n_perturbations,
    n_combinations,
    control_fraction,
    n_cell_types,
    *,
    regulator_fraction=0.1,
    regulators_per_gene=2.0,
    network_depth=3,
    effect_size=0.8,
    knockdown=(0.6, 0.95),
    interaction_strength=0.3,
    library_size=3000.0,
    dispersion=5.0,
):
    for name, value, low in (
        ("n_cells", n_cells, 2),
        ("n_genes", n_genes, 2),
        ("n_perturbations", n_perturbations, 1),
        ("n_combinations", n_combinations, 0),
        ("n_cell_types", n_cell_types, 1),
        ("network_depth", network_depth, 0),
    ):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")
    for name, value, positive in (
        ("regulators_per_gene", regulators_per_gene, False),
        ("effect_size", effect_size, False),
        ("interaction_strength", interaction_strength, False),
        ("library_size", library_size, True),
        ("dispersion", dispersion, True),
    ):
        if not np.isfinite(value) or value < 0 or (positive and value == 0):
            bound = "> 0" if positive else ">= 0"
            raise ValueError(f"`{name}` must be a finite number {bound}, got {value!r}.")
    if not 0 < regulator_fraction <= 1:
        raise ValueError(f"`regulator_fraction` must be in (0, 1], got {regulator_fraction!r}.")
    lo_hi = tuple(knockdown) if np.ndim(knockdown) == 1 else ()
    if len(lo_hi) != 2 or not 0 <= lo_hi[0] <= lo_hi[1] < 1:
        raise ValueError(
            f"`knockdown` must be a pair (low, high) with 0 <= low <= high < 1, got "
            f"{knockdown!r}; 1 would remove the target entirely (log(0))."
        )
    if n_perturbations > n_genes:
        raise ValueError(
            f"`n_perturbations={n_perturbations}` exceeds `n_genes={n_genes}`: every simulated "
            "target is a measured gene. Lower `n_perturbations` or raise `n_genes`."
        )
    max_combos = n_perturbations * (n_perturbations - 1) // 2
    if n_combinations > max_combos:
        # The default of 5 pairs must not break small screens: clip and say so.
        warnings.warn(
            f"`n_combinations={n_combinations}` exceeds the {max_combos} pairs of "
            f"{n_perturbations} targets; simulating {max_combos}.",
            UserWarning,
            stacklevel=3,
        )
        n_combinations = max_combos
    if not 0 < control_fraction < 1:
        raise ValueError(f"`control_fraction` must be in (0, 1), got {control_fraction!r}.")
    n_labels = n_perturbations + n_combinations
    n_ctrl = max(n_cell_types, round(control_fraction * n_cells))
    if n_cells - n_ctrl < n_labels * n_cell_types:
        raise ValueError(
            f"`n_cells={n_cells}` is too small: after {n_ctrl} control cells, {n_labels} "
            f"perturbations x {n_cell_types} cell types need at least one cell each "
            f"({n_ctrl + n_labels * n_cell_types} cells in all). Raise `n_cells` or lower "
            "`n_perturbations`/`n_combinations`/`n_cell_types`."
        )
    return n_combinations


def _spectral_norm(W: sp.csr_matrix) -> float:
    """Largest singular value; exact for small networks, ARPACK (fixed start) otherwise."""
    if not np.any(W.data):
        return 0.0
    if W.shape[0] <= 500:
        return float(np.linalg.norm(W.toarray(), 2))
    # A fixed start vector keeps the result independent of global random state.
    v0 = np.random.RandomState(0).uniform(0.5, 1.0, size=W.shape[0])
    return float(svds(W, k=1, v0=v0, return_singular_vectors=False)[0])


def _sample_nb(mu: np.ndarray, dispersion: float, gen: np.random.Generator) -> sp.csr_matrix:
    """Negative-binomial counts with mean ``mu`` and inverse overdispersion ``dispersion``.

    The same distribution as the gamma-Poisson mixture, drawn several times
    faster: most Perturb-seq means are tiny, so those entries are drawn by
    inverse CDF on the tail ``P(X > k)`` (one uniform each; only the ~10 %
    non-zero entries iterate), the others by gamma-Poisson. The result is built
    as CSR directly from the non-zero positions.
    """
    r = float(dispersion)
    n_rows, n_cols = mu.shape
    flat = mu.ravel()
    # Inverse CDF is fast where the pmf decays quickly: q = mu / (r + mu) <= 1/2.
    small = flat <= min(r, 10.0)
    all_small = bool(small.all())
    small_idx = None if all_small else np.flatnonzero(small)
    m = flat if all_small else flat[small_idx]
    u = gen.random(m.size)  # float64: resolves tails far below float32's 6e-8 step
    # The tail form P(X > 0) = -expm1(...) stays accurate in float32 for tiny means.
    tail = -np.expm1(-r * np.log1p(m / r))
    active = np.flatnonzero(u < tail)
    m, tail, u = m[active], tail[active], u[active].astype(np.float32)
    q = m / (r + m)
    p = np.exp(-r * np.log1p(m / r))  # P(X = 0)
    values = np.zeros(m.size, dtype=np.float32)
    pos = np.arange(m.size)
    k = 0
    while pos.size:
        # pmf recursion P(k+1) = P(k) * q * (k + r) / (k + 1); the count is the
        # first k whose tail P(X > k) falls to u or below.
        p *= q
        p *= (k + r) / (k + 1)
        tail -= p
        k += 1
        done = (u >= tail) | (p == 0)  # p == 0: tail underflowed, stop there
        values[pos[done]] = k
        keep = ~done
        pos, q, p, tail, u = pos[keep], q[keep], p[keep], tail[keep], u[keep]
    where = active if all_small else small_idx[active]
    if not all_small:
        big_idx = np.flatnonzero(~small)
        lam = gen.standard_gamma(r, size=big_idx.size) * (flat[big_idx] / r)
        big = gen.poisson(lam).astype(np.float32)
        nz = big > 0
        where = np.concatenate([where, big_idx[nz]])
        values = np.concatenate([values, big[nz]])
        order = np.argsort(where, kind="stable")
        where, values = where[order], values[order]
    rows, cols = np.divmod(where, n_cols)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return sp.csr_matrix((values, cols, indptr), shape=(n_rows, n_cols))


def make_perturbseq(
    n_cells: int = 2000,
    n_genes: int = 1000,
    n_perturbations: int = 20,
    *,
    n_combinations: int = 5,
    n_cell_types: int = 1,
    control_fraction: float = 0.15,
    regulator_fraction: float = 0.1,
    regulators_per_gene: float = 2.0,
    network_depth: int = 3,
    effect_size: float = 0.8,
    knockdown: tuple[float, float] = (0.6, 0.95),
    interaction_strength: float = 0.3,
    library_size: float = 3000.0,
    dispersion: float = 5.0,
    gene_names: str | Sequence[str] | None = "synthetic",
    perturbation_key: str = "target_gene",
    control_label: str = "non-targeting",
    cell_type_key: str = "cell_type",
    random_state: int | np.random.RandomState | None = None,
):
    """Simulate a Perturb-seq experiment with known ground truth.

    Generative model (all effects in natural-log expression space):

    1. **Network.** A fraction ``regulator_fraction`` of genes are regulators
       (transcription-factor-like). Every gene receives ``Poisson(regulators_per_gene)``
       incoming edges from regulators, with weights ``W[g, r] ~ N(0, sd=effect_size / 2)``.
       ``W`` is rescaled so its spectral norm is below 0.9, so propagation converges.
    2. **Basal state.** Gene log-abundance ``b_g ~ N(0, sd=1.5)`` (shifted so
       ``exp(b)`` sums to one over genes), per cell-type shifts ``N(0, sd=0.3)``
       on 20 % of genes, three latent programmes ``z_c ~ N(0, 1)`` with loadings
       ``N(0, sd=0.4)`` on 10 % of genes (co-expression), and library size
       ``L_c ~ LogNormal(log(library_size), 0.3)``.
    3. **Perturbation.** A CRISPRi knock-down of target ``t`` with efficiency
       ``e_t ~ U(*knockdown)`` sets ``d0[t] = log(1 - e_t)``; it propagates
       through the network, ``delta = sum_{k=0..depth} W^k d0``. Combinations
       add their single deltas plus, with ``interaction_strength``, a random
       genetic interaction on a few downstream genes. Each cell gets a
       per-cell response scale ``s_c ~ U(0.5, 1)`` (guide efficacy varies).
    4. **Counts.** ``mu_cg = L_c * softmax(b + shifts + loadings z_c + s_c delta)_g``;
       counts ``~ NegativeBinomial(mean=mu, dispersion)`` (the gamma-Poisson
       mixture; small means are drawn by inverse CDF, which is faster and gives
       the same distribution).

    Controls are ``max(n_cell_types, round(control_fraction * n_cells))`` cells;
    the rest are split evenly over the perturbations. Cell types cycle within
    each label, so every label, controls included, has cells of every type.
    The full model with equations is in ``docs/datasets.md``.

    Parameters
    ----------
    n_cells : int, default=2000
        Total cells, controls included.
    n_genes : int, default=1000
        Measured genes.
    n_perturbations : int, default=20
        Single-gene perturbations; targets are measured genes, regulators first.
    n_combinations : int, default=5
        Two-gene combinations (``"A+B"``) drawn from the single targets;
        clipped (with a warning) to the number of distinct pairs.
    n_cell_types : int, default=1
        Cell types (each with its own controls); ``obs[cell_type_key]`` is
        written when greater than one.
    control_fraction : float, default=0.15
        Fraction of cells that are controls.
    regulator_fraction : float, default=0.1
        Fraction of genes that regulate others.
    regulators_per_gene : float, default=2.0
        Mean in-degree of the network.
    network_depth : int, default=3
        Steps of propagation from the target.
    effect_size : float, default=0.8
        Scale of the edge weights.
    knockdown : (float, float), default=(0.6, 0.95)
        Range of knock-down efficiencies.
    interaction_strength : float, default=0.3
        Scale of non-additive effects in combinations (0 = purely additive).
    library_size : float, default=3000
        Median UMIs per cell.
    dispersion : float, default=5.0
        Negative-binomial inverse overdispersion (larger = closer to Poisson).
    gene_names : {"synthetic", "symbols"} or sequence of str, default="synthetic"
        ``"synthetic"``: ``G00000``...; ``"symbols"``: the built-in curated
        symbols (TFs, cell cycle, metabolism, pluripotency) then ``SIM...``
        names, shuffled; or your own names.
    perturbation_key, control_label, cell_type_key : str
        Column and label names written into ``obs``.
    random_state : int, RandomState or None
        Seed for reproducible data.

    Returns
    -------
    AnnData
        ``X`` raw counts (CSR, float32). ``obs[perturbation_key]`` labels,
        ``obs['library_size']``; ``var['is_regulator']``, ``var['basal_log_abundance']``;
        ``uns['simulation']`` holds the parameters, ``'network'`` (CSR of ``W``,
        rows = regulated gene), ``'true_delta'`` (DataFrame, perturbations x genes:
        the noiseless mean log-fold change at full response) and ``'knockdown'``.

    Examples
    --------
    >>> from sktx.datasets import make_perturbseq
    >>> adata = make_perturbseq(n_cells=300, n_genes=50, n_perturbations=4, random_state=0)
    >>> adata.shape
    (300, 50)
    >>> int((adata.obs["target_gene"] == "non-targeting").sum()) > 0
    True
    """
    import anndata as ad

    n_combinations = _check_params(
        n_cells,
        n_genes,
        n_perturbations,
        n_combinations,
        control_fraction,
        n_cell_types,
        regulator_fraction=regulator_fraction,
        regulators_per_gene=regulators_per_gene,
        network_depth=network_depth,
        effect_size=effect_size,
        knockdown=knockdown,
        interaction_strength=interaction_strength,
        library_size=library_size,
        dispersion=dispersion,
    )
    rng = check_random_state(random_state)
    names = _gene_names(n_genes, gene_names, rng)

    # 1. network
    n_reg = max(1, round(regulator_fraction * n_genes))
    regulators = np.sort(rng.choice(n_genes, n_reg, replace=False))
    indeg = rng.poisson(regulators_per_gene, size=n_genes)
    rows, cols = [], []
    for g in range(n_genes):
        k = min(int(indeg[g]), n_reg)
        if k:
            src = rng.choice(regulators, k, replace=False)
            src = src[src != g]
            rows.extend([g] * len(src))
            cols.extend(src.tolist())
    weights = rng.normal(0.0, effect_size / 2, size=len(rows))
    W = sp.csr_matrix((weights, (rows, cols)), shape=(n_genes, n_genes))
    if W.nnz:
        norm = _spectral_norm(W)
        if norm > 0.9:
            W = W * (0.9 / norm)

    # 2. basal state
    basal = rng.normal(0.0, 1.5, size=n_genes)
    basal -= np.log(np.exp(basal).sum())
    ct_shift = np.zeros((n_cell_types, n_genes))
    if n_cell_types > 1:
        mask = rng.rand(n_cell_types, n_genes) < 0.2
        ct_shift[mask] = rng.normal(0.0, 0.3, size=mask.sum())
    loadings = np.zeros((3, n_genes))
    lmask = rng.rand(3, n_genes) < 0.1
    loadings[lmask] = rng.normal(0.0, 0.4, size=lmask.sum())

    # 3. perturbations: regulators first so effects propagate, then expressed genes
    order = np.concatenate(
        [rng.permutation(regulators), rng.permutation(np.setdiff1d(np.arange(n_genes), regulators))]
    )
    expressed = order[basal[order] > np.quantile(basal, 0.3)] if n_genes > 10 else order
    pool = expressed if len(expressed) >= n_perturbations else order
    targets = pool[:n_perturbations]
    efficiency = rng.uniform(*knockdown, size=n_perturbations)

    def propagate(d0: np.ndarray) -> np.ndarray:
        delta, cur = d0.copy(), d0
        for _ in range(network_depth):
            cur = W @ cur
            delta += cur
        return delta

    singles = {}
    for t, e in zip(targets, efficiency, strict=True):
        d0 = np.zeros(n_genes)
        d0[t] = np.log1p(-e)
        singles[names[t]] = propagate(d0)
    labels = list(singles)
    deltas = dict(singles)
    combos: set[tuple[int, int]] = set()
    while len(combos) < n_combinations:
        i, j = sorted(rng.choice(n_perturbations, 2, replace=False).tolist())
        combos.add((i, j))
    for i, j in sorted(combos):
        a, b = names[targets[i]], names[targets[j]]
        delta = singles[a] + singles[b]
        if interaction_strength > 0:
            hit = rng.choice(n_genes, size=max(1, n_genes // 50), replace=False)
            delta[hit] += rng.normal(0.0, interaction_strength, size=len(hit))
        label = "+".join(sorted((a, b)))  # canonical: targets sorted
        labels.append(label)
        deltas[label] = delta

    # cell assignment: controls, then perturbations evenly, per cell type
    n_ctrl = max(n_cell_types, round(control_fraction * n_cells))
    per = np.full(len(labels), (n_cells - n_ctrl) // len(labels))
    per[: (n_cells - n_ctrl) - per.sum()] += 1
    sizes = [n_ctrl, *per.tolist()]
    cell_label = np.repeat(np.array([control_label, *labels], dtype=object), sizes)
    # Cell types cycle within each label, so every label (controls included) has
    # cells of every type.
    cell_type = np.concatenate([np.arange(n) % n_cell_types for n in sizes])
    perm = rng.permutation(n_cells)
    cell_label, cell_type = cell_label[perm], cell_type[perm]

    delta_mat = np.vstack([np.zeros(n_genes)] + [deltas[lab] for lab in labels])
    label_index = {control_label: 0, **{lab: i + 1 for i, lab in enumerate(labels)}}
    cell_delta_idx = np.array([label_index[lab] for lab in cell_label])
    response = np.where(cell_delta_idx > 0, rng.uniform(0.5, 1.0, size=n_cells), 0.0)
    z = rng.normal(size=(n_cells, 3))
    lib = np.exp(rng.normal(np.log(library_size), 0.3, size=n_cells))

    # 4. counts, block by block so memory stays bounded. A Generator seeded from
    # `rng` draws them: its samplers are several times faster than RandomState's.
    gen = np.random.default_rng(rng.randint(np.iinfo(np.int32).max))
    # float32 is ample for log-means in [-30, 10] and halves the memory traffic.
    base = (basal[None, :] + ct_shift).astype(np.float32)
    delta32 = delta_mat.astype(np.float32)
    loadings32 = loadings.astype(np.float32)
    blocks = []
    for start in range(0, n_cells, _BLOCK):
        sl = slice(start, min(start + _BLOCK, n_cells))
        logit = base[cell_type[sl]]
        logit += z[sl].astype(np.float32) @ loadings32
        logit += response[sl, None].astype(np.float32) * delta32[cell_delta_idx[sl]]
        logit -= logit.max(axis=1, keepdims=True)
        mu = np.exp(logit, out=logit)
        # softmax and library size in one pass: mu = L_c * exp(logit) / sum(exp(logit))
        mu *= (lib[sl] / mu.sum(axis=1, dtype=np.float64)).astype(np.float32)[:, None]
        blocks.append(_sample_nb(mu, dispersion, gen))
    X = sp.vstack(blocks, format="csr")

    obs = pd.DataFrame(
        {perturbation_key: pd.Categorical(cell_label.astype(str)), "library_size": lib},
        index=[f"cell{i:06d}" for i in range(n_cells)],
    )
    if n_cell_types > 1:
        obs[cell_type_key] = pd.Categorical([f"type{c}" for c in cell_type])
    var = pd.DataFrame(
        {"is_regulator": np.isin(np.arange(n_genes), regulators), "basal_log_abundance": basal},
        index=pd.Index(names, name="gene_symbol"),
    )
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.uns["simulation"] = {
        "params": {
            "n_cells": n_cells,
            "n_genes": n_genes,
            "n_perturbations": n_perturbations,
            "n_combinations": n_combinations,
            "n_cell_types": n_cell_types,
            "network_depth": network_depth,
            "effect_size": effect_size,
            "interaction_strength": interaction_strength,
            "library_size": library_size,
            "dispersion": dispersion,
            "control_fraction": control_fraction,
            "regulator_fraction": regulator_fraction,
            "regulators_per_gene": regulators_per_gene,
            "knockdown": np.asarray(knockdown, dtype=float),
            "perturbation_key": perturbation_key,
            "control_label": control_label,
            "cell_type_key": cell_type_key,
        },
        "network": W.tocsr(),
        "true_delta": pd.DataFrame(delta_mat[1:], index=labels, columns=names),
        "knockdown": pd.DataFrame({"efficiency": efficiency}, index=[names[t] for t in targets]),
    }
    return adata
