"""Store reliability under moved inputs, concurrent registration, peers' repairs, damaged runs and stop signals.

Every sweep here is the tiny MLP of sweep_fixtures (one program), so the module compiles once; worker
processes share the persistent compilation cache."""

import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import pytest

from scaling.api import Config, from_dict
from scaling_cli import main
from sweeps.experiment import expand, load_experiment, unflatten
from sweeps.lease import LEASE, Lease, read_record
from sweeps.store import SUPERSEDED, Store, id_forms
from sweep_fixtures import TINY_BASE, StopAfter, shared_jax_cache, write_experiment
from sweeps.worker import EXIT_CRASHED, EXIT_DONE, EXIT_FAILED, Worker, WorkerOptions, run_worker

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = WorkerOptions(jax_cache=None, poll_s=0.1)
TEXT = "to be or not to be, that is the question " * 200


def _register(tmp: Path, lrs, name: str = "exp", base: dict | None = None):
    path = write_experiment(tmp / f"{name}.py", lrs, base=base)
    exp = load_experiment(path)
    store = Store(tmp / "store")
    return store, store.register(exp, expand(exp), log=lambda msg: None), path


def _files(d: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Every file under d (relative path -> sha256): what "byte-identical" compares."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file() and p.name not in skip}


def _worker_process(store: Store, name: str = "exp", **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "sweeps.worker", "--store", str(store.root), "--experiment", name,
           "--jax-cache", str(shared_jax_cache()), "--poll", "0.1"]
    return subprocess.Popen(cmd, cwd=ROOT, text=True, **popen)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-run sweep; tests work on copies of its store."""
    store, ids, _ = _register(tmp_path_factory.mktemp("finished"), [1e-3, 3e-3])
    assert Worker(store, ids, OPTIONS).run() == EXIT_DONE
    return store, ids


def _copy(finished, tmp: Path) -> tuple[Store, list[str]]:
    store, ids = finished
    shutil.copytree(store.root, tmp / "store")
    return Store(tmp / "store"), ids


# ---------------------------------------------------------------- 1. a moved data file is not damage


@pytest.fixture
def file_sweep(tmp_path):
    """Three runs on a data file, the first two finished: (store, ids, data file, experiment file)."""
    data = tmp_path / "tokens.txt"
    data.write_text(TEXT)
    store, ids, path = _register(tmp_path, [1e-3, 2e-3, 3e-3], base={"data.source": "file", "data.path": str(data)})
    assert Worker(store, ids[:2], OPTIONS).run() == EXIT_DONE
    return store, ids, data, path


def _check_left_alone(store: Store, ids: list[str], before: dict, data: Path) -> None:
    """The finished runs byte-identical, the last one pending and blocked on data.path, nothing quarantined."""
    for run_id in ids[:2]:
        assert _files(store.run_dir(run_id)) == before[run_id], run_id
    status = store.status(ids[2])
    assert status["state"] == "pending" and status.get("attempts", 0) == 0
    assert "data.path" in status["blocked"] and str(data) in status["blocked"]
    assert not any((store.run_dir(r) / "quarantine").exists() for r in ids)


def test_config_validation_reads_no_data_file(tmp_path, file_sweep):
    store, ids, data, _ = file_sweep
    cfg = from_dict(Config, unflatten({**TINY_BASE, "data.source": "file", "data.path": str(tmp_path / "nowhere")}))
    assert cfg.data.path.endswith("nowhere")
    data.rename(tmp_path / "moved.txt")
    for run_id in ids[:2]:
        health = store.inspect(run_id)
        assert health.finished() and health.problems == [], health


def test_moved_data_file_leaves_finished_runs_alone_on_the_worker_entry_point(tmp_path, file_sweep):
    store, ids, data, _ = file_sweep
    before = {r: _files(store.run_dir(r)) for r in ids[:2]}
    data.rename(tmp_path / "moved.txt")
    worker = _worker_process(store, stderr=subprocess.PIPE)
    _, err = worker.communicate(timeout=300)
    assert worker.returncode == EXIT_FAILED, err
    assert f"run {ids[2]}: cannot start: data.path={str(data)!r}: no such file" in err
    _check_left_alone(store, ids, before, data)
    (tmp_path / "moved.txt").rename(data)  # put back: the run finishes, the others are still untouched
    assert Worker(store, ids, OPTIONS).run() == EXIT_DONE
    assert [store.status(r)["state"] for r in ids] == ["done"] * 3
    assert all(_files(store.run_dir(r)) == before[r] for r in ids[:2])


def test_moved_data_file_after_start_up_of_sweep_run(tmp_path, file_sweep, monkeypatch, capsys):
    import sweeps.executors.local as local

    store, ids, data, path = file_sweep
    before = {r: _files(store.run_dir(r)) for r in ids[:2]}
    run_local = local.run_local

    def file_moves_after_start_up(*args, **kwargs):
        data.rename(tmp_path / "moved.txt")
        return run_local(*args, **kwargs)

    monkeypatch.setattr(local, "run_local", file_moves_after_start_up)
    argv = ["sweep", "run", str(path), "--store", str(store.root), "--workers", "1", "--no-progress",
            "--jax-cache", str(shared_jax_cache())]
    assert main(argv) == EXIT_FAILED
    out = capsys.readouterr().out
    assert "1 cannot start" in out and "data.path" in out and "no such file" in out, out
    _check_left_alone(store, ids, before, data)
    monkeypatch.setattr(local, "run_local", run_local)
    (tmp_path / "moved.txt").rename(data)
    assert main(argv) == EXIT_DONE
    assert [store.status(r)["state"] for r in ids] == ["done"] * 3
    assert all(_files(store.run_dir(r)) == before[r] for r in ids[:2])


# ---------------------------------------------------------------- 2. one directory per run


def _register_in_trials(path: str, roots: list[str], barrier) -> None:
    exp = load_experiment(path)
    runs = expand(exp)
    for root in roots:
        barrier.wait(60)  # every process registers the same experiment on the same fresh store at once
        Store(root).register(exp, runs)


def test_concurrent_registrations_give_one_directory_per_run(tmp_path):
    path = write_experiment(tmp_path / "exp.py", [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2], seeds=[0, 1])
    want = sorted(r.id for r in expand(load_experiment(path)))
    roots = [str(tmp_path / f"store{t}") for t in range(4)]
    ctx = mp.get_context("spawn")  # no fork of a process that may run JAX threads
    barrier = ctx.Barrier(3)
    procs = [ctx.Process(target=_register_in_trials, args=(str(path), roots, barrier)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    for root in roots:
        store = Store(root)
        assert store.run_ids() == want, root
        assert sorted(os.listdir(root)) == sorted(want + ["_experiments"]), root  # no staging leftovers
        assert sorted(store.manifest("exp")["runs"]) == want
        assert store.duplicates() == {} and store.orphans() == []


def _relabel(store: Store, src: str, dst: str) -> None:
    """What older code left behind: a copy of run src registered under the longer id dst."""
    shutil.copytree(store.run_dir(src), store.run_dir(dst))
    record = json.loads((store.run_dir(dst) / "run.json").read_text())
    (store.run_dir(dst) / "run.json").write_text(json.dumps({**record, "id": dst}))


def test_duplicates_on_disk_are_reported_and_merged_keeping_finished_data(tmp_path, monkeypatch, capsys):
    import sweeps.executors.local as local

    store, ids, path = _register(tmp_path, [1e-3, 2e-3, 3e-3])
    a, b, c = ids
    assert Worker(store, [a, b], OPTIONS).run() == EXIT_DONE
    digests = {r: store.run_record(r)["digest"] for r in ids}
    a2, b2 = id_forms(a, digests[a])[1], id_forms(b, digests[b])[1]
    _relabel(store, a, a2)  # both copies of a finished
    _relabel(store, b, b2)  # b's finished copy has the long id; the short one never started
    shutil.rmtree(store.run_dir(b))
    store.run_dir(b).mkdir()
    (store.run_dir(b) / "run.json").write_text(json.dumps({**store.run_record(b2), "id": b}))
    shutil.rmtree(store.run_dir(c))
    store.run_dir(c).mkdir()  # an orphan: registration stopped between mkdir and run.json
    kept = {a: _files(store.run_dir(a)), b2: _files(store.run_dir(b2))}
    copy_of_a = _files(store.run_dir(a2))

    assert main(["sweep", "status", "--store", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert f"duplicate: {a}, {a2} are one run" in out and f"duplicate: {b2}, {b} are one run" in out, out
    assert f"orphan directory {store.run_dir(c)}" in out

    monkeypatch.setattr(local, "run_local", lambda root, exp, workers, options, progress=True:
                        run_worker(root, exp, dataclasses.replace(options, jax_cache=None)))
    assert main(["sweep", "run", str(path), "--store", str(store.root), "--no-progress"]) == EXIT_DONE
    out = capsys.readouterr().out
    assert f"run {a2} is a copy of {a}" in out and f"run {b} is a copy of {b2}" in out, out
    assert store.run_ids() == sorted([a, b2, c]) and store.manifest("exp")["runs"] == [a, b2, c]
    assert {r: _files(store.run_dir(r)) for r in kept} == kept  # finished data untouched, nothing retrained
    assert _files(store.root / SUPERSEDED / a2, skip=("set_aside.json",)) == copy_of_a  # moved, never deleted
    assert json.loads((store.root / SUPERSEDED / b / "set_aside.json").read_text())["kept"] == b2
    assert store.status(c)["state"] == "done"
    assert main(["sweep", "status", "--store", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "3 runs" in out and "done 3" in out and "duplicate" not in out and "orphan" not in out


# ---------------------------------------------------------------- 5. peers' repairs and the sweep's exit status


def test_a_worker_reads_a_run_only_under_its_lease(tmp_path, finished, monkeypatch):
    store, ids = _copy(finished, tmp_path)
    metrics = store.run_dir(ids[1]) / "metrics.jsonl"
    metrics.write_text(metrics.read_text()[:-25])  # damaged: the worker repairs it
    inspect = Store.inspect

    def during_a_peers_repair(self, run_id):  # what an unleased reader may meet: files being set aside
        if (read_record(self.run_dir(run_id) / LEASE) or {}).get("owner") != "me":
            raise FileNotFoundError(f"{self.run_dir(run_id) / 'metrics.jsonl'} (set aside by a peer)")
        return inspect(self, run_id)

    monkeypatch.setattr(Store, "inspect", during_a_peers_repair)
    assert Worker(store, ids, OPTIONS, owner="me").run() == EXIT_DONE
    monkeypatch.setattr(Store, "inspect", inspect)
    assert all(store.inspect(r).finished() for r in ids)


def test_an_unexpected_exception_is_logged_with_the_run_id_and_the_worker_goes_on(tmp_path, monkeypatch):
    store, ids, _ = _register(tmp_path, [1e-3, 3e-3])
    prepare, calls = Worker.prepare, []

    def fails_once(self, run_id, *args, **kwargs):
        calls.append(run_id)
        if len(calls) == 1:
            raise FileNotFoundError("metrics.jsonl vanished")
        return prepare(self, run_id, *args, **kwargs)

    monkeypatch.setattr(Worker, "prepare", fails_once)
    log: list[str] = []
    assert Worker(store, ids, OPTIONS, log=log.append).run() == EXIT_DONE
    assert any(m.startswith(f"run {ids[0]}: unexpected error in the worker") and "vanished" in m for m in log)
    assert [store.status(r)["state"] for r in ids] == ["done", "done"]


def test_worker_process_crash_is_not_a_failed_sweep(monkeypatch, capsys):
    import sweeps.worker

    def crash(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(sweeps.worker, "run_worker", crash)
    monkeypatch.setattr(sweeps.worker, "install_stop_signals", lambda stop: None)  # keep pytest's handlers
    assert sweeps.worker.main(["--store", "s", "--experiment", "e"]) == EXIT_CRASHED  # the executor restarts it
    assert "RuntimeError: a bug" in capsys.readouterr().err


def test_sweep_exit_status_is_the_stores_final_state(tmp_path, finished, monkeypatch, capsys):
    import sweeps.executors.local as local

    store, ids = _copy(finished, tmp_path)
    monkeypatch.setattr(local, "worker_command", lambda *a: [sys.executable, "-c", "import sys; sys.exit(1)"])
    assert local.run_local(store.root, "exp", 1, OPTIONS, progress=False, refresh_s=0.05) == EXIT_DONE
    captured = capsys.readouterr()
    assert "worker 0 exited with 1" in captured.err and "2 runs: 2 done or diverged" in captured.out
    metrics = store.run_dir(ids[0]) / "metrics.jsonl"
    metrics.write_text(metrics.read_text()[:-25])
    assert local.run_local(store.root, "exp", 1, OPTIONS, progress=False, refresh_s=0.05) == 75
    assert "1 left to do" in capsys.readouterr().out


# ---------------------------------------------------------------- 6. status verifies finished runs


def _damage(store: Store, ids: list[str]) -> list[str]:
    metrics = store.run_dir(ids[0]) / "metrics.jsonl"
    metrics.write_text(metrics.read_text()[:-25])  # a truncated last line
    (store.run_dir(ids[1]) / "summary.json").unlink()
    return [f"{metrics}: line", f"{store.run_dir(ids[1]) / 'summary.json'} is missing"]


def test_status_reports_damaged_runs_with_their_paths(tmp_path, finished, capsys):
    store, ids = _copy(finished, tmp_path)
    wheres = _damage(store, ids)
    assert main(["sweep", "status", "--store", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "done 0" in out and "damaged 2" in out, out
    for run_id, where in zip(ids, wheres):
        assert any(line.startswith(f"damaged {run_id}: ") and where in line for line in out.splitlines()), out


def test_status_verification_is_cached_by_size_and_mtime(tmp_path, finished, monkeypatch, capsys):
    store, ids = _copy(finished, tmp_path)
    inspected: list[str] = []
    inspect = Store.inspect
    monkeypatch.setattr(Store, "inspect", lambda self, r: inspected.append(r) or inspect(self, r))

    def status() -> str:
        inspected.clear()
        assert main(["sweep", "status", "--store", str(store.root)]) == 0
        return capsys.readouterr().out

    assert "done 2" in status() and sorted(inspected) == sorted(ids)
    assert "done 2" in status() and inspected == []  # nothing changed: nothing read again
    _damage(store, ids)
    assert "damaged 2" in status() and sorted(inspected) == sorted(ids)


# ---------------------------------------------------------------- 9. a stop with nothing left to do


def _handles_sigterm(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


def _imported_jax(pid: int) -> bool:
    return "jaxlib" in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc to time the signal")
def test_sigterm_while_the_worker_starts_exits_0_when_every_run_is_done(tmp_path, finished):
    store, ids = _copy(finished, tmp_path)
    worker = _worker_process(store, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (_handles_sigterm(worker.pid) or _imported_jax(worker.pid)) and time.time() < deadline:
        time.sleep(0.002)  # SIGTERM as soon as the worker takes it, or once it is importing JAX
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == EXIT_DONE, err


def test_stopped_worker_exits_0_when_every_run_is_done_and_a_peer_holds_a_lease(tmp_path, finished):
    store, ids = _copy(finished, tmp_path)
    worker = Worker(store, ids, OPTIONS)
    with Lease.acquire(store.run_dir(ids[0]), "peer", ttl=30):  # a peer verifying that run
        worker.stop.set()
        assert worker.run() == EXIT_DONE


# ---------------------------------------------------------------- 3. damaged checkpoints


def _result(store: Store, run_id: str):
    rows = [json.loads(line) for line in (store.run_dir(run_id) / "metrics.jsonl").read_text().splitlines()]
    return rows, {k: v for k, v in store.summary(run_id).items() if k != "wall_time_s"}


@pytest.fixture(scope="module")
def preempted(tmp_path_factory):
    """Run 0 of `finished`, preempted at step 10: checkpoints 8 and 10."""
    store, (run_id,), _ = _register(tmp_path_factory.mktemp("preempted"), [1e-3])
    assert Worker(store, [run_id], OPTIONS, stop=StopAfter(11)).run() == 75
    assert store.inspect(run_id).checkpoints == [8, 10]
    return store, [run_id]


def _garble_metadata(step_dir: Path) -> None:
    (step_dir / "default" / "_METADATA").write_text("garbage")


def _nan_params(step_dir: Path) -> None:
    """Values that restore without an error but are garbage, as overwritten bytes inside an array file give."""
    import numpy as np
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckpt:
        state = ckpt.restore(step_dir / "default")
        state["params"] = jax.tree_util.tree_map(lambda x: np.full_like(x, np.nan), state["params"])
        ckpt.save(step_dir.parent / "rewritten", state)
    shutil.rmtree(step_dir / "default")
    os.replace(step_dir.parent / "rewritten", step_dir / "default")


def _forget_digests(run_dir: Path) -> None:  # a checkpoint written before digests: checked on restore alone
    (run_dir / "ckpt" / "digests.json").unlink(missing_ok=True)


@pytest.mark.parametrize("which, damage, digests", [
    ("finished", _garble_metadata, False),  # unreadable; its step is saved again after the fallback
    ("preempted", _nan_params, True),  # garbage that orbax reads: its files no longer match their digest
    ("preempted", _nan_params, False),  # the same without a digest: non-finite values are damage
])
def test_damaged_checkpoint_is_set_aside_and_the_run_resumes_from_an_intact_one(
        tmp_path, request, finished, which, damage, digests):
    ref_store, ref_ids = finished
    store, ids = _copy(request.getfixturevalue(which), tmp_path)
    run_id = ids[0]
    newest = store.inspect(run_id).checkpoints[-1]
    if which == "finished":
        (store.run_dir(run_id) / "summary.json").unlink()  # damaged: trained again from its checkpoints
    damage(store.run_dir(run_id) / "ckpt" / str(newest))
    if not digests:
        _forget_digests(store.run_dir(run_id))
    log: list[str] = []
    assert Worker(store, ids, OPTIONS, log=log.append).run() == EXIT_DONE
    assert store.status(run_id)["state"] == "done"
    assert _result(store, run_id) == _result(ref_store, ref_ids[0])  # as if never damaged
    aside = list((store.run_dir(run_id) / "quarantine").glob(f"*/*/ckpt-{newest}"))
    assert len(aside) == 1 and (aside[0] / "default").is_dir()  # kept for inspection
    assert any(f"ckpt/{newest}" in m and "set aside" in m and str(aside[0]) in m for m in log), log


# ---------------------------------------------------------------- 4. a lost lease


class TakenOverAt(threading.Event):
    """A stop flag that never stops, but at its n-th poll (step n of training) hands the run's lease to a
    peer, as a takeover of a stalled worker does, and keeps what the run's files held at that moment."""

    def __init__(self, n: int, run_dir: Path):
        super().__init__()
        self.n, self.run_dir, self.files = n, run_dir, None

    def is_set(self) -> bool:
        self.n -= 1
        if self.n == 0:
            peer = {"owner": "peer", "host": socket.gethostname(), "pid": os.getpid(), "ttl": 60,
                    "acquired": time.time(), "token": "the peer's"}
            (self.run_dir / "peer.tmp").write_text(json.dumps(peer))
            os.replace(self.run_dir / "peer.tmp", self.run_dir / LEASE)
            self.files = _files(self.run_dir, skip=(LEASE, "events.jsonl"))
        return super().is_set()


def test_a_worker_whose_lease_was_taken_over_writes_nothing_more(tmp_path, finished):
    ref_store, ref_ids = finished
    store, ids, _ = _register(tmp_path, [1e-3])
    run_dir = store.run_dir(ids[0])
    stop = TakenOverAt(6, run_dir)
    worker = Worker(store, ids, OPTIONS, stop=stop)
    assert worker.try_runs(ids) == {ids[0]: "lost"}
    assert stop.files is not None and _files(run_dir, skip=(LEASE, "events.jsonl")) == stop.files
    assert [e["event"] for e in store.events(ids[0])] == ["start", "lost"]
    (run_dir / LEASE).unlink()  # the peer goes away: its run resumes from the lost worker's last checkpoint
    assert Worker(store, ids, OPTIONS).run() == EXIT_DONE
    assert _result(store, ids[0]) == _result(ref_store, ref_ids[0])


def test_every_takeover_is_logged(tmp_path, finished):
    store, ids = _copy(finished, tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a worker killed after finishing its run, before releasing the lease
    stale = {"owner": "killed", "host": socket.gethostname(), "pid": dead.pid, "ttl": 3600, "acquired": time.time(),
             "token": "t"}
    (store.run_dir(ids[0]) / LEASE).write_text(json.dumps(stale))
    assert Worker(store, ids, OPTIONS).run() == EXIT_DONE
    takeovers = [e for e in store.events(ids[0]) if e["event"] == "takeover"]
    assert len(takeovers) == 1 and takeovers[0]["previous"] == "killed"
    assert not (store.run_dir(ids[0]) / LEASE).exists()
