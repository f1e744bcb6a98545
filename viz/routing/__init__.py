"""Routing: the hierarchy of adapters, hardware profiles, memory estimates and the recommender
(being built: hardware profiles first)."""
