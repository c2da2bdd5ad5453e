"""Multi-host JAX (scaling.distributed, `scaling train --coordinator/--num-processes/--process-id/--slurm`,
the submitit multi-host job): two processes on localhost with CPU collectives (gloo) run one data-parallel
step of the real train step and match one process on the whole batch; SLURM's variables give the
arguments jax.distributed.initialize receives; bad flags exit 2 naming the flag.

Every process pair runs in fresh subprocesses with a deadline (faulthandler dumps a stalled child's stack
and exits; the parent kills whatever is left), so a collective that never completes fails the test
instead of hanging CI. One CPU device per process: XLA's CPU collectives with several devices per process
are fragile (openxla/xla#16430)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import types
from pathlib import Path

import jax
import numpy as np
import pytest

from scaling import distributed
from scaling.cli import main
from scaling.config_io import ConfigError
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 120  # per process pair; a pair takes ~20-40 s on a loaded 2-core machine
OPTIMIZERS = ("adamw", "muon")
STEP = TINY + ["model.depth=1"]  # one block: the step's compilations dominate the test
SLURM_VARS = distributed.SLURM_VARIABLES + ("SLURM_JOB_NODELIST", "SLURM_NNODES")
LAYOUT_VARS = (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES, distributed.ENV_PROCESS_ID,
               "JAX_LOCAL_DEVICE_IDS", "JAX_COORDINATOR_PORT")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(code: str, args: list[str], roles: list[str], envs: list[dict], tmp_path: Path) -> list[dict]:
    """Run `code` in one process per role (argv: *args, role; env updated by envs[i]), each printing one
    JSON line last; their JSON lines, in order. All are killed at the deadline."""
    clean = {k: v for k, v in os.environ.items() if k not in SLURM_VARS + LAYOUT_VARS}
    logs = [open(tmp_path / f"process-{i}.log", "w+") for i in range(len(roles))]
    procs = [subprocess.Popen([sys.executable, "-c", code, *args, role], cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT, env={**clean, **env})
             for role, log, env in zip(roles, logs, envs)]
    try:
        codes = [p.wait(timeout=DEADLINE_S) for p in procs]
    except subprocess.TimeoutExpired:
        codes = None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    outputs = []
    for log in logs:
        log.seek(0)
        outputs.append(log.read())
        log.close()
    assert codes == [0] * len(roles), f"exit codes {codes}:\n" + "\n---\n".join(o[-3000:] for o in outputs)
    return [json.loads(o.strip().splitlines()[-1]) for o in outputs]


# ---------------------------------------------------------------- one data-parallel step over two processes

# Role 0 or 1: one of two processes of a jax.distributed job, each with one CPU device, feeding its half of
# the batch to a "data" mesh over both; role "reference": a lone process, the whole batch on one device,
# through the project's own one-device step (Program.step).
STEP_CHILD = f"""
import faulthandler, json, sys
faulthandler.dump_traceback_later({DEADLINE_S - 20}, exit=True)
import jax
jax.config.update("jax_num_cpu_devices", 1)
jax.config.update("jax_numpy_rank_promotion", "raise")
from scaling import distributed
coordinator, overrides, optimizers, out, role = sys.argv[1], *map(json.loads, sys.argv[2:4]), *sys.argv[4:6]
if role != "reference":
    distributed.initialize(distributed.from_arguments(coordinator, 2, int(role)), timeout_s=60)
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
from scaling import data
from scaling.config import load_config
from scaling.program import get_program

