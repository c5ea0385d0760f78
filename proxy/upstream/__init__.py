"""The way out to the engines: HTTP clients, the replica pool and routing, engine load scrapes, the local engine."""
