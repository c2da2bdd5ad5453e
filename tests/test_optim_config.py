"""Optimizer configs: every name builds, and invalid hyperparameters give one ConfigError naming the field."""

import dataclasses

import pytest

from scaling.config import OPTIMIZERS, Config, ConfigError, from_dict, load_config, to_dict
from scaling.optim import BUILDERS, REGISTRY, OptimConfig, build_optimizer, optim_config
from scaling.testing import toy_specs
from scaling.specs import tree_map_specs


def test_every_optimizer_name_has_a_builder():
    assert set(BUILDERS) == set(OPTIMIZERS)
    specs = toy_specs(d=4, layers=1, vocab=8, d_ff=8)
    ones = tree_map_specs(lambda s: 1.0, specs)
    for name in OPTIMIZERS:
        cfg = load_config(overrides=[f"optim.name={name}"]).optim
        tx = build_optimizer(cfg, specs, ones, lambda t: 1.0)
        assert callable(tx.init) and callable(tx.update)


@pytest.mark.parametrize("overrides,message", [
    (["optim.name=adam"], "optim.name='adam' is not one of adamw, sgd, lion, tiger, muon, scion, manifold_muon"),
    (["optim.b1=1.2"], "optim.b1=1.2 must be in [0, 1)"),
    (["optim.b2=-0.1"], "optim.b2=-0.1 must be in [0, 1)"),
    (["optim.name=muon", "optim.momentum=1.0"], "optim.momentum=1.0 must be in [0, 1)"),
    (["optim.lr=-0.001"], "optim.lr=-0.001 must be >= 0"),
    (["optim.name=muon", "optim.fallback_lr=-1"], "optim.fallback_lr=-1.0 must be >= 0"),
    (["optim.name=scion", "optim.alpha=0"], "optim.alpha=0.0 must be in (0, 1]"),
    (["optim.norms.hidden=frobenius"], "optim.norms.hidden='frobenius' is not one of"),
    (["optim.norms.hidden=bias_rms"], "optim.norms.hidden='bias_rms' must be a matrix norm"),
    (["optim.norms.vector=spectral"], "optim.norms.vector='spectral' must be one of bias_rms, sign"),
    (["optim.radius.output=0"], "optim.radius.output=0.0 must be positive"),
    (["optim.name=muon", "optim.ns_coeffs=dion"], "optim.ns_coeffs='dion' must be one of muon, polar_express"),
    (["optim.name=scion", "optim.ns_method=svd"], "optim.ns_method='svd' must be one of direct, gram, auto"),
    (["optim.name=muon", "optim.shape_scale=max"], "optim.shape_scale='max' must be one of keller, moonlight, spectral"),
    (["optim.name=lion", "optim.embedding_fallback=tied"], "optim.embedding_fallback='tied' must be one of adamw, lazy, none"),
    (["optim.name=manifold_muon", "optim.dual_steps=0"], "optim.dual_steps=0 must be positive"),
    (["optim.name=scion", "optim.b1=0.5"], "optim.b1=0.5 has no effect with optim.name='scion' (its fields: "),
    (["optim.momentum=0.9"], "optim.momentum=0.9 has no effect with optim.name='adamw'"),
    (["optim.name=lion", "optim.embedding_fallback=none", "optim.eps=1e-6"],
     "optim.eps=1e-06 has no effect with optim.embedding_fallback='none'"),
    (["optim.norms.hidden=colnorm"], "optim.norms.hidden='colnorm' has no effect with optim.name='adamw' and "
     "param.kind='sp'"),
    (["optim.decay_roles=hidden,bias"], "optim.decay_roles contains unknown role 'bias'"),
    (["optim.name=scion", "optim.constrained=true", "optim.weight_decay=0.1"],
     "optim.weight_decay=0.1 must be 0 with optim.constrained=true"),
    (["optim.momentun=0.9"], "unknown config field optim.momentun"),
])
def test_invalid_optimizer_config_names_the_field(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=overrides)
    assert message in str(err.value)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_builders_accept_traced_hyperparameters(name):
    """The train loop feeds an optimizer's declared scalars (its registry row) as traced arrays so an lr sweep
    compiles once: every builder must trace with them and give the same update as with Python floats, zeros
    included (no builder branches on a value)."""
    import jax
    import numpy as np

    from scaling.optim import hyperparameters
    from scaling.optim.common import get_field
    from scaling.testing import toy_grads, toy_params

    specs = toy_specs(d=4, layers=1, vocab=8, d_ff=8)
    params, grads = toy_params(specs, seed=0), toy_grads(toy_params(specs, seed=0), seed=1)
    mults = tree_map_specs(lambda s: 0.5, specs)
    own = set(REGISTRY[name].config.fields()) - ({"radius"} if name != "scion" else set())
    for wanted in ({"weight_decay": 0.1, "fallback_lr": 0.01, "radius.hidden": 2, "dual_steps": 3},
                   {"weight_decay": 0.0, "fallback_lr": 0.0, "b1": 0.0, "dual_steps": 3}):
        cfg = load_config(overrides=[f"optim.name={name}"] + [f"optim.{k}={v}" for k, v in wanted.items()
                                                              if k.split(".")[0] in own]).optim
        names = hyperparameters(cfg)
        assert {n.split(".")[0] for n in names} <= set(own)

        def update(hp):
            tx = build_optimizer(cfg, specs, mults, lambda t: 1.0, hp)
            return tx.update(grads, tx.init(params), params)[0]

        want = jax.jit(lambda: update(None))()
        got = jax.jit(update)({n: np.float32(get_field(cfg, n)) for n in names})
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, want)


