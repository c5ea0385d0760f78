"""Longer experiments (load adaptation, IC-Cache) that produce the tables in RESULTS.md."""