mesh = Mesh(np.array(jax.devices()), ("data",), axis_types=(AxisType.Auto,))
replicated, by_rows = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))
local = lambda x: np.asarray(x.addressable_data(0))
shards = None
for name in optimizers:
    cfg = load_config(overrides=overrides + ["optim.name=" + name])
    program = get_program(cfg)
    B, T = cfg.run.batch_size, cfg.model.context
    tokens_BxT1 = data.batch(data.load_dataset(cfg.data, cfg.model.vocab_size).train, cfg.run.data_seed, 0, B, T + 1)
    state = program.init_state(jax.random.PRNGKey(cfg.run.seed), cfg)
    hp = program.hyper_values(cfg)
    if role == "reference":
        new, metrics = program.step(state, tokens_BxT1, jnp.int32(0), True, hp)
    else:
        pid, rows = int(role), B // jax.process_count()  # this process's half of the batch
        tokens = jax.make_array_from_process_local_data(by_rows, tokens_BxT1[pid * rows:(pid + 1) * rows], (B, T + 1))
        shards = [s.index[0].start for s in tokens.addressable_shards]
        put = lambda x: jax.device_put(np.asarray(x), replicated)  # the same value on every process
        state, hp = jax.tree_util.tree_map(put, state), jax.tree_util.tree_map(put, hp)
        new, metrics = jax.jit(program.step_fn, out_shardings=replicated)(state, tokens, put(np.int32(0)),
                                                                          put(np.bool_(True)), hp)
    np.savez(f"{{out}}/{{name}}-{{role}}.npz", loss=local(metrics["loss"]), grad_norm=local(metrics["grad_norm"]),
             lr=np.float32(cfg.optim.lr), n_params=len(jax.tree_util.tree_leaves(new.params)),
             *[local(x) for x in jax.tree_util.tree_leaves(new.params)],
             *[local(x) for x in jax.tree_util.tree_leaves(new.opt_state)])
print(json.dumps({{"process_id": jax.process_index(), "processes": jax.process_count(), "devices": jax.device_count(),
                  "batch_shards": shards}}))