# A non-default value per optimizer field (with weight decay on and lr multipliers != 1, so decay fields matter).
OTHER_VALUE = {
    "lr": 0.02, "b1": 0.5, "b2": 0.5, "eps": 1e-3, "weight_decay": 0.2, "decay_roles": "hidden",
    "wd_coupling": "leaf", "momentum": 0.5, "nesterov": False, "ns_steps": 3, "ns_coeffs": "polar_express",
    "ns_dtype": "bfloat16", "ns_method": "gram", "shape_scale": "spectral", "fallback_lr": 0.05,
    "constrained": True, "alpha": 0.5, "norms.hidden": "colnorm", "radius.output": 2.0,
    "embedding_fallback": "lazy", "dual_steps": 2,
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_field_changes_the_update_or_is_refused(name):
    """No silently ignored option: for every optimizer, setting any optim field to another value either
    changes the first two updates or raises a ConfigError naming the field (e.g. optim.nesterov for Scion,
    whose momentum is gradient averaging)."""
    import jax
    import numpy as np

    from scaling.testing import toy_grads, toy_params

    specs = toy_specs(d=4, layers=1, vocab=8, d_ff=8)
    params = toy_params(specs, seed=0)
    grads = toy_grads(params, seed=1, steps=2)
    mults = tree_map_specs(lambda s: {"hidden": 0.5, "output": 2.0}.get(s.role, 1.0), specs)
    every_field = {f for row in REGISTRY.values() for f in row.config.fields()}
    assert every_field - {"name"} == {k.split(".")[0] for k in OTHER_VALUE}
    reads = set(REGISTRY[name].config.fields()) - ({"norms", "radius"} if name != "scion" else set())

    def updates(overrides):
        cfg = load_config(overrides=[f"optim.name={name}", "optim.lr=0.01", *overrides]).optim
        tx = build_optimizer(cfg, specs, mults, lambda t: 1.0)

        @jax.jit  # one compilation per config: eager, every while_loop (manifold Muon's) compiled on its own
        def two_updates():
            state, out = tx.init(params), []
            for i in range(2):
                u, state = tx.update(jax.tree_util.tree_map(lambda g: g[i], grads), state, params)
                out.append(u)
            return out

        return np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(two_updates())])

    base_wd = ["optim.weight_decay=0.1"]
    reference = updates(base_wd)
    for field, value in OTHER_VALUE.items():
        if field == "lr":
            continue
        extra = [] if field in ("weight_decay", "constrained") else base_wd
        try:
            other = updates([*extra, f"optim.{field}={value}"])
        except ConfigError as e:
            assert f"optim.{field}" in str(e)
            assert field.split(".")[0] not in reads, f"{name} refuses {field}, which it reads"
            continue
        assert not np.array_equal(other, reference), f"optim.{field} is accepted by {name} but changes nothing"



