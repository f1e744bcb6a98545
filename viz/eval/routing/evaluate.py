"""Scoring `viz eval routing`: how well QASPER-dev questions are routed in the built hierarchy.

**Routing** (`evaluate_routing`): top-1 accuracy of the hierarchical walk (`match_query`, which
may stop above the sub-domain level when unsure: that counts as a miss, and how often it happens
is reported), of flat routing (the best-scoring sub-domain adapter, no tree), and of random
routing (1 / number of sub-domains, and a seeded draw). A sweep of the walk's confidence
thresholds shows coverage against precision. **Answer quality** on a sample (`quality`).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from viz.config import Settings
from viz.errors import InvalidInput
from viz.eval.routing.plan import SUBDOMAINS, HierarchyPlan
from viz.eval.routing.quality import answer_quality
from viz.eval.routing.report import write_routing_report
from viz.models import get_base_model
from viz.routing.hierarchy import adapter_tree, walk
from viz.routing.match import match_query
from viz.routing.profiles import profile_vector
from viz.serving.engines.lora import load_lora
from viz.store import open_database, session_scope
from viz.store.blobs import blob_path
from viz.store.schema import BaseModel

__all__ = [
    "THRESHOLDS",
    "Hierarchy",
    "evaluate_routing",
    "load_hierarchy",
    "route_queries",
    "share",
    "threshold_sweep",
]

THRESHOLDS = [(0.0, 0.0), (0.1, 0.0), (0.1, 0.02), (0.1, 0.05), (0.2, 0.05), (0.1, 0.1)]


@dataclass(frozen=True)
class Hierarchy:
    """The built tree: its roots, nodes by name, profiles by version id, loaded LoRAs."""

    roots: list[Any]
    nodes: dict[str, Any]
    vectors: dict[int, Any]
    adapters: dict[str, Any]
    base: BaseModel


def evaluate_routing(
    settings: Settings,
    plan: HierarchyPlan,
    out: Path,
    *,
    embedder: Any,
    quality_questions: int = 40,
    max_tokens: int = 32,
    seed: int = 0,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Route every query, score answer quality on a sample; write report.md and results.json."""
    started = time.perf_counter()
    database = open_database(settings.database_url_resolved)
    hierarchy = load_hierarchy(database, settings.default_base_model, settings.blobs_dir, embedder)
    questions = [q for q, _ in plan.queries]
    labels = [label for _, label in plan.queries]
    query_vectors = embedder.encode([q.question for q in questions])
    chooser = random.Random(seed)
    routed = route_queries(hierarchy, query_vectors, labels, chooser)
    results = _routing_results(routed, threshold_sweep(hierarchy, query_vectors, labels))
    accuracy, leaves = results["accuracy"], results["subdomains"]
    say(
        f"routing {len(routed)} queries: hierarchical {accuracy['hierarchical']:.3f}, flat "
        f"{accuracy['flat']:.3f}, random {accuracy['random']:.3f} (expected {1 / len(leaves):.3f})"
    )
    sample, quality = answer_quality(
        hierarchy.base,
        settings.models_dir,
        hierarchy.adapters,
        questions,
        routed,
        chooser,
        quality_questions=quality_questions,
        max_tokens=max_tokens,
        say=say,
    )
    results["quality_questions"] = sample
    results["quality"] = quality
    results["training_papers"] = {
        "english": [p.name for p in plan.english],
        "nlp-research": [p.stem for p in plan.domain],
        **{k: [p.stem for p in v] for k, v in plan.subdomains.items()},
    }
    results["seconds"] = round(time.perf_counter() - started, 1)
    write_routing_report(out, results)
    database.dispose()
    return results