"""


def _leaves(npz) -> tuple[list, list]:
    n = len(npz.files) - 4
    leaves = [npz[f"arr_{i}"] for i in range(n)]
    return leaves[:int(npz["n_params"])], leaves[int(npz["n_params"]):]


def test_one_data_parallel_step_over_two_processes_matches_one_process(tmp_path):
    """Process i feeds rows [4i, 4i+4) of the batch to a 2-device "data" mesh spanning both processes;
    loss, gradient norm, the optimizer state (AdamW's moments, Muon's momentum: the all-reduced gradient
    itself) and the updated parameters agree with a lone process's step on all 8 rows.

    Tolerances: float32 reduction order. State leaves to 1e-5 of each leaf's largest entry (seen: < 1e-6).
    Parameters to 1% of one step (lr) per entry: AdamW's first update g/(|g| + eps) amplifies a gradient
    entry's rounding error by up to |g|/eps where |g| ~ eps, and this tiny model has gradients of 1e-8
    (seen: 0.15% of a step, in one entry of 2048)."""
    args = [f"127.0.0.1:{free_port()}", json.dumps(STEP), json.dumps(OPTIMIZERS), str(tmp_path)]
    procs = run_processes(STEP_CHILD, args, ["0", "1", "reference"], [{}, {}, {}], tmp_path)
    assert [(p["process_id"], p["processes"], p["devices"]) for p in procs] == [(0, 2, 2), (1, 2, 2), (0, 1, 1)]
    assert [p["batch_shards"] for p in procs[:2]] == [[0], [4]]  # each process holds its own half
    for name in OPTIMIZERS:
        with np.load(tmp_path / f"{name}-reference.npz") as npz:
            want_loss, want_norm, lr = npz["loss"], npz["grad_norm"], float(npz["lr"])
            want_params, want_state = _leaves(npz)
        assert want_params and want_state
        for pid in (0, 1):
            with np.load(tmp_path / f"{name}-{pid}.npz") as npz:
                np.testing.assert_allclose(npz["loss"], want_loss, rtol=1e-6, err_msg=f"{name} loss")
                np.testing.assert_allclose(npz["grad_norm"], want_norm, rtol=1e-5, err_msg=f"{name} grad norm")
                params, state = _leaves(npz)
            assert len(params) == len(want_params) and len(state) == len(want_state)
            for kind, gots, wants, atol in (("param", params, want_params, lambda w: 1e-2 * lr),
                                            ("optimizer state", state, want_state, lambda w: 1e-5 * np.abs(w).max())):
                for i, (g, w) in enumerate(zip(gots, wants)):
                    assert g.shape == w.shape and g.dtype == w.dtype, (name, kind, i)
                    np.testing.assert_allclose(g, w, rtol=1e-5, atol=atol(w), err_msg=f"{name} {kind} leaf {i}")


# ---------------------------------------------------------------- the training loop over two processes

# Roles "0"/"1": `scaling train` as process 0 or 1 of a two-process job, one CPU device each, run.mesh.fsdp=2;
# role "reference": a lone process with two CPU devices and the same mesh; role "single": a lone process on
# one device (no mesh), resuming whatever OUT holds. argv: coordinator, overrides, ROLE:OUT.
TRAIN_CHILD = f"""
import faulthandler, json, sys
faulthandler.dump_traceback_later({DEADLINE_S - 20}, exit=True)
import jax
coordinator, overrides, (role, out) = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3].split(":", 1)
jax.config.update("jax_num_cpu_devices", 2 if role == "reference" else 1)
from scaling.cli import main
sets = [a for o in overrides + ([] if role == "single" else ["run.mesh.fsdp=2"]) for a in ("--set", o)]
job = ["--coordinator", coordinator, "--num-processes", "2", "--process-id", role] if role in "01" else []
code = main(["train", *sets, *job, "--quiet", "--out", out])
print(json.dumps({{"code": code, "processes": jax.process_count(), "devices": jax.device_count()}}))
"""
TRAIN = TINY + ["model.depth=1", "run.steps=8", "optim.name=muon", "run.norms_every=2"]


def _train_pair(tmp_path: Path, outs: list[tuple[str, Path]]) -> list[dict]:
    """One `scaling train` per (role, OUT), all at once (roles "0" and "1" form one job)."""
    roles = [f"{role}:{out}" for role, out in outs]
    return run_processes(TRAIN_CHILD, [f"127.0.0.1:{free_port()}", json.dumps(TRAIN)], roles, [{}] * len(roles),
                         tmp_path)


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _summary(out: Path) -> dict:
    timeless = ("wall_time_s",)
    return {k: v for k, v in json.loads((out / "summary.json").read_text()).items() if k not in timeless}


def test_scaling_train_over_two_processes_matches_one_process_and_resumes(tmp_path):
    """`scaling train` as a two-process job (one device each, run.mesh.fsdp=2: parameters and optimizer
    state split across the processes, the batch too; Muon orthogonalising each whole matrix on its owner;
    norms logged) writes the same metrics and summary as one process on a two-device mesh; only process 0
    writes them (a second writer would double the rows), both write their checkpoint shards. Losing the last checkpoint
    and the summary, the job resumes from step 4 and rewrites metrics.jsonl bit for bit; the same
    checkpoint restores in a lone one-device process (a new mesh and process count) and finishes close."""
    job, ref, single = tmp_path / "job", tmp_path / "reference", tmp_path / "single"
    first = _train_pair(tmp_path, [("0", job), ("1", job), ("reference", ref)])
    assert [(p["code"], p["processes"], p["devices"]) for p in first] == [(0, 2, 2), (0, 2, 2), (0, 1, 2)]
    rows, want = _rows(job), _rows(ref)
    assert [r["step"] for r in rows] == [r["step"] for r in want] and rows[-1]["step"] == 8
    assert "val_loss" in rows[-1] and any("/" in k for k in rows[-1]), rows[-1]  # evaluated, norms logged
    for got, exp in zip(rows, want):
        assert got.keys() == exp.keys()
        for k, v in exp.items():
            np.testing.assert_allclose(got[k], v, rtol=1e-5, err_msg=f"step {exp['step']} {k}")
    assert _summary(job)["status"] == "done"
    assert sorted(p.name for p in (job / "ckpt").iterdir() if p.name.isdigit()) == ["4", "8"]
    assert json.loads((job / "ckpt" / "digests.json").read_text()).keys() == {"4", "8"}
    assert {p.name for p in (job / "ckpt" / "8" / "default").glob("ocdbt.process_*")} == {"ocdbt.process_0",
                                                                                           "ocdbt.process_1"}

    before = (job / "metrics.jsonl").read_bytes()
    summary = _summary(job)
    shutil.copytree(job, single)
    for out in (job, single):  # a crash after step 8 was logged, before its checkpoint and the summary
        shutil.rmtree(out / "ckpt" / "8")
        (out / "summary.json").unlink()
    again = _train_pair(tmp_path, [("0", job), ("1", job), ("single", single)])
    assert [p["code"] for p in again] == [0, 0, 0]
    assert not any((out / "quarantine").exists() for out in (job, single))  # step 4 was read, not set aside
    assert (job / "metrics.jsonl").read_bytes() == before  # resumed from step 4: the same bytes
    assert _summary(job) == summary
    for got, exp in zip(_rows(single), _rows(job)):
        for k, v in exp.items():
            np.testing.assert_allclose(got[k], v, rtol=1e-4, err_msg=f"one device, step {exp['step']} {k}")


# ---------------------------------------------------------------- SLURM's variables, for real and mocked

SLURM_CHILD = f"""
import faulthandler, json, sys
faulthandler.dump_traceback_later({DEADLINE_S - 20}, exit=True)
import jax
jax.config.update("jax_num_cpu_devices", 1)
import numpy as np
from jax.experimental import multihost_utils
from scaling import distributed
processes = distributed.initialize(distributed.from_slurm(), timeout_s=60)
ids = multihost_utils.process_allgather(np.int32(jax.process_index() + 10))
again = distributed.initialize(processes) is processes  # the same layout again: nothing to do
try:
    distributed.initialize(distributed.Processes(3, 0, "localhost:1", None, "arguments"))
    other = "accepted"
