"""The operator's side: the admin API and Prometheus metrics."""
