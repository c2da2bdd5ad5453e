"""Communication volume of one sharded train step, per optimizer: bytes per device that the compiled
step's collectives move (scaling.sharding.collective_bytes over the HLO of Program.compiled().step),
for AdamW, Muon and Scion on the same model and mesh. Fake CPU devices: the HLO is what XLA's SPMD
partitioner emits for that mesh, whatever the backend.

    .venv/bin/python benchmarks/comm_volume.py [--devices 8] [--width 128] [--depth 4]

The step's HLO holds both branches of the norm-logging cond (Program.step_fn), so the numbers include
the collectives of the norm metrics (the same for every optimizer, as are the forward and backward);
the difference between an optimizer's row and AdamW's is what its update adds.
"""

from __future__ import annotations

import argparse
import os


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={args.devices}")
    import jax
    import jax.numpy as jnp
    import numpy as np

    from scaling import models
    from scaling.config import load_config
    from scaling.program import Program
    from scaling.sharding import collective_bytes

    half = args.devices // 2
    meshes = {f"data={args.devices}": [f"run.mesh.data={args.devices}"],
              f"fsdp={args.devices}": [f"run.mesh.fsdp={args.devices}"],
              f"data=2 x fsdp={half}": ["run.mesh.data=2", f"run.mesh.fsdp={half}"]}
    base = [f"model.width={args.width}", f"model.depth={args.depth}", f"model.context={args.context}",
            f"run.batch_size={args.batch}"]
    n_params = None
    print(f"| mesh | optimizer | all-gather | all-reduce | all-to-all | reduce-scatter | collective-permute "
          f"| total MiB/device |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for mesh_name, mesh in meshes.items():
        for opt in ("adamw", "muon", "scion"):
            cfg = load_config(overrides=base + mesh + [f"optim.name={opt}"])
            program = Program(cfg)
            n_params = n_params or models.count_params(program.specs)["n_params"]
            state = program.init_state(jax.random.PRNGKey(0), cfg)
            tokens = np.zeros((args.batch, args.context + 1), np.int32)
            step = program.compiled().step
            with program.layout.activate():
                lowered = step.jitted.lower(state, tokens, jnp.int32(0), False, program.hyper_values(cfg))
                text = lowered.compile().as_text()
            b = collective_bytes(text)
            mib = {k: v / 2**20 for k, v in b.items()}
            print(f"| {mesh_name} | {opt} | " + " | ".join(f"{mib[k]:.2f}" for k in b)
                  + f" | {sum(mib.values()):.2f} |", flush=True)
    print(f"\nparameters: {n_params:,} ({n_params * 4 / 2**20:.2f} MiB float32)")


if __name__ == "__main__":
    main()
