"""`scaling data prepare`: a small BPE trained on a slice of the embedded Shakespeare, llm.c shards with a
document separator, a deterministic split, bytes per token for bits per byte, resume after kill -9
byte-identical to an uninterrupted run, and bad inputs named with exit status 2."""

import gzip
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.load import read_run
from scaling import data as data_lib
from scaling import prepare as prep
from scaling.cli import main
from scaling.config import ConfigError, DataConfig
from scaling.train import train
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]
VOCAB, SHARD_TOKENS, VAL_FRACTION = 320, 20_000, 0.2
TINY_RUN = ["data.source=file", "model.kind=mlp", "model.window=4", "model.depth=1", "model.context=16",  # fast compile
            "run.steps=4", "run.log_every=2", "run.checkpoint_every=0", "run.eval_tokens=256", "run.eval_per_octave=1"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[str]:
    """Two plays as text files (one document each) and a third as gzipped JSONL, a document per scene."""
    root = tmp_path_factory.mktemp("corpus")
    plays = data_lib.shakespeare_plays()[:3]
    scenes = [s for s in plays[2].read_text().split("\n### SCENE") if s.strip()]
    with gzip.open(root / "scenes.jsonl.gz", "wt") as f:
        for s in scenes:
            f.write(json.dumps({"text": s}) + "\n\n")  # blank lines are skipped
    return [str(plays[0]), str(plays[1]), str(root / "scenes.jsonl.gz")]


def _documents(corpus: list[str]) -> list[str]:
    scenes = [json.loads(line)["text"] for line in gzip.open(corpus[2], "rt") if line.strip()]
    return [Path(corpus[0]).read_text(), Path(corpus[1]).read_text(), *scenes]


def _prepare(corpus, out, **kw):
    return prep.prepare(corpus, out, **{"vocab_size": VOCAB, "shard_tokens": SHARD_TOKENS,
                                        "val_fraction": VAL_FRACTION, **kw})


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "shards"
    _prepare(corpus, out)
    return out


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_split_is_evenly_spaced_and_prefix_stable():
    for f in (0.1, 0.25, 0.03, 0.5):
        val = [i for i in range(1000) if prep.is_validation(i, f)]
        for n in (7, 100, 1000):
            assert sum(i < n for i in val) == math.floor(n * f)
    assert [i for i in range(40) if prep.is_validation(i, 0.1)] == [9, 19, 29, 39]  # as shakespeare's plays
    assert not any(prep.is_validation(i, 0.0) for i in range(1000))


@pytest.mark.parametrize("dtype, kind", [("uint16", "gpt-2"), ("uint32", "llama-3")])
def test_written_shards_read_back_and_unlisted_ones_have_no_bytes_per_token(tmp_path, dtype, kind):
    tokens = (np.arange(5_000) * 7919 % (70_000 if dtype == "uint32" else 60_000)).astype(dtype)
    data_lib.write_shard(tmp_path / "a.bin", tokens, dtype)
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]  # no temporary left
    f = data_lib._open("data.path", "a.bin", tmp_path / "a.bin", "uint16")
    assert f.kind == kind and np.array_equal(f.tokens, tokens)
    ds = data_lib.load_dataset(DataConfig(source="file", path=str(tmp_path / "a.bin")), 70_000)
    assert ds.val_bytes_per_token is None and ds.tokenizer_sha256 is None  # no meta.json: unknown
    with pytest.raises(ValueError, match="do not fit uint16"):
        data_lib.write_shard(tmp_path / "b.bin", np.array([70_000]), "uint16")


