"""Text -> token shards: `scaling data prepare INPUT... --out DIR`.

Inputs and their documents: scaling.corpus (text files, JSONL, Hugging Face datasets directories),
numbered i = 0, 1, ... in input order.

Split: document i is validation when floor((i+1)·f) > floor(i·f) for f = --val-fraction: evenly spaced,
exactly floor(n·f) of the first n documents, the same whatever follows (with f = 0.1, documents 9, 19,
29, ..., as data.source=shakespeare splits the plays).

Tokens: a Hugging Face `tokenizers` tokenizer, given as a tokenizer.json, or trained on the training
documents when none is given (byte-level BPE of --vocab-size tokens as in GPT-2, so every text encodes
and decodes losslessly; its separator "<|endoftext|>" is id 0). Each document is the separator followed
by the document's tokens (karpathy/llm.c dev/data/fineweb.py `tokenize`), and each split's stream is cut
into shards of --shard-tokens tokens (the last one shorter), written as llm.c token files by
scaling.data.write_shard: DIR/train_000000.bin, ..., DIR/val_000000.bin, ... The tokenizer is kept as
DIR/tokenizer.json.

DIR/meta.json, written last, describes the result: the sources and their sha256, the tokenizer (sha256,
vocabulary), the separator, the dtype, and per split the documents, UTF-8 bytes, tokens (separators
included) and their ratio, the bytes per token that turns a loss in nats per token into bits per byte
(scaling.record.bits_per_byte; Paloma, Magnusson et al. 2023, compares tokenizers this way).
`data.source=file data.path=DIR` trains on the train shards and validates on the val shards.

Resume: every shard is written atomically and recorded in DIR/manifest.json with the position in the
document stream where it ends. A rerun of the same command after an interruption (kill -9 included)
reads the documents again but tokenizes only those not yet in finished shards, and ends with files
byte-identical to an uninterrupted run's; a rerun on a finished DIR does nothing. A DIR prepared from
other inputs or settings is refused, never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from scaling.config import ConfigError
from scaling.corpus import Source, find_sources, read_documents
from scaling.data import HEADER_BYTES, HEADERS, PREPARED_META, header_magic, write_shard
from scaling.logs import write_bytes_atomic, write_json_atomic

FORMAT_VERSION = 1
MANIFEST, TOKENIZER = "manifest.json", "tokenizer.json"
SPLITS = ("train", "val")
SHARD_TOKENS = 100_000_000  # llm.c's FineWeb shards
TRAINED_SEPARATOR = "<|endoftext|>"
SEPARATORS = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eot_id|>", "[SEP]")  # looked for, in order
BATCH_DOCUMENTS, BATCH_BYTES = 1024, 8 << 20  # documents tokenized per encode_batch call
SPLIT_RULE = "document i is validation when floor((i+1)*f) > floor(i*f), f = val_fraction"


def is_validation(index: int, fraction: float) -> bool:
    """Document `index` goes to validation (see the module docstring: evenly spaced, floor(n·f) of n)."""
    return math.floor((index + 1) * fraction) > math.floor(index * fraction)


# ----------------------------------------------------------------------------- tokenizer


def train_tokenizer(texts: Iterator[str], vocab_size: int):
    """A byte-level BPE (GPT-2's pre-tokenization and byte alphabet) trained on texts, with the
    separator TRAINED_SEPARATOR as id 0."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: PLC0415

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[TRAINED_SEPARATOR],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok


def _load_tokenizer(path: Path):
    try:
        from tokenizers import Tokenizer  # noqa: PLC0415
    except ImportError:
        raise ConfigError("scaling data prepare needs the `tokenizers` package: pip install 'scaling[data]'") from None
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exceptions for unparsable files
        raise ConfigError(f"--tokenizer={str(path)!r} is not a Hugging Face tokenizer.json ({e})") from None


def _vocab_size(tok) -> int:
    """Ids run up to this (exclusive): the largest id, added tokens included, plus one."""
    return max(tok.get_vocab(with_added_tokens=True).values()) + 1


def _separator_id(tok, separator: str | None, where: str) -> tuple[str, int]:
    for token in [separator] if separator else SEPARATORS:
        token_id = tok.token_to_id(token)
        if token_id is not None:
            return token, token_id
    if separator:
        raise ConfigError(f"--separator={separator!r} is not a token of {where}")
    raise ConfigError(f"{where} has none of the separators {', '.join(SEPARATORS)}: name its document "
                      "separator with --separator TOKEN")


def _resolve_dtype(dtype: str, vocab: int, where: str) -> str:
    if dtype == "auto":
        return "uint16" if vocab <= 1 << 16 else "uint32"
    if dtype == "uint16" and vocab > 1 << 16:
        raise ConfigError(f"--dtype=uint16 holds ids below 65,536 but {where} has {vocab:,} tokens; "
                          "use --dtype uint32 (or auto)")
    return dtype


# ----------------------------------------------------------------------------- shards


class _SplitWriter:
    """One split's token stream cut into shards of shard_tokens; resumes after its recorded shards."""

    def __init__(self, out: Path, split: str, dtype: str, shard_tokens: int, shards: list[dict],
                 on_shard: Callable[[], None]):
        self.out, self.split, self.dtype, self.shard_tokens = out, split, dtype, shard_tokens
        self.shards, self.on_shard = shards, on_shard  # the manifest's list (appended to) and its saver
        self.resume_doc, self.resume_offset = shards[-1]["end"] if shards else (0, 0)
        self.pieces: list[tuple[int, int, np.ndarray]] = []  # (document, offset of piece[0] in it, tokens)
        self.count = 0

    def add(self, doc: int, tokens: np.ndarray) -> None:
        """The tokens of document doc (separator first); those of finished shards are dropped."""
        if doc < self.resume_doc:
            return
        offset = self.resume_offset if doc == self.resume_doc else 0
        if offset < len(tokens):
            self.pieces.append((doc, offset, tokens[offset:]))
            self.count += len(tokens) - offset
        while self.count >= self.shard_tokens:
            self._write(self.shard_tokens)

    def finish(self) -> None:
        if self.count:
            self._write(self.count)

    def _write(self, n: int) -> None:
        take, rest, got, end = [], [], 0, (0, 0)
        for doc, offset, tokens in self.pieces:
            need = n - got
            if need <= 0:
                rest.append((doc, offset, tokens))
            elif len(tokens) <= need:
                take.append(tokens)
                got, end = got + len(tokens), (doc, offset + len(tokens))
            else:
                take.append(tokens[:need])
                rest.append((doc, offset + need, tokens[need:]))
                got, end = n, (doc, offset + need)
        self.pieces, self.count = rest, self.count - n
        shard = np.concatenate(take)
        name = f"{self.split}_{len(self.shards):06d}.bin"
        write_shard(self.out / name, shard, self.dtype)
        digest = hashlib.sha256((self.out / name).read_bytes()).hexdigest()
        self.shards.append({"name": name, "tokens": int(n), "sha256": digest, "end": list(end)})
        self.on_shard()


# ----------------------------------------------------------------------------- the output directory


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ConfigError(f"--out: {path} is unreadable ({e}); delete the directory to prepare again") from e


def _same(a, b) -> bool:
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def _previous(out: Path, settings: dict) -> tuple[dict | None, dict | None]:
    """(meta of a finished preparation with these settings, manifest of an unfinished one); a
    ConfigError when DIR holds shards of other inputs or settings (nothing is overwritten)."""
    for name in (PREPARED_META, MANIFEST):
        record = _read_json(out / name)
        if record is not None and not _same(record.get("settings"), settings):
            raise ConfigError(f"--out={str(out)!r} holds shards prepared from other inputs or settings ({out / name}); "
                              "choose another directory or delete it")
        if record is not None:
            return (record, None) if name == PREPARED_META else (None, record)
    if any(out.glob("train_*.bin")) or any(out.glob("val_*.bin")):
        raise ConfigError(f"--out={str(out)!r} holds shards without a {MANIFEST}; choose another directory or "
                          "delete it")
    return None, None


def _check_shards(out: Path, manifest: dict) -> None:
    itemsize = {"uint16": 2, "uint32": 4}
    for split in SPLITS:
        for shard in manifest["shards"][split]:
            path = out / shard["name"]
            want = HEADER_BYTES + shard["tokens"] * itemsize[manifest["dtype"]]
            if not path.is_file() or path.stat().st_size != want:
                raise ConfigError(f"--out={str(out)!r}: {shard['name']}, finished in {MANIFEST}, is missing or "
                                  "damaged; delete the directory to prepare again")


def _remove_temporaries(out: Path) -> None:
    """Leftovers of our atomic writes killed before their rename (scaling.logs.write_bytes_atomic)."""
    for pattern in (".train_*.bin.tmp*", ".val_*.bin.tmp*", f".{MANIFEST}.tmp*", f".{PREPARED_META}.tmp*",
                    f".{TOKENIZER}.tmp*"):
        for tmp in out.glob(pattern):
            tmp.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# ----------------------------------------------------------------------------- prepare


def prepare(inputs: Sequence[str], out: str | Path, *, tokenizer: str | None = None, vocab_size: int | None = None,
            val_fraction: float = 0.1, shard_tokens: int = SHARD_TOKENS, dtype: str = "auto",
            separator: str | None = None, progress: bool = False) -> dict:
    """Tokenize inputs into shards in out (module docstring); returns meta.json's content."""
    out = Path(out)
    if tokenizer is not None and vocab_size is not None:
        raise ConfigError("give --tokenizer or --vocab-size, not both (--vocab-size trains a tokenizer)")
    if tokenizer is None and vocab_size is None:
        vocab_size = 8192
    if vocab_size is not None and vocab_size < 257:
        raise ConfigError(f"--vocab-size={vocab_size} must be at least 257 (256 byte symbols and the separator)")
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"--val-fraction={val_fraction} must be in [0, 1)")
    if not 1 <= shard_tokens < 2**31:
        raise ConfigError(f"--shard-tokens={shard_tokens} must be in [1, 2^31) (the llm.c header counts in int32)")
    if dtype not in ("auto", "uint16", "uint32"):
        raise ConfigError(f"--dtype={dtype!r} must be auto, uint16 or uint32")
    if vocab_size is not None:
        _resolve_dtype(dtype, vocab_size, f"--vocab-size={vocab_size}")
    tok_path = Path(tokenizer) if tokenizer is not None else None
    if tok_path is not None and not tok_path.is_file():
        raise ConfigError(f"--tokenizer={tokenizer!r}: no such file")
    sources = find_sources(inputs)
    settings = {"version": FORMAT_VERSION, "sources": [[s.kind, s.sha256] for s in sources],
                "tokenizer": {"sha256": _sha256(tok_path)} if tok_path else {"train_vocab_size": vocab_size},
                "separator": separator, "val_fraction": val_fraction, "shard_tokens": shard_tokens, "dtype": dtype}
    meta, manifest = _previous(out, settings)
    if meta is not None:
        (out / MANIFEST).unlink(missing_ok=True)  # killed between writing meta.json and this
        return meta
    given = _load_tokenizer(tok_path) if tok_path is not None else None
    if given is not None:  # refused before anything is written
        _resolve_dtype(dtype, _vocab_size(given), f"--tokenizer={tokenizer!r}")
        _separator_id(given, separator, f"--tokenizer={tokenizer!r}")
    created, fresh = not out.exists(), manifest is None
    out.mkdir(parents=True, exist_ok=True)
    _remove_temporaries(out)
    try:
        return _prepare(out, sources, settings, manifest, given, tok_path, progress)
    except ConfigError:
        if fresh:  # bad input found midway (a bad JSONL line): leave no half-prepared directory behind
            _discard(out, created)
        raise


