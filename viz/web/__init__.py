"""The marketplace on the web: catalogue, adapter and document pages, dashboards, the log, a
playground, served by `viz serve` beside the API (FastAPI + Jinja2, no JavaScript build)."""

from viz.web.pages import add_pages

__all__ = ["add_pages"]
