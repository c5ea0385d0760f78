"""What is replayed: the shared data sets, synthetic workloads and traces, long-prompt pairs."""
