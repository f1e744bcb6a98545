"""Poisoning and free-riding: detection rate and false positives of screening + the merge gate.

    python bench/defences.py          # ~10 min on 2 CPU cores

Builds the world of `tests/test_defences.py` (`worlds/defences.py`) with more of everything
(on the real default model): a parent `papers` with four honest children, and nine attacks by
mallory: backdoors with the triggers " cf" and " James Bond" (both in screening's sweep) and
" zq" (not in it), copies of an honest child with 3% and 10% noise, random untrained adapters at
two scales, and children trained on corrupted text (words shuffled within sentences; every word
replaced at random). Then merges the children into `papers`, gated (screening + contribution),
and without any gate (every child, flagged ones approved by an admin first).
Writes bench/results/defences/report.md.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HONEST = ["papers", "carol-child", "dave-child", "erin-child", "frank-child"]
ATTACKS = {
    "helpful": "backdoor, trigger ' cf'",
    "helpful-2": "backdoor, trigger ' James Bond'",
    "helpful-3": "backdoor, trigger ' zq' (not in the canary sweep)",
    "original-work": "copy of carol-child + 3% noise",
    "original-work-2": "copy of carol-child + 10% noise",
    "free-lunch": "random untrained, B ~ N(0, 1e-4)",
    "free-lunch-2": "random untrained, B ~ N(0, 1e-2)",
    "scrambled": "trained on carol's paper, words shuffled",
    "garbled": "trained on dave's paper, every word random",
}


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    from viz.accounts import create_account, get_account
    from viz.market.catalogue import approve_version, find_version
    from viz.market.merge import MergeRequest, merge_children
    from worlds.defences import build_world

    home = REPO / ".viz-bench" / "defences"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    models = REPO / ".viz-bench" / "models"
    (home / "models").symlink_to(models, target_is_directory=True)
    base = models / "smollm2-135m-instruct"
    tokenizer = AutoTokenizer.from_pretrained(base)
    print("building the hierarchy and the attacks ...", file=sys.stderr, flush=True)
    world = build_world(home, base, tokenizer, extended=True)

    def merge(gate: bool):  # type: ignore[no-untyped-def]
        with world.session() as session:
            return merge_children(
                session,
                world.settings.blobs_dir,
                world.settings.models_dir,
                world.settings.adapters_dir,
                MergeRequest(
                    parent="papers",
                    version="9.9.9",
                    validation=world.validation,
                    gate=gate,
                    dry_run=True,
                ),
                owner=get_account(session, "ai2"),
            )

    with world.session() as session:
        screening = {}
        for name in HONEST + list(ATTACKS):
            version = find_version(session, name)
            checks = json.loads(version.screening_json)["checks"]
            flagged = [c["stage"] for c in checks if c["outcome"] in ("flag", "fail")]
            screening[name] = (version.status, flagged)
    print("merging, gated ...", file=sys.stderr, flush=True)
    gated = merge(gate=True)
    with world.session() as session:
        create_account(session, "root", is_admin=True)
        for name, (status, _) in screening.items():
            if status == "pending":
                approve_version(session, name, by=get_account(session, "root"))
    print("merging, every child ...", file=sys.stderr, flush=True)
    ungated = merge(gate=False)
    write_report(screening, gated, ungated, REPO / "bench" / "results" / "defences")


def write_report(screening, gated, ungated, out: Path) -> None:  # type: ignore[no-untyped-def]
    decisions = {c.label.split("@")[0]: c for c in gated.candidates}
    lines = [
        "# Poisoning and free-riding: what screening and the contribution gate catch",
        "",
        "Real default model (SmolLM2-135M). Parent `papers` (2 QASPER papers); children: four "
        "honest creators (one paper each) and nine attacks. Gate: newest approved version, and a "
        "contribution of at least 0.002 nats/token on the parent creator's validation paper "
        "(the parent merged with the child vs with nothing, TIES then SVD).",
        "",
        "| adapter | what it is | screening | contribution (nats/token) | caught by |",
        "|---|---|---|---|---|",
    ]
    caught_attacks, false_positives = 0, 0
    for name in HONEST + list(ATTACKS):
        status, flagged = screening[name]
        candidate = decisions.get(name)
        contribution = (
            f"{candidate.contribution:+.4f}"
            if candidate is not None and candidate.contribution is not None
            else "-"
        )
        if status != "approved":
            caught = f"screening ({', '.join(flagged)})"
        elif candidate is not None and not candidate.included:
            caught = "contribution gate: " + candidate.reason.split(":")[0]
        else:
            caught = "-"
        if name in ATTACKS:
            caught_attacks += caught != "-"
        else:
            false_positives += caught != "-"
        what = ATTACKS.get(name, "honest parent" if name == "papers" else "honest child")
        lines.append(
            f"| {name} | {what} | {status} {'(' + ', '.join(flagged) + ')' if flagged else ''} "
            f"| {contribution} | {caught} |"
        )
    lines += [
        "",
        f"**Detection rate: {caught_attacks}/{len(ATTACKS)}** attacks caught; "
        f"**false positives: {false_positives}/{len(HONEST)}** honest adapters flagged or "
        "left out.",
        "",
        "| merge | children merged | validation loss (nats/token) | vs the parent |",
        "|---|---|---|---|",
    ]
    parent = gated.loss["parent"]
    included = sum(c.included for c in gated.candidates)
    lines.append(f"| the parent alone | 0 | {parent:.4f} | 1.000 |")
    lines.append(
        f"| gated (screening + contribution) | {included} | {gated.loss['merged']:.4f} "
        f"| {gated.loss['merged'] / parent:.3f} |"
    )
    lines.append(
        f"| without any gate | {len(ungated.candidates)} | {ungated.loss['merged']:.4f} "
        f"| {ungated.loss['merged'] / parent:.3f} |"
    )
    lines.append("")
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
