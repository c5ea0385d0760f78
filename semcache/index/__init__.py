"""Vector indexes: exact flat, hnswlib HNSW, and the partitioned index over them."""

from semcache.index.flat import FlatIndex
from semcache.index.hnsw import HNSWIndex, HNSWParams
from semcache.index.partitioned import PartitionedIndex

__all__ = ["FlatIndex", "HNSWIndex", "HNSWParams", "PartitionedIndex"]
