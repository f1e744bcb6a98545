"""Marketplace: catalogue, licences and policy (publishing and screening arrive with issue 5)."""

from viz.market.licences import normalise_licence

__all__ = ["normalise_licence"]
