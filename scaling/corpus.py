"""Documents of text inputs, for `scaling data prepare` (scaling.prepare).

Inputs, read in the order given (a glob in sorted order), each optionally gzipped (`.gz`):
- a JSON-lines file (`.jsonl`, `.ndjson`): one document per line, `{"text": ...}` (blank lines skipped);
- any other file: UTF-8 text, the whole file one document;
- a directory saved by Hugging Face `datasets` (`save_to_disk`): its "text" column, splits in sorted
  order, read with `datasets.load_from_disk` (the `datasets` package is then needed).
Empty documents are skipped. A missing input, a line that is not a JSON object with a "text" string
(named by file and line) or a file that is not UTF-8 is a ConfigError.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import hashlib
import json
from pathlib import Path
from typing import Callable, Iterator, Sequence

from scaling.config import ConfigError

HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")  # a `save_to_disk` directory
JSONL_SUFFIXES = (".jsonl", ".ndjson")
HF_BATCH = 1024  # rows read at a time from a datasets directory


@dataclasses.dataclass(frozen=True)
class Source:
    path: Path
    kind: str  # "jsonl" | "text" | "hf"
    size: int  # bytes on disk (compressed, for .gz)
    sha256: str


def find_sources(inputs: Sequence[str]) -> list[Source]:
    """The input files (globs expanded, sorted) with their kind, size and digest; a ConfigError naming
    the input that is missing or not readable as text."""
    if not inputs:
        raise ConfigError("no INPUT given: name text, JSONL or Hugging Face datasets paths")
    sources = []
    for pattern in inputs:
        paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not paths:
            raise ConfigError(f"INPUT {pattern!r} matches no file")
        for p in map(Path, paths):
            if not p.exists():
                raise ConfigError(f"INPUT {str(p)!r}: no such file")
            if p.is_dir():
                if not any((p / m).is_file() for m in HF_MARKERS):
                    raise ConfigError(f"INPUT {str(p)!r} is a directory but not one saved by Hugging Face datasets "
                                      f"(none of {', '.join(HF_MARKERS)}); name its files or a glob")
                _require_datasets(p)
                sources.append(Source(p, "hf", _tree_size(p), _tree_digest(p)))
                continue
            name = p.name[:-3] if p.name.endswith(".gz") else p.name
            kind = "jsonl" if name.endswith(JSONL_SUFFIXES) else "text"
            try:
                with open(p, "rb") as f:
                    digest = hashlib.file_digest(f, "sha256").hexdigest()
            except OSError as e:
                raise ConfigError(f"INPUT {str(p)!r} is unreadable: {e}") from e
            sources.append(Source(p, kind, p.stat().st_size, digest))
    return sources


def _require_datasets(path: Path):
    try:
        import datasets  # noqa: PLC0415 - optional: only for save_to_disk directories
    except ImportError:
        raise ConfigError(f"INPUT {str(path)!r} is a Hugging Face datasets directory: reading it needs the "
                          "`datasets` package (pip install datasets)") from None
    return datasets


def _tree_files(path: Path) -> list[Path]:
    return sorted(f for f in path.rglob("*") if f.is_file())


def _tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in _tree_files(path))


def _tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in _tree_files(path):
        with open(f, "rb") as fh:
            h.update(f"{f.relative_to(path).as_posix()}\0{hashlib.file_digest(fh, 'sha256').hexdigest()}\n".encode())
    return h.hexdigest()


def read_documents(sources: Sequence[Source], progress: Callable[[int], None] | None = None) -> Iterator[str]:
    """The non-empty documents of the sources in order; progress(bytes of the sources read so far)."""
    done = 0
    for src in sources:
        try:
            for text, position in _documents_of(src):
                if progress is not None:
                    progress(done + min(position, src.size))
                if text:
                    yield text
        except (OSError, EOFError) as e:  # a truncated or corrupt .gz, a file that vanished
            raise ConfigError(f"INPUT {str(src.path)!r} is unreadable: {e}") from e
        done += src.size


def _documents_of(src: Source) -> Iterator[tuple[str, int]]:
    """(document, bytes of the file consumed so far) of one source."""
    if src.kind == "hf":
        yield from _hf_documents(src)
        return
    with open(src.path, "rb") as raw:
        stream = gzip.GzipFile(fileobj=raw) if src.path.name.endswith(".gz") else raw
        if src.kind == "text":
            data = stream.read()
            try:
                yield data.decode("utf-8"), src.size
            except UnicodeDecodeError as e:
                raise ConfigError(f"INPUT {str(src.path)!r} is not UTF-8 text ({e.reason} at byte {e.start})") from None
            return
        for lineno, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise ConfigError(f"INPUT {str(src.path)!r} line {lineno}: not JSON ({e})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise ConfigError(f"INPUT {str(src.path)!r} line {lineno}: expected a JSON object with a \"text\" "
                                  "string")
            yield obj["text"], raw.tell()


def _hf_documents(src: Source) -> Iterator[tuple[str, int]]:
    datasets = _require_datasets(src.path)
    loaded = datasets.load_from_disk(str(src.path))
    parts = [loaded[k] for k in sorted(loaded)] if isinstance(loaded, datasets.DatasetDict) else [loaded]
    read = 0
    for part in parts:
        if "text" not in part.column_names:
            raise ConfigError(f"INPUT {str(src.path)!r}: no \"text\" column (columns: {', '.join(part.column_names)})")
        for batch in part.iter(batch_size=HF_BATCH):
            for text in batch["text"]:
                read += len(text or "")
                yield text or "", read
