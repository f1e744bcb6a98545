"""Viz: licensed text turned into paid, composable LLM skills.

The package is layered, lowest first; a module imports its own layer or lower ones, never
higher (`tests/test_layers.py` checks every import):

    errors config licences            leaves: the error tree, settings, licence rules
    datasets                          readers of shared corpora (QASPER)
    store                             schema, migrations, content-addressed blobs
    accounts documents log models     accounts and keys; documents; the Merkle log; base models
    ledger training rag               money; adapters from documents; retrieval and citations
    market                            catalogue, hierarchy rules, screening, merges
    routing                           hardware, cost model, recommender
    serving (engines/)                the OpenAI-compatible gateway over its engines
    web eval                          the marketplace's pages; experiment grids
    app api cli                       the FastAPI app, the Python API, the `viz` command
"""

import os
from importlib.metadata import PackageNotFoundError, version

# transformers 5 fetches "hub kernels" (code from the Hugging Face Hub) when a model loads on
# CUDA: offline that load fails, and online it would run code nobody installed. Viz loads models
# with the kernels its installed packages ship; USE_HUB_KERNELS=1 in the environment opts back in.
os.environ.setdefault("USE_HUB_KERNELS", "0")

__all__ = ["__version__"]

try:
    __version__ = version("viz")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0"
