"""User data files: llm.c token files (header), headerless uint16/uint32 memmaps, text files, globs of
shards and a separate validation file; bad files are named."""

import numpy as np
import pytest

from scaling import data as data_lib
from scaling.config import ConfigError, DataConfig


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_bin_memmap(tmp_path, dtype):
    tokens = (np.arange(10_000) % 1000).astype(dtype)
    path = tmp_path / "tokens.bin"
    tokens.tofile(path)
    ds = data_lib.load_dataset(DataConfig(source="file", path=str(path), dtype=dtype), vocab_size=1024)
    assert len(ds.train) == 9_000 and len(ds.val) == 1_000
    np.testing.assert_array_equal(np.asarray(ds.val[:5]), tokens[9_000:9_005])
    b = data_lib.batch(ds.train, 0, 0, 4, 33)
    assert b.shape == (4, 33) and b.dtype == np.int32
    # consecutive windows of the stream: each row increases by one (mod 1000)
    assert np.all((np.diff(b, axis=1) % 1000) == 1)


def test_token_ids_beyond_the_vocabulary_are_refused(tmp_path):
    path = tmp_path / "big.bin"
    np.full(100, 5000, np.uint16).tofile(path)
    with pytest.raises(ConfigError, match="vocab_size"):
        data_lib.load_dataset(DataConfig(source="file", path=str(path)), vocab_size=256)


