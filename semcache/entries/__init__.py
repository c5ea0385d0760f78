"""What is stored: the entry, the in-memory catalog beside the index, replica sync over a shared store."""
