"""What the cache tells: stats, miss reasons, the lookup log and what-if replays, audits, feedback."""