def test_text_file_is_read_as_bytes(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("to be or not to be " * 100)
    ds = data_lib.load_dataset(DataConfig(source="file", path=str(path)), vocab_size=256)
    assert bytes(ds.train[:5]) == b"to be"


def test_directory_instead_of_file_is_named(tmp_path):
    cfg = DataConfig(source="file", path=str(tmp_path))  # validation does no file I/O
    with pytest.raises(ConfigError, match="data.path.*is not a file"):
        data_lib.load_dataset(cfg, vocab_size=256)


# ------------------------------------------------------------------ llm.c / modded-nanogpt token files


def _write_llmc(path, tokens, magic=20240520, version=1, count=None):
    """A token file as karpathy/llm.c dev/data/data_common.py write_datafile writes it: 256 int32
    (magic, version, token count), then the tokens (uint16 for GPT-2, uint32 for Llama-3)."""
    header = np.zeros(256, dtype="<i4")
    header[:3] = magic, version, len(tokens) if count is None else count
    dtype = "<u2" if magic == 20240520 else "<u4"
    path.write_bytes(header.tobytes() + np.asarray(tokens, dtype=dtype).tobytes())
    return path


def _file_cfg(path, **kw):
    return DataConfig(source="file", path=str(path), **kw)


@pytest.mark.parametrize("magic, version, vocab", [(20240520, 1, 50_257), (20240801, 7, 128_256)])
def test_llmc_header_is_honoured(tmp_path, magic, version, vocab):
    """The header is not read as tokens: the token count and dtype come from it, whatever data.dtype says
    (before: 512 fake tokens, and a GPT-2 file's vocabulary came out as 55,433)."""
    tokens = np.arange(10_000) * 7919 % vocab
    tokens[123] = vocab - 1
    path = _write_llmc(tmp_path / "fineweb_train_000001.bin", tokens, magic, version)
    ds = data_lib.load_dataset(_file_cfg(path, dtype="uint16"), vocab_size=vocab)
    assert ds.vocab_size == vocab
    assert len(ds.train) + len(ds.val) == 10_000 and len(ds.val) == 1_000
    np.testing.assert_array_equal(np.asarray(ds.train[:5]), tokens[:5])
    np.testing.assert_array_equal(np.asarray(ds.val[-5:]), tokens[-5:])
    b = data_lib.batch(ds.train, 0, 0, 4, 17)
    starts = b[:, 0]
    for row in b:  # every window is a window of the tokens
        i = int(np.flatnonzero(tokens == row[0])[0])
        np.testing.assert_array_equal(row, tokens[i:i + 17])
    assert starts.dtype == np.int32


def test_llmc_header_with_wrong_size_is_named(tmp_path):
    path = _write_llmc(tmp_path / "short.bin", np.arange(1000), count=1200)
    with pytest.raises(ConfigError, match=r"data\.path=.*short\.bin.*header says 1,200 uint16 tokens "
                                          r"\(2,400 bytes\) but the file holds 2,000 bytes"):
        data_lib.load_dataset(_file_cfg(path), vocab_size=1024)
    with pytest.raises(ConfigError, match="data.path.*version 3, expected 1"):
        data_lib.load_dataset(_file_cfg(_write_llmc(tmp_path / "v3.bin", np.arange(100), version=3)), 1024)
    with pytest.raises(ConfigError, match="data.path.*eval file"):  # llm.c's HellaSwag/MMLU format
        data_lib.load_dataset(_file_cfg(_write_llmc(tmp_path / "hs.bin", np.arange(100), magic=20240522)), 1024)


def test_headerless_bin_of_odd_size_is_named(tmp_path):
    path = tmp_path / "odd.bin"
    path.write_bytes(b"\x01\x00" * 50 + b"\x01")
    with pytest.raises(ConfigError, match="data.path.*odd.bin.*not a whole number of data.dtype=uint16"):
        data_lib.load_dataset(_file_cfg(path), vocab_size=256)


def test_config_validation_does_no_file_io(tmp_path):
    """Existence is checked when the dataset loads (a run starts), with the same message."""
    missing = tmp_path / "no" / "tokens.bin"
    np.arange(100, dtype=np.uint16).tofile(tmp_path / "a.bin")
    for cfg in (_file_cfg(missing), _file_cfg(tmp_path / "a.bin", val_path=str(missing))):
        with pytest.raises(ConfigError, match=r"data\.(val_)?path=.*tokens\.bin.*no such file"):
            data_lib.load_dataset(cfg, vocab_size=256)
    with pytest.raises(ConfigError, match=r"data\.path=.*matches no file"):
        data_lib.load_dataset(_file_cfg(tmp_path / "shard_*.bin"), vocab_size=256)
    with pytest.raises(ConfigError, match="data.val_path"):
        DataConfig(source="synthetic", val_path="val.bin")


def test_glob_of_shards_is_one_logical_stream(tmp_path):
    a, b = np.arange(3_000) % 500, (np.arange(2_000) * 3) % 500
    _write_llmc(tmp_path / "fineweb_train_000002.bin", b)
    _write_llmc(tmp_path / "fineweb_train_000001.bin", a)  # sorted order, not creation order
    _write_llmc(tmp_path / "fineweb_val_000000.bin", np.arange(100))
    ds = data_lib.load_dataset(_file_cfg(tmp_path / "fineweb_train_*.bin", val_fraction=0.5), vocab_size=512)
    whole = np.concatenate([a, b])
    assert isinstance(ds.val, data_lib.Shards)  # the cut falls in shard 1: the tail spans both, unmerged
    assert all(isinstance(p, np.memmap) for p in ds.val.parts)
    assert len(ds.train) == 2_500 and len(ds.val) == 2_500 and ds.vocab_size == 500
    np.testing.assert_array_equal(np.asarray(ds.val), whole[2_500:])
    for step in range(3):  # windows (also those across the shard boundary) as from the concatenation
        np.testing.assert_array_equal(data_lib.batch(ds.val, 1, step, 64, 33),
                                      data_lib.batch(whole[2_500:], 1, step, 64, 33))
    np.testing.assert_array_equal(ds.val.take(np.array([[499], [500], [501]])), whole[[[2999], [3000], [3001]]])


def test_separate_validation_file(tmp_path):
    train_tokens, val_tokens = np.arange(4_000) % 300, np.arange(1_000) % 700
    _write_llmc(tmp_path / "fineweb_train_000001.bin", train_tokens[:2_000])
    _write_llmc(tmp_path / "fineweb_train_000002.bin", train_tokens[2_000:])
    _write_llmc(tmp_path / "fineweb_val_000000.bin", val_tokens)
    cfg = _file_cfg(tmp_path / "fineweb_train_*.bin", val_path=str(tmp_path / "fineweb_val_*.bin"))
    ds = data_lib.load_dataset(cfg, vocab_size=1024)
    np.testing.assert_array_equal(np.asarray(ds.train), train_tokens)  # all of it: val_fraction unused
    np.testing.assert_array_equal(np.asarray(ds.val), val_tokens)
    assert ds.vocab_size == 700  # the validation tokens are checked too
    with pytest.raises(ConfigError, match="model.vocab_size=512"):
        data_lib.load_dataset(cfg, vocab_size=512)
    overlapping = _file_cfg(tmp_path / "fineweb_*.bin", val_path=str(tmp_path / "fineweb_val_*.bin"))
    with pytest.raises(ConfigError, match="data.path.*data.val_path.*both hold.*fineweb_val_000000.bin"):
        data_lib.load_dataset(overlapping, vocab_size=1024)
    headerless = tmp_path / "val.bin"
    val_tokens.astype(np.uint32).tofile(headerless)
    with pytest.raises(ConfigError, match="data.val_path.*different token types"):
        data_lib.load_dataset(_file_cfg(tmp_path / "fineweb_train_*.bin", val_path=str(headerless),
                                        dtype="uint32"), vocab_size=1024)


def test_large_files_are_checked_on_a_bounded_sample(tmp_path, monkeypatch):
    """Beyond FULL_SCAN_TOKENS the vocabulary check reads SAMPLE_BLOCKS x SAMPLE_BLOCK tokens, not the
    file (a FineWeb shard set is tens of GB); model.vocab_size is trusted beyond the sample."""
    monkeypatch.setattr(data_lib, "FULL_SCAN_TOKENS", 1_000)
    monkeypatch.setattr(data_lib, "SAMPLE_BLOCKS", 4)
    monkeypatch.setattr(data_lib, "SAMPLE_BLOCK", 10)
    tokens = np.arange(20_000) % 100
    tokens[5_000] = 900  # between sampled blocks (blocks at 0, 6662, 13325, 19988 of the train part)
    path = _write_llmc(tmp_path / "big.bin", tokens)
    ds = data_lib.load_dataset(_file_cfg(path, val_fraction=0.0001), vocab_size=128)
    assert ds.vocab_size == 100
    del ds
    tokens[6_665] = 900  # inside a sampled block
    _write_llmc(path, tokens)
    with pytest.raises(ConfigError, match="token ids up to 900 but model.vocab_size=128"):
        data_lib.load_dataset(_file_cfg(path, val_fraction=0.0001), vocab_size=128)
