"""Text to vectors: a composed sparse (SPLADE / inference-free) encoder and a dense bi-encoder."""
