"""`viz eval routing`: a real hierarchy built from QASPER, and how well queries are routed in it.

- `plan`: which QASPER-train papers train english -> nlp-research -> translation,
  question-answering, sentiment, dialogue, and which QASPER-dev questions are the queries;
- `build`: catalogue, train (the one training recipe) and publish (with domain profiles) the
  hierarchy into VIZ_HOME, resuming what a stopped build left;
- `evaluate`: top-1 routing accuracy, hierarchical vs flat vs random, and a threshold sweep;
- `quality`: answer quality of the routed chains against the base, an oracle and a wrong one;
- `report`: results.json and report.md.
"""

from viz.eval.routing.build import build_hierarchy
from viz.eval.routing.evaluate import evaluate_routing
from viz.eval.routing.plan import (
    CREATOR,
    SUBDOMAINS,
    HierarchyPlan,
    english_texts,
    plan_hierarchy,
    subdomain_of,
)
from viz.eval.routing.report import write_routing_report

__all__ = [
    "CREATOR",
    "SUBDOMAINS",
    "HierarchyPlan",
    "build_hierarchy",
    "english_texts",
    "evaluate_routing",
    "plan_hierarchy",
    "subdomain_of",
    "write_routing_report",
]
