"""The gene-token network: one token per gene, sparse attention, a residual delta head.

The module sees tensors only (never AnnData). No parameter shape depends on
the number of genes or perturbations: gene identity comes from a hashed
embedding of the gene symbol plus a projection of fixed-width gene features,
so the same weights run on 100 or 18,000 genes.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from sktx.nn._sparse_attention import NeighborAttention, SparsePattern

__all__ = ["GeneTokenModel"]


class _Block(nn.Module):
    """Pre-norm transformer block with neighbourhood attention."""

    def __init__(self, d_model: int, n_heads: int, dropout: float, attention: str):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = NeighborAttention(d_model, n_heads, dropout, mode=attention)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, 2 * d_model),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(2 * d_model, d_model),
        )

    def forward(self, x, neighbors, pattern=None):
        x = x + self.attn(self.norm1(x), neighbors, pattern)
        return x + self.ff(self.norm2(x))


class GeneTokenModel(nn.Module):
    """Predict a per-gene expression change for a set of cells under a perturbation.

    Token of gene ``g`` in sample ``b``::

        t_bg = E[hash(g)] + W_f f_g + MLP([basal_bg, baseline_bg, shift_bg])
             + e_target * is_target_bg

    modulated by the perturbation (FiLM: ``t * (1 + gamma(p_b)) + beta(p_b)``, where
    ``p_b`` sums an MLP of the targets' hashed embeddings and features), then
    ``n_layers`` blocks of neighbourhood attention over the gene graph. A
    zero-initialised head outputs a residual ``r_bg`` and a log-scale ``s_bg``:
    the predicted delta is ``baseline + r`` (so an untrained model *is* the
    baseline) and ``exp(s)`` rescales each cell's deviation from the set mean.

    ``shift_bg`` (``basal_shift``) is how far the set's control mean lies from
    the control mean a prediction starts from: in training, the fitted control
    mean minus the mean of the set's sampled control cells; at prediction 0
    (the default). Given it, the network can undo the sampling noise of a
    training set's controls with one rule for every gene instead of learning
    each gene's control level in its hashed embedding, which is slow and
    worth nothing at prediction (docs/model.md, "The basal shift").

    Parameters
    ----------
    d_model : int, default=64
    n_layers : int, default=2
    n_heads : int, default=4
    n_features : int, default=50
        Width of the per-gene feature vectors ``gene_feat`` / ``pert_feat``.
    n_buckets : int, default=2**14
        Rows per hash function of the gene-identity table.
    n_hashes : int, default=2
    dropout : float, default=0.0
    id_dropout : float, default=0.25
        Training-time probability of hiding a target's hashed identity, so the
        model also learns to describe targets by their features alone (as it
        must for targets never seen in training).
    attention : {"sparse", "dense"}, default="sparse"
    gradient_checkpointing : bool, default=False
        Recompute each block in backward (``use_reentrant=False``) to save memory.

    Examples
    --------
    >>> import torch
    >>> m = GeneTokenModel(d_model=16, n_layers=1, n_features=4)
    >>> G, B = 5, 2
    >>> out = m(
    ...     gene_hash=torch.zeros(G, 2, dtype=torch.long), gene_feat=torch.zeros(G, 4),
    ...     neighbors=torch.arange(G).view(G, 1), basal=torch.rand(B, G),
    ...     baseline=torch.zeros(B, G), target_mask=torch.zeros(B, G),
    ...     pert_hash=torch.zeros(B, 1, 2, dtype=torch.long), pert_feat=torch.zeros(B, 1, 4),
    ...     pert_mask=torch.ones(B, 1))
    >>> out[0].shape, bool((out[0] == 0).all())
    (torch.Size([2, 5]), True)
    """

    def __init__(
        self,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 4,
        n_features: int = 50,
        n_buckets: int = 2**14,
        n_hashes: int = 2,
        dropout: float = 0.0,
        id_dropout: float = 0.25,
        attention: str = "sparse",
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        self.gradient_checkpointing = gradient_checkpointing
        self.id_dropout = id_dropout
        # zero init: a gene never seen in training contributes nothing through
        # its hash, only through its features
        self.gene_embedding = nn.Embedding(n_hashes * n_buckets, d_model)
        nn.init.zeros_(self.gene_embedding.weight)
        self.feature_proj = nn.Linear(n_features, d_model)
        self.value_enc = nn.Sequential(
            nn.Linear(3, d_model), nn.GELU(), nn.Linear(d_model, d_model)
        )
        self.target_flag = nn.Parameter(torch.randn(d_model) * 0.1)
        self.pert_mlp = nn.Sequential(
            nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, d_model)
        )
        self.film = nn.Linear(d_model, 2 * d_model)
        nn.init.normal_(self.film.weight, std=0.02)
        nn.init.zeros_(self.film.bias)
        self.blocks = nn.ModuleList(
            _Block(d_model, n_heads, dropout, attention) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, 2)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        # the estimator's fitted state, set only while `save_params`/`load_params` run
        self.saved_state: dict | None = None
        self._patterns: dict = {}

    def _pattern(self, neighbors: torch.Tensor, n_samples: int, n_heads: int) -> SparsePattern:
        """One CSR pattern shared by all layers, cached per graph and batch size."""
        key = (tuple(neighbors.shape), n_samples, n_heads, str(neighbors.device))
        hit = self._patterns.get(key)
        if hit is not None and torch.equal(hit[0], neighbors):
            return hit[1]
        if len(self._patterns) >= 2:  # a full and a last, smaller batch per epoch
            self._patterns.clear()
        pattern = SparsePattern(neighbors, n_samples, n_heads)
        self._patterns[key] = (neighbors, pattern)
        return pattern

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_patterns"] = {}
        return state

    # The module holds no data-derived state; the regressor hands its fitted state
    # (tensors, lists, floats) over for the duration of `save_params`/`load_params`,
    # so one weights file round-trips a whole model.
    def get_extra_state(self):
        return self.saved_state

    def set_extra_state(self, state):
        self.saved_state = state

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # weights saved before the basal shift (two value inputs) load with a zero
        # weight on it: the shift is 0 at prediction, so they predict as before
        key = prefix + "value_enc.0.weight"
        w = state_dict.get(key)
        if w is not None and w.ndim == 2 and w.shape[1] == 2:
            state_dict[key] = torch.cat([w, w.new_zeros(w.shape[0], 1)], dim=1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _identity(self, hashes: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        return self.gene_embedding(hashes).sum(-2) + self.feature_proj(feats)

    def forward(
        self,
        gene_hash: torch.Tensor,
        gene_feat: torch.Tensor,
        neighbors: torch.Tensor,
        basal: torch.Tensor,
        baseline: torch.Tensor,
        target_mask: torch.Tensor,
        pert_hash: torch.Tensor,
        pert_feat: torch.Tensor,
        pert_mask: torch.Tensor,
        tokens: torch.Tensor | None = None,
        basal_shift: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(delta, log_scale)``, each of shape (B, G), float32.

        ``gene_hash`` (G, n_hashes), ``gene_feat`` (G, F); ``basal``/``baseline``/
        ``target_mask`` (B, G); ``pert_hash`` (B, T, n_hashes), ``pert_feat``
        (B, T, F), ``pert_mask`` (B, T) for up to T targets per sample.
        ``tokens`` (N,) long, optional: the genes the network runs on (N <= G);
        the others keep ``baseline`` and a log-scale of 0. ``neighbors`` (N, K)
        indexes the tokens (all G genes without ``tokens``). ``basal_shift``
        (B, G), optional: reference control mean minus ``basal`` (0 if omitted).
        """
        full = baseline
        shift = torch.zeros_like(basal) if basal_shift is None else basal_shift
        if tokens is not None:
            gene_hash, gene_feat = gene_hash.index_select(0, tokens), gene_feat[tokens]
            basal, baseline = basal.index_select(1, tokens), baseline.index_select(1, tokens)
            shift = shift.index_select(1, tokens)
            target_mask = target_mask.index_select(1, tokens)
        gene = self._identity(gene_hash, gene_feat)  # G, d
        values = torch.stack([basal, baseline, shift], dim=-1)
        x = gene.unsqueeze(0) + self.value_enc(values)
        x = x + target_mask.unsqueeze(-1) * self.target_flag

        pid = self.gene_embedding(pert_hash).sum(-2)
        if self.training and self.id_dropout > 0:
            keep = torch.rand((*pid.shape[:-1], 1), device=pid.device) >= self.id_dropout
            pid = pid * keep
        p = self.pert_mlp(pid + self.feature_proj(pert_feat))
        p = (p * pert_mask.unsqueeze(-1)).sum(1)  # B, d
        gamma, beta = self.film(p).unsqueeze(1).chunk(2, dim=-1)
        x = x * (1 + gamma) + beta

        pattern = None
        if self.blocks and self.blocks[0].attn.mode == "sparse":
            pattern = self._pattern(neighbors, x.shape[0], self.blocks[0].attn.n_heads)
        for block in self.blocks:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, neighbors, pattern, use_reentrant=False)
            else:
                x = block(x, neighbors, pattern)
        out = self.head(self.norm(x)).float()
        if tokens is None:
            return baseline + out[..., 0], out[..., 1]
        # out of place, so autograd sees the scatter; untouched genes keep the start
        delta = full.index_add(1, tokens, out[..., 0])
        log_scale = torch.zeros_like(full).index_add(1, tokens, out[..., 1])
        return delta, log_scale
