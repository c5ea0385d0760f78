"""The hit decision: lookup over candidates, guards, the diff rule and its atoms, store admission."""
