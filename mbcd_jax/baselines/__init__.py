"""Baseline methods of the paper's comparison tables, as pure loss pieces a train step adds."""
