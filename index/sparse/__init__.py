"""Learned-sparse retrieval: a Seismic-style blocked inverted index written in Numba."""
