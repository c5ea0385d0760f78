"""Requests through a cache: replays of workloads, pairs and groups against semcache and the baselines."""
