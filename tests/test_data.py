"""User data files: uint16/uint32 token memmaps and text files; bad files are named."""

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
    with pytest.raises(ConfigError, match="data.path"):
        DataConfig(source="file", path=str(tmp_path))
