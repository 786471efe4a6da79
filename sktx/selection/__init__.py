"""Biologically informed gene selection with per-category quotas (nested as ``n_genes`` grows)."""

from sktx.selection._quotas import QUOTA_KEYS, default_quotas
from sktx.selection._selector import GeneSelector

__all__ = ["QUOTA_KEYS", "GeneSelector", "default_quotas"]
