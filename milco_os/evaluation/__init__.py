"""Retrieval-quality evaluation through OpenSearch: metrics, systems (BM25, dense, sparse), reports."""
