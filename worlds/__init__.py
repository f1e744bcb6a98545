"""The seeded worlds tests and benches build on (not part of the `viz` package), one per module:

- `catalogue`: the shared data folders, the tiny base, catalogued QASPER papers, a plain PEFT
  adapter made outside Viz;
- `ledger`: a small market for ledger tests (catalogue rows written directly, no model);
- `serving`: real LoRA adapters for the default model, registered as publishing does, and a
  server on a free port;
- `defences`: a small hierarchy on the default model with honest children and attacks.
"""

__all__ = ["catalogue", "defences", "ledger", "serving"]
