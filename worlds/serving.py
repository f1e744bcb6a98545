"""Real LoRA adapters for the default model, and a catalogue that serves them.

Adapters are made with PEFT (random, non-zero A and B, so they change the output) and saved as
safetensors; `register` stores their weights as blobs and catalogue rows, as publishing does
(screening itself is tested in tests/test_market.py).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from viz.serving.settler import wait_settled
from viz.store.blobs import put_blob
from viz.store.database import session_scope
from worlds.ledger import add_adapter


@contextmanager
def settled(database: Any) -> Iterator[Session]:
    """A session on `database` once every answered request is settled: the gateway settles
    after the answer goes out (`viz.serving.settler`), within milliseconds."""
    assert wait_settled(database), "an answered request was not settled within 10 s"
    with session_scope(database) as session:
        yield session


def make_adapter(base_folder: Path, folder: Path, *, seed: int, rank: int = 8) -> Path:
    """A PEFT LoRA on every linear layer of the base in `base_folder`, saved to `folder`."""
    import torch
    from peft import LoraConfig, get_peft_model

    from viz.models.loading import load_folder

    torch.manual_seed(seed)
    base = load_folder(base_folder, "fp32")
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules="all-linear", init_lora_weights=False
    )
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.mul_(0.3)  # a clear but not destructive change to the output
    model.save_pretrained(folder)
    return folder


def peft_composition(base: Any, folders_weights: list[tuple[Path, float]]) -> Any:
    """Plain PEFT over `base` with these adapters all active, each one's scaling multiplied by
    its weight: the reference a weighted composition must equal."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    (first, _), *rest = folders_weights
    model = PeftModel.from_pretrained(base, first, adapter_name=first.name)
    for folder, _ in rest:
        model.load_adapter(folder, adapter_name=folder.name)
    model.base_model.set_adapter([folder.name for folder, _ in folders_weights])
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for folder, weight in folders_weights:
                if folder.name in module.scaling:
                    module.scaling[folder.name] *= weight
    return model.eval()


def register(
    session: Session,
    blobs_dir: Path,
    folder: Path,
    name: str,
    owner: str,
    *,
    price_in: int = 100,
    price_out: int = 300,
    status: str = "approved",
    visibility: str = "public",
) -> int:
    """Put `folder`'s adapter in the catalogue (weights as a blob); returns the version id."""
    weights, _ = put_blob(blobs_dir, (folder / "adapter_model.safetensors").read_bytes())
    version = add_adapter(
        session, name, owner, price_in=price_in, price_out=price_out, status=status
    )
    version.weights_sha256 = weights
    version.config_json = (folder / "adapter_config.json").read_text()
    version.adapter.visibility = visibility
    session.flush()
    return version.id


@contextmanager
def run_server(app: Any) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port in a thread; yield its base URL."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serve_process(env: dict[str, str], port: int | None = None) -> Iterator[tuple[str, Any]]:
    """`viz serve` as its users run it, a process of its own on a loopback port (in `env`'s
    VIZ_HOME); yields its base URL and the process (to kill). Stopped with SIGTERM if alive."""
    import subprocess
    import sys

    import httpx

    port = port or free_port()
    log = Path(env["VIZ_HOME"]) / f"serve-{port}.log"
    with log.open("a") as output:  # a file, not a pipe nobody reads: that would block the server
        process = subprocess.Popen(
            [sys.executable, "-m", "viz.cli", "serve", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"viz serve exited with {process.returncode}: {log.read_text()}")
        with suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        time.sleep(0.1)
    try:
        yield url, process
    finally:
        if process.poll() is None:
            process.terminate()
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)
        if process.poll() is None:
            process.kill()
            process.wait()


@dataclass
class Cuts:
    """What a `cutting_proxy` did: the connections it cut mid-answer."""

    count: int = 0


@contextmanager
def cutting_proxy(
    upstream: str, *, after_bytes: int, request: bytes = b"POST /v1/completions"
) -> Iterator[tuple[str, Cuts]]:
    """A TCP proxy on a free loopback port in front of `upstream` (http://HOST:PORT) that lets
    everything through except the answer to a `request`: after `after_bytes` bytes of it, both
    connections are closed, which is what a client sees when the server dies mid-answer (and
    the server sees a client that left, so it stops generating). Yields its URL and its cuts."""
    host, port = upstream.removeprefix("http://").rstrip("/").split(":")
    listener = socket.create_server(("127.0.0.1", 0))
    cuts = Cuts()

    def pump(source: socket.socket, sink: socket.socket, state: dict[str, int], up: bool) -> None:
        try:
            while data := source.recv(65536):
                if up and data.startswith(request):
                    state["answer"] = 0  # a new request to cut: count its answer's bytes
                sink.sendall(data)
                if not up and state["answer"] >= 0:
                    state["answer"] += len(data)
                    if state["answer"] >= after_bytes:
                        cuts.count += 1
                        break
        except OSError:
            pass
        for end in (source, sink):
            with suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def accept() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the proxy was closed
            server = socket.create_connection((host, int(port)))
            state = {"answer": -1}
            for source, sink, up in ((client, server, True), (server, client, False)):
                threading.Thread(target=pump, args=(source, sink, state, up), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", cuts
    finally:
        with suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        listener.close()
