"""Retrievers wired into a searcher: orchestration of index building, fusion, PRF, reranking and evaluation."""
