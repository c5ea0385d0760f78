"""What the cache saved: reports from replays and from a live proxy, as text and HTML."""
