"""Golden runs: the metrics of short configs (every optimizer, transformer and MLP, SP and muP, one vmapped
K = 4 group) are bit-identical to the committed fixtures recorded before the training loop was refactored
(tests/golden/record.py). XLA:CPU picks kernels by instruction set, so on a machine whose ISA differs
from the recording one the comparison is to 1e-5 relative instead, and says so."""

import json
import math
import warnings
from pathlib import Path

from tests.golden import record

HERE = Path(record.__file__).parent


def test_golden_runs_reproduce_bit_for_bit(tmp_path):
    meta = json.loads((HERE / "golden.json").read_text())
    assert meta["single"] == record.SINGLE and meta["batched"] == record.BATCHED and meta["run"] == record.RUN
    exact = meta["recorded_on"] == record.machine()
    if not exact:
        warnings.warn(f"golden runs recorded on {meta['recorded_on']}, compared to 1e-5 on {record.machine()}")
    rows = record.run_all(tmp_path)
    for name, got in rows.items():
        want = [json.loads(line) for line in (HERE / f"{name}.jsonl").read_text().splitlines()]
        assert [r["step"] for r in got] == [r["step"] for r in want], name
        for g, w in zip(got, want):
            assert set(g) == set(w), (name, g["step"], set(g) ^ set(w))
            for key in w:
                if exact:
                    assert g[key] == w[key], (name, g["step"], key, g[key], w[key])
                else:
                    assert math.isclose(g[key], w[key], rel_tol=1e-5, abs_tol=1e-7), (name, g["step"], key)