def test_shards_hold_every_document_after_its_separator(prepared, corpus):
    from tokenizers import Tokenizer

    meta = json.loads((prepared / "meta.json").read_text())
    tok = Tokenizer.from_file(str(prepared / "tokenizer.json"))
    assert meta["tokenizer"]["vocab_size"] == VOCAB and meta["dtype"] == "uint16"
    assert meta["separator"] == {"token": "<|endoftext|>", "id": 0, "placement": "before every document"}
    docs = _documents(corpus)
    for split in ("train", "val"):
        info = meta["splits"][split]
        want = [d for i, d in enumerate(docs) if prep.is_validation(i, VAL_FRACTION) == (split == "val")]
        files = [data_lib._open("data.path", "x", prepared / s["name"], "uint16") for s in info["shards"]]
        assert all(f.kind == "gpt-2" for f in files)  # llm.c header, uint16 magic
        sizes = [len(f.tokens) for f in files]
        assert sizes[:-1] == [SHARD_TOKENS] * (len(sizes) - 1) and 0 < sizes[-1] <= SHARD_TOKENS
        stream = np.concatenate([f.tokens for f in files])
        assert stream[0] == 0 and info["tokens"] == len(stream) == sum(sizes)
        cuts = np.flatnonzero(stream == 0)
        got = [tok.decode(list(map(int, part[1:]))) for part in np.split(stream, cuts[1:])]
        assert got == want  # byte-level BPE: lossless, one separator before each document, in order
        assert info["documents"] == len(want) and info["bytes"] == sum(len(d.encode()) for d in want)
        assert info["bytes_per_token"] == info["bytes"] / info["tokens"]
    assert meta["splits"]["val"]["documents"] >= 2 and meta["splits"]["train"]["bytes_per_token"] > 1.5


def test_train_from_shards_logs_bits_per_byte(prepared, tmp_path):
    bpt = json.loads((prepared / "meta.json").read_text())["splits"]["val"]["bytes_per_token"]
    ds = data_lib.load_dataset(DataConfig(source="file", path=str(prepared)), VOCAB)
    assert ds.val_bytes_per_token == bpt and ds.vocab_size == VOCAB
    as_globs = DataConfig(source="file", path=str(prepared / "train_*.bin"), val_path=str(prepared / "val_*.bin"))
    globbed = data_lib.load_dataset(as_globs, VOCAB)
    assert globbed.val_bytes_per_token == bpt and np.array_equal(np.asarray(globbed.val), np.asarray(ds.val))
    out = tmp_path / "run"
    summary = train(tiny_config(*TINY_RUN, f"data.path={prepared}", f"model.vocab_size={VOCAB}"), out)
    assert json.loads((out / "config.json").read_text())["_meta"]["val_bytes_per_token"] == bpt
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in evaluated] == [0, 1, 2, 4]
    for r in evaluated:
        assert r["val_bpb"] == r["val_loss"] / math.log(2) / bpt
    assert not any("val_bpb" in r for r in rows if "val_loss" not in r)
    assert summary["final_val_bpb"] == summary["final_val_loss"] / math.log(2) / bpt
    assert summary["best_val_bpb"] == summary["best_val_loss"] / math.log(2) / bpt
    run_row, curves = read_run(out)  # analysis: a column next to the losses
    assert run_row["final_val_bpb"] == summary["final_val_bpb"]
    assert curves["val_bpb"].notna().sum() == len(evaluated)


