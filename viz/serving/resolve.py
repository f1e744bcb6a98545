"""From the `model` a request names to what runs: the base, its precision, the adapter
versions with their weights, each checked against who is asking.

Rules: unknown names are 404; a version that is taken down, or private to another account, is
403; pending or rejected versions are not served (404). Parents in the hierarchy are applied with
the child, at weight 1, root first, unless the request says `"viz": {"parents": false}`. The
hierarchy's rules (visibility, newest approved, the parent walk and its depth limit, the trained
precision) are `viz.market.hierarchy`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from viz.errors import Forbidden, InvalidInput, NotFound, VizError
from viz.ledger import AdapterUse
from viz.market.hierarchy import ancestors, manifest_precision, newest_approved, visible_to
from viz.serving.adapter_ref import ModelRef, Term
from viz.store.schema import Account, Adapter, AdapterVersion, BaseModel

__all__ = ["Resolved", "Use", "compose_reader", "resolve"]


@dataclass(frozen=True)
class Use:
    """One adapter version a request applies."""

    version_id: int
    name: str
    version: str
    weight: float
    weights_sha256: str
    config_json: str

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class Resolved:
    base_id: str
    precision: str
    uses: tuple[Use, ...]

    @property
    def model(self) -> str:
        """The canonical name of what ran: the base, or the composition with versions."""
        if not self.uses:
            return self.base_id
        return "+".join(f"{u.label}:{u.weight:g}" for u in self.uses)

    def composition(self) -> tuple[AdapterUse, ...]:
        return tuple(AdapterUse(u.name, u.version, repr(u.weight)) for u in self.uses)


def resolve(
    session: Session,
    ref: ModelRef,
    caller: Account,
    *,
    parents: bool = True,
    precision: str | None = None,
) -> Resolved:
    """See the module docstring; `precision` serves the adapters on that base variant instead
    of the one they were trained on (the recommender's choice)."""
    if ref.auto:
        raise InvalidInput("model 'auto' is chosen by the recommender (viz.routing), not resolved")
    name = ref.single_name
    if name is not None and session.get(BaseModel, name) is not None:
        return Resolved(name, precision or "fp32", ())
    uses: list[Use] = []
    bases = set()
    precisions = set()
    for term in ref.terms:
        adapter = _adapter(session, term.name)
        chain = _parents(session, adapter, caller) if parents else []
        for parent in chain:
            if all(u.version_id != parent.id for u in uses):
                uses.append(_use(parent, 1.0))
        version = _version(adapter, term, caller)
        if any(u.version_id == version.id for u in uses):
            raise InvalidInput(f"{term.name} is already applied as a parent of another adapter")
        uses.append(_use(version, term.weight))
        bases.add(adapter.base_id)
        precisions.add(manifest_precision(version))
    if len(bases) > 1:
        raise InvalidInput(f"model {ref.text!r} mixes adapters of bases {sorted(bases)}")
    if precision is not None:
        precisions = {precision}
    if len(precisions) > 1:
        raise InvalidInput(
            f"model {ref.text!r} mixes adapters trained on {sorted(precisions)} bases; "
            "compose adapters trained on the same precision"
        )
    return Resolved(bases.pop(), precisions.pop(), tuple(uses))


def compose_reader(
    session: Session,
    resolved: Resolved,
    name: str,
    caller: Account,
    *,
    parents: bool,
    required: str,
) -> Resolved:
    """`resolved` with the grounded reader adapter `name` (and its parents) composed last, for a
    `viz.rag` request: with `required` "default" only when the catalogue serves it for the same
    base and precision (else `resolved` as it was); "none" (or no name): never; otherwise
    always, or an error. It is metered and paid like any adapter.

    Raises:
        NotFound, Forbidden, InvalidInput: a named reader that cannot be served here.
    """
    if required == "none" or not name or any(use.name == name for use in resolved.uses):
        return resolved
    try:
        read = resolve(session, ModelRef(name, (Term(name),)), caller, parents=parents)
    except VizError:
        if required == "default":
            return resolved  # no reader published for this base: the base reads
        raise
    if not read.uses or (read.base_id, read.precision) != (resolved.base_id, resolved.precision):
        if required == "default":
            return resolved
        raise InvalidInput(
            f"reader {name!r} adapts {read.base_id} ({read.precision}), not "
            f"{resolved.base_id} ({resolved.precision}); name a reader for this base, or 'none'"
        )
    applied = {use.version_id for use in resolved.uses}
    added = tuple(use for use in read.uses if use.version_id not in applied)
    return Resolved(resolved.base_id, resolved.precision, resolved.uses + added)


def _adapter(session: Session, name: str) -> Adapter:
    adapter = session.scalar(
        select(Adapter).where(Adapter.name == name).options(selectinload(Adapter.versions))
    )
    if adapter is None:
        raise NotFound(f"the model {name!r} does not exist; list models with GET /v1/models")
    return adapter


def _version(adapter: Adapter, term: Term, caller: Account) -> AdapterVersion:
    if not visible_to(adapter, caller):
        raise Forbidden(f"{adapter.name} is private to its creator")
    if term.version is not None:
        found = [v for v in adapter.versions if v.version == term.version]
        if not found:
            raise NotFound(f"{adapter.name} has no version {term.version!r}")
        version = found[0]
    else:
        newest = newest_approved(adapter)
        taken = [v for v in adapter.versions if v.status == "taken_down"]
        if newest is None and taken:
            raise Forbidden(f"{adapter.name} was taken down and is not served")
        if newest is None:
            raise NotFound(f"{adapter.name} has no approved version yet")
        version = newest
    if version.status == "taken_down":
        raise Forbidden(f"{adapter.name}@{version.version} was taken down and is not served")
    if version.status != "approved":
        raise NotFound(f"{adapter.name}@{version.version} is {version.status}, not served")
    return version


def _parents(session: Session, adapter: Adapter, caller: Account) -> list[AdapterVersion]:
    return [_version(a, Term(a.name), caller) for a in reversed(ancestors(adapter))]


def _use(version: AdapterVersion, weight: float) -> Use:
    return Use(
        version.id,
        version.adapter.name,
        version.version,
        weight,
        version.weights_sha256,
        version.config_json,
    )
