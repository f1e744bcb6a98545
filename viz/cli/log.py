"""`viz log`: the public append-only log (RFC 6962 Merkle tree, Ed25519-signed checkpoints)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

from viz.cli._context import session, state
from viz.errors import InvalidInput
from viz.log.store import (
    export_log,
    prove_consistency,
    prove_entry,
    sign_checkpoint,
    verify_export,
    verify_proof,
)

app = typer.Typer(
    help="Verifiable log: checkpoint, prove, export, verify (offline).\n\n"
    "Example: viz log export log.json && viz log verify log.json"
)


@app.command("checkpoint")
def checkpoint(context: typer.Context) -> None:
    """Print a signed checkpoint (size and root of the log).

    Example: viz log checkpoint
    """
    with session(context) as database:
        signed = sign_checkpoint(database, state(context).settings.log_key_path)
    typer.echo(json.dumps(asdict(signed), indent=2))


@app.command("prove")
def prove(
    context: typer.Context,
    index: int = typer.Argument(..., help="Entry index"),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to a file"),
) -> None:
    """Print an entry with its inclusion proof and a signed checkpoint.

    Example: viz log prove 0 -o proof.json && viz log verify proof.json
    """
    with session(context) as database:
        proof = prove_entry(database, index, state(context).settings.log_key_path)
    _emit(proof, output, f"proof of entry {index}")


@app.command("consistency")
def consistency(
    context: typer.Context,
    old_size: int = typer.Argument(..., help="Size of an earlier checkpoint"),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to a file"),
) -> None:
    """Prove that the log of OLD_SIZE entries is a prefix of today's (nothing rewritten).

    Example: viz log consistency 1 -o consistency.json && viz log verify consistency.json
    """
    with session(context) as database:
        proof = prove_consistency(database, old_size, state(context).settings.log_key_path)
    _emit(proof, output, f"consistency proof from {old_size}")


@app.command("export")
def export(
    context: typer.Context, path: Path = typer.Argument(..., help="Output JSON file")
) -> None:
    """Export every entry and a signed checkpoint, for anyone to verify offline.

    Example: viz log export log.json
    """
    with session(context) as database:
        signed = export_log(database, path, state(context).settings.log_key_path)
    typer.echo(f"exported {signed.size} entries to {path}; root {signed.root}")


@app.command("verify")
def verify(
    path: Path = typer.Argument(..., help="An exported log or a proof from viz log prove"),
    public_key: str | None = typer.Option(
        None, help="Trusted log key (base64); default: the key in the file"
    ),
) -> None:
    """Verify an exported log or a proof offline (no database needed).

    Example: viz log verify log.json --public-key BASE64KEY
    """
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InvalidInput(f"{path} cannot be read as JSON: {error}") from error
    if "consistency" in document:
        verify_proof(document, trusted_public_key=public_key)
        typer.echo(
            f"ok: the log of {document['old_size']} entries (root "
            f"{document['old_root']}) is a prefix of the signed log of "
            f"{document['checkpoint']['size']} entries"
        )
        return
    if "proof" in document:
        verify_proof(document, trusted_public_key=public_key)
        typer.echo(
            f"ok: entry {document['index']} is in the log of "
            f"{document['checkpoint']['size']} entries with root "
            f"{document['checkpoint']['root']}"
        )
        return
    signed = verify_export(path, trusted_public_key=public_key)
    typer.echo(f"ok: {signed.size} entries hash to the signed root {signed.root}")


def _emit(document: dict, output: Path | None, what: str) -> None:  # type: ignore[type-arg]
    """Print `document` as JSON, or write it to `output` and say so."""
    text = json.dumps(document, indent=2)
    if output is None:
        typer.echo(text)
        return
    output.write_text(text)
    typer.echo(f"{what} written to {output}")