def load_hierarchy(database: Engine, base: str, blobs_dir: Path, embedder: Any) -> Hierarchy:
    """The published hierarchy over `base`, its profiles and LoRA weights.

    Raises:
        InvalidInput: a level of the plan is not published (build it first).
    """
    with session_scope(database) as session:
        roots = adapter_tree(session, base)
        nodes = {n.name: n for n in walk(roots)}
        missing = [n for n in ["english", "nlp-research", *SUBDOMAINS] if n not in nodes]
        if missing:
            raise InvalidInput(
                f"the hierarchy lacks {', '.join(missing)}; build it first (viz eval routing "
                "builds it unless --no-build)"
            )
        vectors = {
            n.version.id: profile_vector(session, n.version, blobs_dir, embedder)
            for n in nodes.values()
        }
        adapters = {
            name: load_lora(
                blob_path(blobs_dir, n.version.weights_sha256),
                n.version.config_json,
                version_id=n.version.id,
                label=n.label,
            )
            for name, n in nodes.items()
        }
        record = get_base_model(session, base)
        session.expunge(record)
    return Hierarchy(roots, nodes, vectors, adapters, record)


def route_queries(
    hierarchy: Hierarchy, query_vectors: Any, labels: list[str], chooser: random.Random
) -> list[dict[str, Any]]:
    """Per query: its label, the walk's path and pick, flat routing's pick and a random one."""
    leaves = list(SUBDOMAINS)
    nodes, vectors = hierarchy.nodes, hierarchy.vectors
    routed: list[dict[str, Any]] = []
    for vector, label in zip(query_vectors, labels, strict=True):
        match = match_query(vector, hierarchy.roots, vectors)
        path = [level.name for level in match.path]
        flat = max(leaves, key=lambda name: float(vector @ vectors[nodes[name].version.id]))
        routed.append(
            {
                "label": label,
                "path": path,
                "hierarchical": path[-1] if len(path) == 3 else None,
                "flat": flat,
                "random": chooser.choice(leaves),
            }
        )
    return routed


def threshold_sweep(
    hierarchy: Hierarchy, query_vectors: Any, labels: list[str]
) -> list[dict[str, Any]]:
    """Accuracy, coverage and precision of the walk at each of THRESHOLDS."""
    sweep = []
    for min_score, min_margin in THRESHOLDS:
        chosen = []
        for vector in query_vectors:
            walk_path = match_query(
                vector,
                hierarchy.roots,
                hierarchy.vectors,
                min_score=min_score,
                min_margin=min_margin,
            ).path
            chosen.append(walk_path[-1].name if len(walk_path) == 3 else None)
        committed = [(c, label) for c, label in zip(chosen, labels, strict=True) if c]
        sweep.append(
            {
                "min_score": min_score,
                "min_margin": min_margin,
                "accuracy": sum(c == label for c, label in committed) / len(labels),
                "reached": len(committed) / len(labels),
                "precision": share([c == label for c, label in committed]),
            }
        )
    return sweep


def _routing_results(routed: list[dict[str, Any]], sweep: list[dict[str, Any]]) -> dict[str, Any]:
    leaves = list(SUBDOMAINS)
    n = len(routed)
    reached = [r for r in routed if r["hierarchical"] is not None]
    depth = Counter(len(r["path"]) for r in routed)
    per_label = {
        label: {
            "queries": sum(r["label"] == label for r in routed),
            "hierarchical": share(
                [r["hierarchical"] == label for r in routed if r["label"] == label]
            ),
            "flat": share([r["flat"] == label for r in routed if r["label"] == label]),
        }
        for label in leaves
    }
    return {
        "queries": n,
        "subdomains": leaves,
        "accuracy": {
            kind: sum(r[kind] == r["label"] for r in routed) / n
            for kind in ("hierarchical", "flat", "random")
        },
        "random_expected": 1 / len(leaves),
        "reached_subdomain": len(reached) / n,
        "hierarchical_precision": share([r["hierarchical"] == r["label"] for r in reached]),
        "stopped_at_depth": {str(k): v for k, v in sorted(depth.items())},
        "per_subdomain": per_label,
        "threshold_sweep": sweep,
    }


def share(flags: list[bool]) -> float | None:
    """The share of true flags; None for none."""
    return sum(flags) / len(flags) if flags else None
