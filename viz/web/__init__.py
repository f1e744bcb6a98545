"""The marketplace on the web: catalogue, adapter and document pages, dashboards, the log, a
playground, served by `viz serve` beside the API (FastAPI + Jinja2, no JavaScript build).

`viz.web.pages.add_pages` mounts them; it is not imported here, so `viz.web.auth` (used by
`viz account password`) loads without the pages' FastAPI and model imports.
"""