def test_model_vocabulary_smaller_than_the_tokenizer_is_refused(prepared, tmp_path):
    with pytest.raises(ConfigError, match=rf"model.vocab_size=256 .*{VOCAB}.*data.path=.*shards"):
        data_lib.load_dataset(DataConfig(source="file", path=str(prepared)), 256)
    with pytest.raises(ConfigError, match=r"model.vocab_size=256 .*meta.json"):  # when the run starts
        train(tiny_config(*TINY_RUN, f"data.path={prepared / 'train_*.bin'}"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_byte_level_bits_per_byte_is_loss_over_ln2(tmp_path):
    summary = train(tiny_config(*TINY_RUN, "data.source=shakespeare"), tmp_path / "bytes")
    rows = [json.loads(line) for line in (tmp_path / "bytes" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["val_bpb"] == r["val_loss"] / math.log(2) for r in rows if "val_loss" in r)
    assert summary["final_val_bpb"] == summary["final_val_loss"] / math.log(2)
    text = tmp_path / "corpus.txt"
    text.write_bytes(data_lib.shakespeare_plays()[0].read_bytes())
    assert data_lib.load_dataset(DataConfig(source="file", path=str(text)), 256).val_bytes_per_token == 1.0
    # synthetic ids are not text: no val_bpb in the rows, null in the summary
    summary = train(tiny_config(*TINY_RUN, "data.source=synthetic"), tmp_path / "synthetic")
    rows = [json.loads(line) for line in (tmp_path / "synthetic" / "metrics.jsonl").read_text().splitlines()]
    assert not any("val_bpb" in r for r in rows) and summary["final_val_bpb"] is None


KILLER = """
import os, signal, sys
from scaling import data, prepare
written = []
def write_then_die(path, tokens, dtype):
    data.write_shard(path, tokens, dtype)
    written.append(path)
    if len(written) == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: as a power cut after the rename
prepare.write_shard = write_then_die
prepare.prepare(sys.argv[4:], sys.argv[1], vocab_size={vocab}, shard_tokens={shard}, val_fraction={frac})
""".format(vocab=VOCAB, shard=SHARD_TOKENS, frac=VAL_FRACTION)


def test_prepare_killed_midway_resumes_byte_identical(prepared, corpus, tmp_path, monkeypatch):
    out = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILLER, str(out), "x", "4", *corpus], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    finished = [s["name"] for split in ("train", "val") for s in manifest["shards"][split]]
    assert len(finished) == 3 and not (out / "meta.json").exists()  # the 4th was renamed, not recorded
    before = {name: (out / name).stat().st_mtime_ns for name in finished}
    rewritten = []
    monkeypatch.setattr(prep, "write_shard",
                        lambda p, t, d: (rewritten.append(Path(p).name), data_lib.write_shard(p, t, d)))
    _prepare(corpus, out)
    assert rewritten and not set(rewritten) & set(finished)  # finished shards are not redone
    assert {name: (out / name).stat().st_mtime_ns for name in finished} == before
    assert _files(out) == _files(prepared)  # and the result is the uninterrupted one, byte for byte
    rewritten.clear()
    _prepare(corpus, out)  # finished: nothing to do
    assert rewritten == []


def test_prepare_interrupted_by_an_exception_resumes(prepared, corpus, tmp_path, monkeypatch):
    calls = []

    def fail_on_third(p, t, d):
        calls.append(p)
        if len(calls) == 3:
            raise KeyboardInterrupt
        data_lib.write_shard(p, t, d)

    monkeypatch.setattr(prep, "write_shard", fail_on_third)
    with pytest.raises(KeyboardInterrupt):
        _prepare(corpus, tmp_path / "out")
    monkeypatch.setattr(prep, "write_shard", data_lib.write_shard)
    _prepare(corpus, tmp_path / "out")
    assert _files(tmp_path / "out") == _files(prepared)


def test_given_tokenizer_through_the_cli(prepared, corpus, tmp_path, capsys):
    """The trained tokenizer.json given back with --tokenizer gives the same shards (and a progress bar)."""
    out = tmp_path / "again"
    code = main(["data", "prepare", *corpus, "--out", str(out), "--tokenizer", str(prepared / "tokenizer.json"),
                 "--shard-tokens", str(SHARD_TOKENS), "--val-fraction", str(VAL_FRACTION)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "train:" in printed and f"model.vocab_size={VOCAB}" in printed
    for name in (p.name for p in prepared.glob("*.bin")):
        assert (out / name).read_bytes() == (prepared / name).read_bytes(), name
    meta = json.loads((out / "meta.json").read_text())
    assert meta["tokenizer"]["trained"] is False
    assert meta["splits"] == json.loads((prepared / "meta.json").read_text())["splits"]
    bar = tmp_path / "bar"
    prep.prepare(corpus[:1], bar, tokenizer=str(prepared / "tokenizer.json"), val_fraction=0, progress=True)
    assert json.loads((bar / "meta.json").read_text())["splits"]["val"]["tokens"] == 0


def _cli(capsys, *args) -> tuple[int, str]:
    code = main(["data", "prepare", *map(str, args)])
    return code, capsys.readouterr().err.strip()


def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys, prepared, corpus, monkeypatch):
    from tokenizers import Tokenizer, models

    out = tmp_path / "out"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": 3}\n')
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine"}\n\n{"text": \n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    big = tmp_path / "big.json"
    vocab = {f"w{i}": i for i in range(70_000)} | {"<|endoftext|>": 70_000}
    Tokenizer(models.WordLevel(vocab, unk_token="w0")).save(str(big))
    nosep = tmp_path / "nosep.json"
    Tokenizer(models.WordLevel({"a": 0, "b": 1}, unk_token="a")).save(str(nosep))
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "dataset_info.json").write_text("{}")
    cases = [
        ((tmp_path / "missing.txt", "--out", out), r"missing\.txt.*no such file"),
        ((bad, "--out", out), r"bad\.jsonl.* line 2: expected a JSON object with a \"text\" string"),
        ((broken, "--out", out), r"broken\.jsonl.* line 3: not JSON"),
        ((empty, "--out", out), r"empty\.jsonl.*hold no text"),
        ((corpus[0], "--out", out, "--tokenizer", big, "--dtype", "uint16"), r"--dtype=uint16 .*70,001 tokens"),
        ((corpus[0], "--out", out, "--vocab-size", 70_000, "--dtype", "uint16"), r"--dtype=uint16"),
        ((corpus[0], "--out", out, "--tokenizer", nosep), r"nosep\.json.*--separator"),
        ((corpus[0], "--out", out, "--vocab-size", 100), r"--vocab-size=100 must be at least 257"),
        ((tmp_path, "--out", out), r"is a directory but not one saved by Hugging Face datasets"),
        ((corpus[0], "--out", out, "--val-fraction", 0.5), r"--val-fraction=0.5: 1 documents give an empty validation"),
        ((*corpus, "--out", prepared, "--vocab-size", 300), r"--out=.*holds shards prepared from other inputs"),
    ]
    cases.append(((hf, "--out", out), r"hf.*needs the `datasets` package \(pip install datasets\)"))
    monkeypatch.setitem(sys.modules, "datasets", None)  # as on a machine without it: importing it fails
    for args, pattern in cases:
        code, err = _cli(capsys, *args)
        assert code == 2 and len(err.splitlines()) == 1, (args, err)
        assert re.search(pattern, err), (pattern, err)
        assert not out.exists(), (args, list(out.glob("*")))  # nothing left behind
    meta = json.loads((prepared / "meta.json").read_text())
    assert meta["settings"]["tokenizer"] == {"train_vocab_size": VOCAB}  # the refused rerun changed nothing


def test_a_hugging_face_datasets_directory_gives_the_shards_of_the_same_documents(prepared, corpus, tmp_path):
    """A `save_to_disk` directory is read through datasets.load_from_disk: its "text" rows are documents in
    order, so it prepares to the same token shards as a JSON-lines file of the same texts."""
    import datasets

    docs = _documents(corpus)[2:]  # the scenes
    hf = tmp_path / "hf"
    datasets.Dataset.from_dict({"text": docs, "other": list(range(len(docs)))}).save_to_disk(str(hf))
    jsonl = tmp_path / "same.jsonl"
    jsonl.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    outs = {}
    for name, source in (("hf", hf), ("jsonl", jsonl)):
        outs[name] = tmp_path / f"out_{name}"
        prep.prepare([str(source)], outs[name], tokenizer=str(prepared / "tokenizer.json"),
                     shard_tokens=SHARD_TOKENS, val_fraction=VAL_FRACTION)
    shards = sorted(p.name for p in outs["jsonl"].glob("*.bin"))
    assert shards and shards == sorted(p.name for p in outs["hf"].glob("*.bin"))
    for name in shards:
        assert (outs["hf"] / name).read_bytes() == (outs["jsonl"] / name).read_bytes(), name
    splits = [json.loads((outs[k] / "meta.json").read_text())["splits"] for k in ("hf", "jsonl")]
    assert splits[0]["train"]["documents"] + splits[0]["val"]["documents"] == len(docs)
    assert [s_["train"]["tokens"] for s_ in splits] == [splits[1]["train"]["tokens"]] * 2
