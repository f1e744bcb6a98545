"""What each marketplace page shows: plain queries that return plain data for the templates,
one module per page group (`catalogue`, `adapter`, `dashboards`, `log`, `admin`).

Every function takes an open session and, where it matters, the viewer (None when logged out)
and returns only what that viewer may see: private adapters to their owner, dashboards to their
own account. Money figures come from the ledger's statements (`viz.ledger.statements`).
"""

from viz.web.views.adapter import AdapterPage, VersionRow, adapter_page
from viz.web.views.admin import takedowns_page
from viz.web.views.catalogue import (
    CataloguePage,
    CatalogueQuery,
    CatalogueRow,
    adapter_names,
    catalogue_page,
    document_page,
)
from viz.web.views.dashboards import (
    ConsumerDashboard,
    CreatorDashboard,
    consumer_dashboard,
    creator_dashboard,
)
from viz.web.views.log import log_page

__all__ = [
    "AdapterPage",
    "CataloguePage",
    "CatalogueQuery",
    "CatalogueRow",
    "ConsumerDashboard",
    "CreatorDashboard",
    "VersionRow",
    "adapter_names",
    "adapter_page",
    "catalogue_page",
    "consumer_dashboard",
    "creator_dashboard",
    "document_page",
    "log_page",
    "takedowns_page",
]