def test_optim_section_is_one_class_per_optimizer():
    """optim.name picks the class; to_dict writes that class's fields only, and the dict reads back to an
    equal config: the dotted keys users write (optim.lr, optim.momentum, ...) are the class's fields."""
    for name, row in REGISTRY.items():
        cfg = load_config(overrides=[f"optim.name={name}"])
        assert type(cfg.optim) is row.config and issubclass(row.config, OptimConfig)
        assert set(to_dict(cfg)["optim"]) == set(row.config.fields())
        assert from_dict(Config, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="needs its own config class MuonConfig"):
        dataclasses.replace(optim_config("adamw"), name="muon")


def test_a_config_spelling_out_every_field_still_loads():
    """config.json files written before the split held every optimizer's fields at their defaults: they
    load (the other optimizers' fields are dropped), and a non-default one is refused by name."""
    flat = {f.name: f.default for row in REGISTRY.values() for f in dataclasses.fields(row.config)}
    flat = {k: to_dict(v) if dataclasses.is_dataclass(v) else v for k, v in flat.items()}
    for name in REGISTRY:
        cfg = from_dict(Config, {"optim": {**flat, "name": name, "lr": 0.01}})
        assert cfg.optim == optim_config(name, lr=0.01)
    with pytest.raises(ConfigError, match=r"optim.dual_steps=3 has no effect with optim.name='muon'"):
        from_dict(Config, {"optim": {**flat, "name": "muon", "dual_steps": 3}})


def test_unknown_optimizer_field_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown config field optim.momentun \(known: .*momentum"):
        load_config(overrides=["optim.name=muon", "optim.momentun=0.9"])


@pytest.mark.parametrize("name", ["adamw", "sgd", "lion", "tiger", "muon", "scion"])
def test_a_zero_weight_decay_is_static_and_skips_the_decay_link(name):
    """A run without weight decay compiles a program whose update never reads the parameters' values
    (the old traced zero computed updates + 0 * params: a pass over every parameter, and NaN for an
    infinite one); the optimizer state keeps one layout for every decay, so checkpoints stay compatible."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from scaling import hyper
    from scaling.optim import hyperparameters
    from scaling.optim.common import get_field
    from scaling.testing import toy_grads, toy_params

    specs = toy_specs(d=4, layers=1, vocab=8, d_ff=8)
    params, grads = toy_params(specs, seed=0), toy_grads(toy_params(specs, seed=0), seed=1)
    inf_params = jax.tree_util.tree_map(lambda p: jnp.full_like(p, jnp.inf), params)
    mults = tree_map_specs(lambda s: 1.0, specs)
    layouts = []
    for wd in (0.0, 0.1):
        cfg = load_config(overrides=[f"optim.name={name}", f"optim.weight_decay={wd}"])
        program_optim = hyper.program_config(cfg).optim
        hp = {n: jnp.float32(get_field(cfg.optim, n)) for n in hyperparameters(cfg.optim)}
        tx = build_optimizer(program_optim, specs, mults, lambda t: 1.0, hp)
        state = tx.init(params)
        layouts.append(jax.tree_util.tree_structure(state))
        updates = jax.jit(lambda s, p: tx.update(grads, s, p)[0])(state, inf_params)
        finite = all(bool(np.isfinite(u).all()) for u in jax.tree_util.tree_leaves(updates))
        assert finite == (wd == 0), (name, wd)  # decayed: inf params give inf/nan updates
    assert layouts[0] == layouts[1]