def _prepare(out: Path, sources: list[Source], settings: dict, manifest: dict | None, given, tok_path: Path | None,
             progress: bool) -> dict:
    total = sum(s.size for s in sources)
    with _Progress(progress) as bar:
        if given is not None:
            tok = given
            write_bytes_atomic(out / TOKENIZER, tok_path.read_bytes())  # the shards name the copy beside them
        elif manifest is not None and (out / TOKENIZER).is_file() and \
                _sha256(out / TOKENIZER) == manifest["tokenizer"]["sha256"]:
            tok = _load_tokenizer(out / TOKENIZER)  # trained before the interruption
        else:
            texts = (t for i, t in enumerate(read_documents(sources, bar.task("train tokenizer", total)))
                     if not is_validation(i, settings["val_fraction"]))
            tok = train_tokenizer(texts, settings["tokenizer"]["train_vocab_size"])
            write_bytes_atomic(out / TOKENIZER, tok.to_str().encode())
        where = f"--tokenizer={str(tok_path)!r}" if tok_path else "the trained tokenizer"
        sep_token, sep_id = _separator_id(tok, settings["separator"], where)
        tokenizer_info = {"file": TOKENIZER, "sha256": _sha256(out / TOKENIZER), "vocab_size": _vocab_size(tok),
                          "trained": tok_path is None, "source": str(tok_path) if tok_path else None}
        if manifest is None:
            manifest = {"settings": settings, "tokenizer": tokenizer_info, "shards": {split: [] for split in SPLITS},
                        "dtype": _resolve_dtype(settings["dtype"], tokenizer_info["vocab_size"], where)}
            write_json_atomic(out / MANIFEST, manifest)
        _check_shards(out, manifest)
        counts = _write_shards(out, sources, tok, sep_id, manifest, bar.task("tokenize", total))
    splits = {}
    for split in SPLITS:
        shards = manifest["shards"][split]
        tokens = sum(s["tokens"] for s in shards)
        splits[split] = {**counts[split], "tokens": tokens,
                         "bytes_per_token": counts[split]["bytes"] / tokens if tokens else None,
                         "shards": [{k: s[k] for k in ("name", "tokens", "sha256")} for s in shards]}
    n_train, n_val = splits["train"]["documents"], splits["val"]["documents"]
    if not n_train + n_val:
        raise ConfigError(f"the inputs ({', '.join(str(s.path) for s in sources)}) hold no text")
    if settings["val_fraction"] > 0 and not n_val:
        raise ConfigError(f"--val-fraction={settings['val_fraction']}: {n_train} documents give an empty validation "
                          f"split ({SPLIT_RULE})")
    magic = header_magic(manifest["dtype"])
    meta = {"format": "scaling.prepare", "version": FORMAT_VERSION, "settings": settings,
            "sources": [{"path": str(s.path), "kind": s.kind, "bytes": s.size, "sha256": s.sha256} for s in sources],
            "tokenizer": tokenizer_info,
            "separator": {"token": sep_token, "id": sep_id, "placement": "before every document"},
            "dtype": manifest["dtype"], "header": {"magic": magic, "version": HEADERS[magic][0]},
            "split_rule": SPLIT_RULE, "val_fraction": settings["val_fraction"], "splits": splits}
    write_json_atomic(out / PREPARED_META, meta)
    (out / MANIFEST).unlink(missing_ok=True)
    return meta


