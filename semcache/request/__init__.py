"""The request's way in: its cache key (normalised text, partition), its category (rules, RE2 patterns)."""
