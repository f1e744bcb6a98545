"""Marketplace: catalogue (publish, search, versions), hierarchy rules (one parent walk, one
depth limit, semver order, newest approved, visible to caller), screening and merges.

Licence rules live in the leaf module `viz.licences`.
"""