def _discard(out: Path, created: bool) -> None:
    """Remove this preparation's own files (the inputs cannot make a dataset), and out if it made it."""
    for path in [*out.glob("train_*.bin"), *out.glob("val_*.bin"), out / MANIFEST, out / TOKENIZER]:
        path.unlink(missing_ok=True)
    if created and not any(out.iterdir()):
        out.rmdir()


def _write_shards(out: Path, sources: Sequence[Source], tok, sep_id: int, manifest: dict,
                  progress: Callable[[int], None] | None) -> dict:
    """Tokenize the documents not yet in finished shards into shards; per split, the documents and
    their UTF-8 bytes (all of them, finished shards' included)."""
    settings = manifest["settings"]
    fraction, dtype = settings["val_fraction"], np.dtype(manifest["dtype"])
    writers = {split: _SplitWriter(out, split, manifest["dtype"], settings["shard_tokens"], manifest["shards"][split],
                                   lambda: write_json_atomic(out / MANIFEST, manifest)) for split in SPLITS}
    counts = {split: {"documents": 0, "bytes": 0} for split in SPLITS}
    pending: list[tuple[int, str, str]] = []
    pending_bytes = 0

    def encode() -> None:
        for (i, split, _), enc in zip(pending, tok.encode_batch([t for _, _, t in pending], add_special_tokens=False)):
            tokens = np.empty(len(enc.ids) + 1, dtype)
            tokens[0] = sep_id
            tokens[1:] = enc.ids
            writers[split].add(i, tokens)
        pending.clear()

    for i, text in enumerate(read_documents(sources, progress)):
        split = "val" if is_validation(i, fraction) else "train"
        n_bytes = len(text.encode("utf-8"))
        counts[split]["documents"] += 1
        counts[split]["bytes"] += n_bytes
        if i < writers[split].resume_doc:
            continue  # in a finished shard: counted, not tokenized again
        pending.append((i, split, text))
        pending_bytes += n_bytes
        if len(pending) >= BATCH_DOCUMENTS or pending_bytes >= BATCH_BYTES:
            encode()
            pending_bytes = 0
    encode()
    for split in SPLITS:
        writers[split].finish()
    return counts


class _Progress:
    """A rich progress bar over the bytes of the inputs, one task per pass (none when disabled)."""

    def __init__(self, enabled: bool):
        self.progress = None
        if enabled:
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,  # noqa: PLC0415
                                       TimeRemainingColumn, TransferSpeedColumn)

            self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                                     TransferSpeedColumn(), TimeRemainingColumn())

    def __enter__(self) -> _Progress:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def task(self, description: str, total: int) -> Callable[[int], None] | None:
        if self.progress is None:
            return None
        task = self.progress.add_task(description, total=total)
        return lambda done: self.progress.update(task, completed=done)