except distributed.DistributedError as e:
    other = str(e)
print(json.dumps({{"source": processes.source, "process_id": jax.process_index(), "gathered": ids.tolist(),
                  "primary": distributed.is_primary(), "again": again, "other": other,
                  "describe": distributed.describe()}}))
"""


def slurm_env(procid: int, ntasks: int = 2, nodes: int = 2, localid: int = 0, **extra) -> dict:
    return {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": str(ntasks),
            "SLURM_PROCID": str(procid), "SLURM_LOCALID": str(localid), "SLURM_STEP_NUM_NODES": str(nodes), **extra}


def test_two_processes_join_from_fake_slurm_variables(tmp_path):
    """jax's SLURM detection finds the coordinator (first host of the step, JAX_COORDINATOR_PORT) from the
    same variables srun sets; the processes then all-gather across each other."""
    port = str(free_port())
    envs = [slurm_env(i, JAX_COORDINATOR_PORT=port) for i in range(2)]
    procs = run_processes(SLURM_CHILD, [], ["0", "1"], envs, tmp_path)
    assert [p["process_id"] for p in procs] == [0, 1]
    assert all(p["source"] == "slurm" and p["gathered"] == [10, 11] for p in procs)
    assert [p["primary"] for p in procs] == [True, False]
    assert all(p["again"] and "already initialised as process" in p["other"] for p in procs)
    assert procs[1]["describe"] == "jax.distributed: process 1 of 2, 1 local of 2 cpu devices"


@pytest.fixture
def recorded(monkeypatch):
    """jax.distributed.initialize replaced by a recorder that fails like an unreachable coordinator."""
    calls = []

    def fake(**kwargs):
        calls.append(kwargs)
        raise RuntimeError("DEADLINE_EXCEEDED: Barrier timed out\nmore detail")

    monkeypatch.setattr(jax.distributed, "initialize", fake)
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    return calls


@pytest.mark.parametrize("env, want, jax_ids", [
    (slurm_env(1), distributed.Processes(2, 1, None, None, "slurm"), []),  # one task per node: all its devices
    (slurm_env(2, ntasks=4, nodes=1, localid=2), distributed.Processes(4, 2, None, (2,), "slurm"), [2]),
    (slurm_env(0, JAX_COORDINATOR_ADDRESS="node7:1234"), distributed.Processes(2, 0, "node7:1234", None, "slurm"), []),
])
def test_slurm_variables_give_the_initialize_arguments(recorded, env, want, jax_ids):
    p = distributed.from_slurm(env)
    assert p == want
    with pytest.raises(distributed.DistributedError, match="could not join .* DEADLINE_EXCEEDED: Barrier timed out$"):
        distributed.initialize(p, timeout_s=7)
    assert recorded == [{"coordinator_address": want.coordinator, "num_processes": want.num_processes,
                         "process_id": want.process_id, "local_device_ids": jax_ids, "initialization_timeout": 7,
                         "cluster_detection_method": "slurm"}]


def test_one_process_is_a_no_op(recorded):
    for p in (distributed.from_slurm(slurm_env(0, ntasks=1, nodes=1)), distributed.from_environment({}),
              distributed.from_arguments(), distributed.from_arguments(num_processes=1)):
        assert not p.multi and distributed.initialize(p) is p
    assert recorded == []


def test_explicit_arguments_deactivate_cluster_detection(recorded):
    p = distributed.from_arguments("10.0.0.1:1234", 4, 3, [0, 1])
    with pytest.raises(distributed.DistributedError):
        distributed.initialize(p)
    assert recorded == [{"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3,
                         "local_device_ids": [0, 1], "initialization_timeout": 300,
                         "cluster_detection_method": "deactivate"}]
    env = {"JAX_COORDINATOR_ADDRESS": "h:9", "JAX_NUM_PROCESSES": "3", "JAX_PROCESS_ID": "2"}
    assert distributed.from_environment(env) == distributed.Processes(3, 2, "h:9", None, "environment")


@pytest.mark.parametrize("env, name", [
    ({**slurm_env(0), "SLURM_PROCID": "2"}, "SLURM_PROCID"),
    ({k: v for k, v in slurm_env(0).items() if k != "SLURM_STEP_NODELIST"}, "SLURM_STEP_NODELIST"),
    ({**slurm_env(0), "SLURM_NTASKS": "two"}, "SLURM_NTASKS"),
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}, "JAX_COORDINATOR_ADDRESS"),
])
def test_bad_variables_are_named(env, name):
    read = distributed.from_slurm if "SLURM_JOB_ID" in env else distributed.from_environment
    with pytest.raises(ConfigError, match=name):
        read(env)


# ---------------------------------------------------------------- the command line

@pytest.fixture
def no_layout_env(monkeypatch):
    for var in SLURM_VARS + LAYOUT_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize("flags, named", [
    (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"], "--process-id"),
    (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "-1"], "--process-id"),
    (["--coordinator", "h:1", "--num-processes", "0", "--process-id", "0"], "--num-processes"),
    (["--num-processes", "2", "--process-id", "0"], "--coordinator"),
    (["--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"], "--coordinator"),
    (["--coordinator", "h:99999", "--num-processes", "2", "--process-id", "0"], "--coordinator"),
    (["--coordinator", "h:1", "--process-id", "1"], "--num-processes"),
    (["--coordinator", "h:1", "--num-processes", "2"], "--process-id"),
    (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "0", "--local-device-ids", "0,x"],
     "--local-device-ids"),
    (["--slurm", "--num-processes", "2"], "--num-processes"),
    (["--slurm"], "SLURM_JOB_ID"),
])
def test_bad_flags_exit_2_naming_the_flag(tmp_path, capsys, no_layout_env, flags, named):
    out = tmp_path / "run"
    assert main(["train", *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert named in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_the_flags_reach_initialize_before_anything_is_written(tmp_path, capsys, no_layout_env, recorded):
    out = tmp_path / "run"
    sets = [a for o in TINY + ["run.mesh.data=2"] for a in ("--set", o)]
    code = main(["train", *sets, "--coordinator", "node0:4321", "--num-processes", "2", "--process-id", "1",
                 "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "node0:4321" in err and "process 1 of 2" in err, err
    assert recorded[0]["coordinator_address"] == "node0:4321" and recorded[0]["process_id"] == 1
    assert not out.exists()


def test_several_processes_without_a_mesh_exit_2(tmp_path, capsys, no_layout_env, recorded):
    """Without run.mesh every process would train (and write) its own copy of the run."""
    out = tmp_path / "run"
    sets = [a for o in TINY for a in ("--set", o)]
    assert main(["train", *sets, "--coordinator", "h:1", "--num-processes", "2", "--process-id", "0",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "run.mesh" in err and len(err.splitlines()) == 1
    assert recorded == [] and not out.exists()


def test_a_run_directory_the_processes_do_not_share_exits_2_on_every_process(tmp_path):
    """Each process given its own OUT (as on hosts without a shared filesystem): all of them stop with
    one message naming the directory, none waits in a collective, nothing is trained."""
    outs = [tmp_path / "host0" / "run", tmp_path / "host1" / "run"]
    procs = _train_pair(tmp_path, [("0", outs[0]), ("1", outs[1])])
    assert [p["code"] for p in procs] == [2, 2]
    log = (tmp_path / "process-1.log").read_text()
    assert f"{outs[1]}: process(es) [1] do not see the config.json process 0 wrote" in log, log[-2000:]
    assert not (outs[0] / "metrics.jsonl").exists() and not (outs[1] / "config.json").exists()


def test_a_mesh_short_of_the_jobs_devices_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    """In a job of several processes the run spans every device: a smaller mesh would leave a process
    without a slice of anything it is asked to compute."""
    from scaling.config import load_config
    from scaling.train import train

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "device_count", lambda: 4)
    with pytest.raises(ConfigError, match=r"run\.mesh=.* has 2 devices; a job of 2 processes trains one run over "
                                          r"all 4"):
        train(load_config(overrides=TINY + ["run.mesh.data=2"]), tmp_path / "r")
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- the submitit multi-host job

def test_multihost_job_parameters(tmp_path, monkeypatch):
    """One job of N nodes with one task each on SLURM (the sbatch file says so); N tasks on one machine
    with the local executor; the array's own parameters are refused by name."""
    from sweeps.executors.slurm import multihost_executor, multihost_parameters

    assert multihost_parameters(4, {"slurm_partition": "gpu", "gpus_per_node": 8}) == {
        "timeout_min": 60, "slurm_partition": "gpu", "gpus_per_node": 8, "nodes": 4, "tasks_per_node": 1}
    assert multihost_parameters(3, {"slurm_partition": "gpu"}, cluster="local") == {"timeout_min": 60,
                                                                                      "tasks_per_node": 3}
    for bad in ({"tasks_per_node": 8}, {"nodes": 2}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            multihost_parameters(4, bad)
    with pytest.raises(ConfigError, match="nodes=0"):
        multihost_parameters(0)
    fake_bin = tmp_path / "bin"  # submitit's SLURM executor wants srun on PATH to exist; nothing is submitted
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    executor = multihost_executor(4, tmp_path / "logs", {"slurm_partition": "gpu", "gpus_per_node": 8}, cluster="slurm")
    sbatch = executor._executor._make_submission_file_text("python -m job", "uid")
    for line in ("#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --partition=gpu"):
        assert line in sbatch.splitlines(), sbatch


def test_job_processes_from_the_job_environment():
    from sweeps.executors.slurm import coordinator_port, job_processes

    env = types.SimpleNamespace(num_tasks=4, num_nodes=4, hostnames=["gpu017", "gpu018", "gpu019", "gpu020"],
                                raw_job_id="123456", global_rank=2, local_rank=0)
    assert job_processes(env) == distributed.Processes(4, 2, "gpu017:62016", None, "arguments")  # 61440 + 123456 % 4096
    assert coordinator_port("123456") == 61440 + 123456 % 4096
    one_node = types.SimpleNamespace(**{**vars(env), "num_nodes": 1, "hostnames": ["gpu017"], "local_rank": 2})
    assert job_processes(one_node, port=5000) == distributed.Processes(4, 2, "gpu017:5000", (2,), "arguments")


def test_a_run_over_two_hosts_through_submitits_local_executor(tmp_path, monkeypatch):
    """submit_run with cluster="local": two tasks, each joins jax.distributed from submitit's job
    environment, then both train the run as one (run.mesh.fsdp=2 over their two devices): one set of files,
    checkpoint shards from each, and the same summary returned by both tasks."""
    from scaling.config import load_config
    from sweeps.executors.slurm import submit_run

    for var in SLURM_VARS + LAYOUT_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("JAX_NUM_CPU_DEVICES", "1")
    out = tmp_path / "run"
    cfg = load_config(overrides=TRAIN + ["run.steps=4", "run.mesh.fsdp=2"])
    job = submit_run(cfg, out, nodes=2, parameters={"timeout_min": 2}, cluster="local", port=free_port())
    try:
        results = job.results()
    finally:
        if not job.done():
            job.cancel()
    written = json.loads((out / "summary.json").read_text())
    assert written["status"] == "done" and written["steps"] == 4, job.stderr()
    assert [{k: v for k, v in r.items() if k != "wall_time_s"} for r in results] == \
        [{k: v for k, v in written.items() if k != "wall_time_s"}] * 2
    steps = [r["step"] for r in _rows(out)]
    assert steps == sorted(set(steps)) and steps[-1] == 4  # one writer
    assert (out / "ckpt" / "4" / "default" / "ocdbt.process_1").is_dir()
