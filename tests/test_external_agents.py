"""Agents trained elsewhere (docs/FORMATS.md section 6): a Stable-Baselines3 zip and CleanRL state_dicts load into the
pixel agent's evaluation and into the probe, and give the same outputs there as in their own library.

The SB3 artifacts are real: untrained PPO / A2C / DQN models built with SB3's own API on the Atari id and written by
`model.save`. The CleanRL files are state_dicts of modules built here with the layer layout documented in CleanRL's
`ppo_atari.py` (network.0/2/4/7, actor, critic) and `dqn_atari.py` (network.0/2/4/7/9), saved as CleanRL saves them.
stable-baselines3 is a test-only dependency (requirements-test.txt); without it the SB3 tests skip and say so.
"""
import datetime
import gzip
import importlib.util
import json
import zipfile

import ale_py
import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import ROOT, assert_clean_error, run_script

ENV = "BreakoutNoFrameskip-v4"
PIXEL, PROBE = "ppo_pixel_breakout.py", "probe_function_vectors.py"
EVAL = ["--eval-episodes", "1", "--eval-num-envs", "1", "--eval-max-frames", "2000", "--torch-threads", "1"]
PROBE_INPUTS = ["--ram-checkpoint", ROOT / "models" / "breakout_ram_ppo_500k.pt", "--ram-vars", ROOT / "ram_vars" / f"{ENV}.json"]
PROBE_TINY = ["--num-base-states", "6", "--samples-per-var", "8", "--top-k", "4", "--rollout-steps", "60",
              "--importance-steps", "64", "--causal-pairs", "16", "--random-directions", "3", "--torch-threads", "1"]
gym.register_envs(ale_py)
NO_SB3 = "stable-baselines3 is not installed (test-only: pip install --no-deps -r requirements-test.txt)"


def load_script(name):
    spec = importlib.util.spec_from_file_location(name[:-3], ROOT / name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def scripts():
    return {"pixel": load_script(PIXEL), "probe": load_script(PROBE)}


def our_agent(scripts, loader, path):
    """The Agent that `loader`'s script builds from `path` (the eval path or the probe's), and the loaded dict."""
    if loader == "pixel":
        ckpt = scripts["pixel"].load_checkpoint(str(path))
        agent = scripts["pixel"].Agent(**ckpt["model_kwargs"])
        agent.load_state_dict(ckpt["state_dict"])
        return agent.eval(), ckpt
    ckpt = scripts["probe"].load_checkpoint(str(path), "pixel", "--pixel-checkpoint")
    return ckpt["model"], ckpt


def observations(n_envs=2, steps=20, seed=0):
    """Real frame stacks of SB3's Atari pipeline, (N, 4, 84, 84) uint8, and 4 stacks of uniform noise."""
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack, VecTransposeImage
    env = VecTransposeImage(VecFrameStack(make_atari_env(ENV, n_envs=n_envs, seed=seed), n_stack=4))
    rng = np.random.default_rng(seed)
    obs = [env.reset()]
    for _ in range(steps):
        obs.append(env.step(rng.integers(4, size=n_envs))[0])
    noise = rng.integers(0, 256, size=(4, 4, 84, 84), dtype=np.uint8)
    return env, np.concatenate(obs + [noise])


@pytest.fixture(scope="module")
def sb3(tmp_path_factory):
    """PPO, A2C and DQN with the CnnPolicy on Breakout (untrained, built and saved by SB3), and observations."""
    pytest.importorskip("stable_baselines3", reason=NO_SB3)
    from stable_baselines3 import A2C, DQN, PPO
    d = tmp_path_factory.mktemp("sb3")
    env, obs = observations()
    models = {}
    for name, cls, kwargs in (("ppo", PPO, {}), ("a2c", A2C, {}), ("dqn", DQN, {"buffer_size": 64})):
        models[name] = cls("CnnPolicy", env, seed=0, device="cpu", **kwargs)
        models[name].save(d / f"{name}-{ENV}.zip")
    env.close()
    return {"dir": d, "models": models, "obs": obs, "zip": {n: d / f"{n}-{ENV}.zip" for n in models}}


@pytest.mark.parametrize("loader", ["pixel", "probe"])
@pytest.mark.parametrize("algo", ["ppo", "a2c"])
def test_sb3_actor_critic_zip_gives_sb3s_logits_and_value(sb3, scripts, algo, loader):
    model, obs = sb3["models"][algo], sb3["obs"]
    agent, ckpt = our_agent(scripts, loader, sb3["zip"][algo])
    assert ckpt["source"]["algorithm"] == algo.upper() and ckpt["source"]["critic"] and ckpt["source"]["actor"] == "logits"
    assert ckpt["source"]["layer_map"]["network.conv1"] == "features_extractor.cnn.0"
    x = torch.as_tensor(obs)
    with torch.no_grad():
        logits = agent.actor(agent.hidden(x))
        _, logprob, _, value = agent.get_action_and_value(x, torch.zeros(len(x), dtype=torch.long))
        theirs = model.policy.obs_to_tensor(obs)[0]
        sb3_logp = model.policy.get_distribution(theirs).distribution.logits
        sb3_value = model.policy.predict_values(theirs)
    assert value.std() > 1e-3  # real outputs that differ between observations, not a constant
    assert torch.allclose(torch.log_softmax(logits, -1), sb3_logp, rtol=0, atol=1e-6), (torch.log_softmax(logits, -1) - sb3_logp).abs().max()
    assert torch.allclose(value, sb3_value, rtol=0, atol=1e-5), (value - sb3_value).abs().max()
    assert torch.allclose(logprob, sb3_logp[:, 0], rtol=0, atol=1e-6)
    greedy, _ = model.predict(obs, deterministic=True)
    assert np.array_equal(greedy, logits.argmax(1).numpy())


@pytest.mark.parametrize("loader", ["pixel", "probe"])
def test_sb3_dqn_zip_gives_sb3s_q_values_and_no_critic(sb3, scripts, loader):
    model, obs = sb3["models"]["dqn"], sb3["obs"]
    agent, ckpt = our_agent(scripts, loader, sb3["zip"]["dqn"])
    assert ckpt["source"]["actor"] == "Q-values" and not ckpt["source"]["critic"]
    x = torch.as_tensor(obs)
    with torch.no_grad():
        q = agent.actor(agent.hidden(x))
        sb3_q = model.q_net(model.policy.obs_to_tensor(obs)[0])
        value = agent.get_value(x)
    assert q.std() > 1e-3
    assert torch.allclose(q, sb3_q, rtol=0, atol=1e-5), (q - sb3_q).abs().max()
    assert torch.count_nonzero(value) == 0  # "no critic": the critic layer is all zeros
    greedy, _ = model.predict(obs, deterministic=True)
    assert np.array_equal(greedy, q.argmax(1).numpy())


def cleanrl_network(n_actions, head: bool):
    """The Nature CNN as CleanRL's scripts lay it out: one nn.Sequential `network` (indices 0, 2, 4 conv, 7 fc, 9 the
    DQN's Q-value head when `head`)."""
    layers = [nn.Conv2d(4, 32, 8, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
              nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(), nn.Flatten(), nn.Linear(64 * 7 * 7, 512), nn.ReLU()]
    return nn.Sequential(*layers, *([nn.Linear(512, n_actions)] if head else []))


@pytest.fixture(scope="module")
def cleanrl(tmp_path_factory):
    """A ppo_atari.py Agent and a dqn_atari.py QNetwork state_dict (PyTorch's default init, not ours), as CleanRL saves
    them (`torch.save(model.state_dict(), f"{exp_name}.cleanrl_model")`)."""
    d = tmp_path_factory.mktemp("cleanrl")
    torch.manual_seed(3)
    ppo = nn.Module()
    ppo.network, ppo.actor, ppo.critic = cleanrl_network(4, head=False), nn.Linear(512, 4), nn.Linear(512, 1)
    dqn = nn.Module()
    dqn.network = cleanrl_network(4, head=True)
    for name, m in (("ppo_atari", ppo), ("dqn_atari", dqn)):
        torch.save(m.state_dict(), d / f"{name}.cleanrl_model")
    x = torch.as_tensor(np.random.default_rng(0).integers(0, 256, size=(16, 4, 84, 84), dtype=np.uint8))
    return {"dir": d, "ppo": ppo, "dqn": dqn, "x": x,
            "file": {"ppo": d / "ppo_atari.cleanrl_model", "dqn": d / "dqn_atari.cleanrl_model"}}


@pytest.mark.parametrize("loader", ["pixel", "probe"])
def test_cleanrl_state_dicts_give_cleanrls_outputs(cleanrl, scripts, loader):
    x = cleanrl["x"]
    agent, ckpt = our_agent(scripts, loader, cleanrl["file"]["ppo"])
    assert ckpt["source"]["layer_map"] == {"network.conv1": "network.0", "network.conv2": "network.2", "network.conv3": "network.4",
                                           "network.fc": "network.7", "actor": "actor", "critic": "critic"}
    with torch.no_grad():
        hidden = cleanrl["ppo"].network(x / 255.0)
        logits, value = agent.actor(agent.hidden(x)), agent.get_value(x)
        assert torch.allclose(logits, cleanrl["ppo"].actor(hidden), rtol=0, atol=1e-6)
        assert torch.allclose(value, cleanrl["ppo"].critic(hidden), rtol=0, atol=1e-6)
        assert value.std() > 1e-3
        agent, ckpt = our_agent(scripts, loader, cleanrl["file"]["dqn"])
        assert ckpt["source"]["actor"] == "Q-values" and ckpt["source"]["layer_map"]["actor"] == "network.9"
        q = agent.actor(agent.hidden(x))
        assert torch.allclose(q, cleanrl["dqn"].network(x / 255.0), rtol=0, atol=1e-6) and q.std() > 1e-3
        assert torch.count_nonzero(agent.get_value(x)) == 0


def evaluate_once(path, library, greedy, cwd):
    proc = run_script(PIXEL, "--eval-checkpoint", path, *EVAL, cwd=cwd)
    assert "trained elsewhere" in proc.stdout
    report = json.loads((path.parent / "eval.json").read_text())
    assert report["episodes"] == 1 and report["source"]["library"].startswith(library)
    assert report["greedy"] is greedy  # a Q-network acts on argmax Q, without --eval-greedy
    (path.parent / "eval.json").unlink()


def test_eval_plays_an_sb3_zip(sb3, tmp_path):
    evaluate_once(sb3["zip"]["ppo"], "stable-baselines3", False, tmp_path)


def test_eval_plays_a_cleanrl_q_network(cleanrl, tmp_path):
    evaluate_once(cleanrl["file"]["dqn"], "CleanRL", True, tmp_path)


def test_probe_runs_on_an_sb3_zip_and_measures_the_preprocessing_difference(sb3, tmp_path):
    out = tmp_path / "probe"
    proc = run_script(PROBE, "--pixel-checkpoint", sb3["zip"]["ppo"], *PROBE_INPUTS, *PROBE_TINY, "--out-dir", out, cwd=tmp_path)
    assert "[pixel agent] stable-baselines3" in proc.stdout
    res = json.loads((out / "results.json").read_text())
    assert res["inputs"]["pixel_source"]["algorithm"] == "PPO" and res["inputs"]["pixel_source"]["preprocessing"] == "sb3"
    check = res["preprocessing_check"]
    assert check["compared"] and "AtariWrapper" in check["pipeline"] and check["steps"] == 400
    for part in ("frame", "observation"):
        assert 0 <= check[part]["mean_abs_diff"] <= check[part]["max_abs_diff"] <= 255
        assert 0 <= check[part]["steps_identical"] <= check["steps"] + 1
    # the stack can only differ more than its newest frame; random play loses lives, where SB3 zero-pads the stack
    assert check["observation"]["max_abs_diff"] >= check["frame"]["max_abs_diff"]
    assert check["terminals"] > 0 and check["observation"]["steps_identical"] < check["steps"] + 1
    html = (out / "report.html").read_text()
    assert "Observation check: against SB3" in html
    z = np.load(out / "activations.npz")
    assert z["act_critic"].std() > 0 and z["act_actor"].shape[1] == 4


def test_probe_runs_on_a_cleanrl_q_network(cleanrl, tmp_path):
    out = tmp_path / "probe"
    run_script(PROBE, "--pixel-checkpoint", cleanrl["file"]["dqn"], *PROBE_INPUTS, *PROBE_TINY, "--out-dir", out, "--no-report",
               cwd=tmp_path)
    res = json.loads((out / "results.json").read_text())
    assert res["inputs"]["pixel_source"]["policy"] == "dqn_atari.py QNetwork"
    check = res["preprocessing_check"]
    assert "CleanRL" in check["pipeline"]
    try:
        import stable_baselines3  # noqa: F401
    except ImportError:  # CleanRL's wrappers are SB3's: the check says why it could not compare
        assert not check["compared"] and "stable-baselines3" in check["reason"]
    else:
        assert check["compared"] and check["observation"]["max_abs_diff"] >= check["frame"]["max_abs_diff"]
    z = np.load(out / "activations.npz")
    assert not z["act_critic"].any() and z["act_actor"].std() > 0  # the Q-values are the actor; no critic
    for var in res["variables"]:  # whose all-zero layer is not scored, and says why
        assert var["probe"]["critic"]["score"] is None and "no critic" in var["probe"]["critic"]["reason"]
        assert var["natural"]["critic"]["score"] is None and "no critic" in var["natural"]["critic"]["reason"]


# ---- anything else: one `error:` line that names what was found, nothing written
def test_foreign_files_are_refused_with_what_was_found(cleanrl, tmp_path):
    odd_zip = tmp_path / "notes.zip"
    with zipfile.ZipFile(odd_zip, "w") as z:
        z.writestr("hello.txt", "hi")
    unknown = tmp_path / "mlp.cleanrl_model"
    torch.save({"fc1.weight": torch.zeros(8, 4), "fc1.bias": torch.zeros(8)}, unknown)
    one_channel = tmp_path / "gray1.cleanrl_model"
    sd = torch.load(cleanrl["file"]["ppo"], weights_only=True)
    sd["network.0.weight"] = sd["network.0.weight"][:, :1].clone()
    torch.save(sd, one_channel)
    pong = tmp_path / "pong_dqn.cleanrl_model"
    q_network = nn.Module()
    q_network.network = cleanrl_network(6, head=True)
    torch.save(q_network.state_dict(), pong)
    mixed = tmp_path / "mixed.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "step": 3}, mixed)
    cases = [(odd_zip, ["zip archive of hello.txt"]), (unknown, ["fc1", "not the layout"]),
             (one_channel, ["network.0.weight", "(32, 1, 8, 8)"]), (pong, ["6 actions", "4"]), (mixed, ["dict of model, step"])]
    for path, needles in cases:
        before = sorted(p.name for p in tmp_path.iterdir())
        assert_clean_error(run_script(PIXEL, "--eval-checkpoint", path, *EVAL, cwd=tmp_path, check=False), *needles)
        if path in (unknown, pong):  # the probe's own way to the same refusal
            probe = run_script(PROBE, "--pixel-checkpoint", path, *PROBE_INPUTS, "--out-dir", tmp_path / "out", cwd=tmp_path, check=False)
            assert_clean_error(probe, *(["pixel checkpoint has 6 actions"] if path == pong else needles))
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # no eval.json, no probe folder
    assert_clean_error(run_script(PIXEL, "--resume", cleanrl["file"]["ppo"], cwd=tmp_path, check=False), "--resume takes")


def test_sb3_models_that_do_not_fit_are_refused(sb3, tmp_path):
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack
    pong = VecFrameStack(make_atari_env("PongNoFrameskip-v4", n_envs=1, seed=0), n_stack=4)
    cases = [(PPO("CnnPolicy", pong, device="cpu"), ["6 actions"]),
             (PPO("CnnPolicy", VecFrameStack(make_atari_env(ENV, n_envs=1, seed=0), n_stack=4), device="cpu",
                  policy_kwargs={"share_features_extractor": False}), ["separate actor and critic"]),
             (PPO("MlpPolicy", gym.make("CartPole-v1"), device="cpu"), ["observations [4]"])]
    for i, (model, needles) in enumerate(cases):
        path = tmp_path / f"model{i}.zip"
        model.save(path)
        proc = run_script(PIXEL, "--eval-checkpoint", path, *EVAL, cwd=tmp_path, check=False)
        assert_clean_error(proc, *needles)
        assert not (tmp_path / "eval.json").exists()


# ---- CleanRL cleanba's Flax files (.cleanrl_model = flax.serialization.to_bytes, msgpack): written by Flax itself
NO_FLAX = "flax is not installed (test-only: pip install flax; it writes cleanba's files and is the reference forward pass)"


def cleanba_modules(n_actions):
    """cleanba's Network (Nature CNN or IMPALA CNN), Actor and Critic, written here from the architecture of
    cleanba_ppo_envpool_impala_atari_wrapper[_naturecnn].py (Flax names its layers Conv_0, ResidualBlock_0, ... in the
    order they are created, so the order below is part of the file layout)."""
    import flax.linen as fnn
    import jax.numpy as jnp

    class NatureNetwork(fnn.Module):
        @fnn.compact
        def __call__(self, x):
            x = jnp.transpose(x, (0, 2, 3, 1)) / 255.0
            for channels, kernel, stride in ((32, 8, 4), (64, 4, 2), (64, 3, 1)):
                x = fnn.relu(fnn.Conv(channels, (kernel, kernel), (stride, stride), padding="VALID")(x))
            return fnn.relu(fnn.Dense(512)(x.reshape((x.shape[0], -1))))

    class ResidualBlock(fnn.Module):
        channels: int

        @fnn.compact
        def __call__(self, x):
            y = fnn.Conv(self.channels, (3, 3))(fnn.relu(x))
            return x + fnn.Conv(self.channels, (3, 3))(fnn.relu(y))

    class ConvSequence(fnn.Module):
        channels: int

        @fnn.compact
        def __call__(self, x):
            x = fnn.max_pool(fnn.Conv(self.channels, (3, 3))(x), (3, 3), (2, 2), padding="SAME")
            x = ResidualBlock(self.channels)(x)
            return ResidualBlock(self.channels)(x)

    class ImpalaNetwork(fnn.Module):
        @fnn.compact
        def __call__(self, x):
            x = jnp.transpose(x, (0, 2, 3, 1)) / 255.0
            for channels in (16, 32, 32):
                x = ConvSequence(channels)(x)
            return fnn.relu(fnn.Dense(256)(fnn.relu(x).reshape((x.shape[0], -1))))

    class Head(fnn.Module):  # Actor (n_actions logits) and Critic (1 value): one Dense each
        n: int

        @fnn.compact
        def __call__(self, x):
            return fnn.Dense(self.n)(x)

    return {"naturecnn": NatureNetwork(), "impala": ImpalaNetwork()}, Head(n_actions), Head(1)


def real_frames(n_envs=2, steps=20, seed=0):
    """Frame stacks of ale_py's AtariVectorEnv on Breakout under random play, (N, 4, 84, 84) uint8, and 4 stacks of
    uniform noise."""
    from ale_py.vector_env import AtariVectorEnv
    env = AtariVectorEnv(game="breakout", num_envs=n_envs)
    rng = np.random.default_rng(seed)
    obs = [env.reset(seed=seed)[0]]
    for _ in range(steps):
        obs.append(env.step(rng.integers(4, size=n_envs))[0])
    env.close()
    return np.concatenate(obs + [rng.integers(0, 256, size=(4, 4, 84, 84), dtype=np.uint8)])


@pytest.fixture(scope="module")
def cleanba(tmp_path_factory):
    """Both cleanba networks with Flax's default init (every bias then moved off 0, so that each is checked), saved as cleanba
    saves them (flax.serialization.to_bytes([vars(args), [network_params, actor_params, critic_params]])) under the
    Hub's file names, and Flax's own logits and values on real frames."""
    pytest.importorskip("flax", reason=NO_FLAX)
    import flax
    import jax
    d = tmp_path_factory.mktemp("cleanba")
    x = real_frames()
    networks, actor, critic = cleanba_modules(4)
    out = {"dir": d, "x": x, "file": {}, "logits": {}, "value": {}}
    for i, (arch, network) in enumerate(networks.items()):
        keys = jax.random.split(jax.random.PRNGKey(i), 4)
        params = [network.init(keys[0], x[:1])]
        hidden = network.apply(params[0], x[:1])
        params += [actor.init(keys[1], hidden), critic.init(keys[2], hidden)]
        leaves, tree = jax.tree_util.tree_flatten(params)
        noise = jax.random.split(keys[3], len(leaves))
        params = jax.tree_util.tree_unflatten(tree, [l + 0.1 * jax.random.normal(k, l.shape) if l.ndim == 1 else l
                                                      for l, k in zip(leaves, noise)])  # Flax's biases start at 0
        hidden = network.apply(params[0], x)
        out["logits"][arch] = np.asarray(actor.apply(params[1], hidden))
        out["value"][arch] = np.asarray(critic.apply(params[2], hidden))
        exp_name = "cleanba_ppo_envpool_impala_atari_wrapper" + ("_naturecnn" if arch == "naturecnn" else "")
        args = {"exp_name": exp_name, "env_id": "Breakout-v5", "seed": 1, "learning_rate": 2.5e-4, "target_kl": None,
                "actor_device_ids": [0], "anneal_lr": True}
        out["file"][arch] = d / f"{exp_name}.cleanrl_model"
        out["file"][arch].write_bytes(flax.serialization.to_bytes([args, params]))
    return out


def our_cleanba_agent(scripts, loader, path):
    """The model `loader`'s script builds from a cleanba file (the probe: its load_checkpoint)."""
    if loader == "pixel":
        ckpt = scripts["pixel"].load_checkpoint(str(path))
        cls = scripts["pixel"].ImpalaAgent if ckpt["architecture"] == "impala-cnn" else scripts["pixel"].Agent
        agent = cls(**ckpt["model_kwargs"])
        agent.load_state_dict(ckpt["state_dict"])
        return agent.eval(), ckpt
    return our_agent(scripts, loader, path)


@pytest.mark.parametrize("arch, loader", [("naturecnn", "pixel"), ("naturecnn", "probe"), ("impala", "pixel"), ("impala", "probe")])
def test_cleanba_files_give_flaxs_logits_and_value(cleanba, scripts, arch, loader):
    agent, ckpt = our_cleanba_agent(scripts, loader, cleanba["file"][arch])
    src = ckpt["source"]
    assert src["library"] == "CleanRL (cleanba)" and src["preprocessing"] == "envpool" and src["trained_on"] == "Breakout-v5"
    assert ckpt["architecture"] == ("impala-cnn" if arch == "impala" else "nature-cnn")
    assert src["layer_map"]["network.fc"] == "network.Dense_0" and src["layer_map"]["actor"] == "actor.Dense_0"
    x = torch.as_tensor(cleanba["x"])
    with torch.no_grad():
        hidden = agent.hidden(x)
        logits, value = agent.actor(hidden).numpy(), agent.critic(hidden).numpy()
        _, logprob, _, value2 = agent.get_action_and_value(x, torch.zeros(len(x), dtype=torch.long))
    theirs_logits, theirs_value = cleanba["logits"][arch], cleanba["value"][arch]
    assert theirs_value.std() > 1e-2 and theirs_logits.std() > 1e-2  # real outputs that differ between observations
    assert np.abs(logits - theirs_logits).max() <= 1e-5, np.abs(logits - theirs_logits).max()
    assert np.abs(value - theirs_value).max() <= 1e-5, np.abs(value - theirs_value).max()
    assert torch.allclose(value2, torch.as_tensor(value)) and torch.allclose(logprob, torch.log_softmax(torch.as_tensor(logits), -1)[:, 0])


def test_eval_plays_cleanba_files(cleanba, tmp_path):
    for arch in ("naturecnn", "impala"):
        evaluate_once(cleanba["file"][arch], "CleanRL (cleanba)", False, tmp_path)


def test_probe_runs_on_a_cleanba_file(cleanba, tmp_path):
    out = tmp_path / "probe"
    run_script(PROBE, "--pixel-checkpoint", cleanba["file"]["naturecnn"], *PROBE_INPUTS, *PROBE_TINY, "--out-dir", out,
               "--no-report", cwd=tmp_path)
    res = json.loads((out / "results.json").read_text())
    assert res["inputs"]["pixel_source"]["policy"] == "cleanba_ppo_envpool_impala_atari_wrapper_naturecnn (Nature CNN)"
    check = res["preprocessing_check"]  # EnvPool's pipeline replayed on the same frames (no stable-baselines3 needed)
    assert check["compared"] and "EnvPool" in check["pipeline"] and check["steps"] == 400 and check["terminals"] > 0
    assert check["observation"]["max_abs_diff"] >= check["frame"]["max_abs_diff"] > 0  # its resets are not maxed
    assert "repeats a game's first frame" in check["differences"][0]
    z = np.load(out / "activations.npz")
    assert z["act_critic"].std() > 0 and z["act_actor"].shape[1] == 4


def test_probe_runs_on_an_impala_cleanba_file(cleanba, scripts, tmp_path):
    """The IMPALA CNN probed end to end: the layers recorded are the model's (each sequence's max pool and residual
    blocks, the last map, the fc), with the shapes its forward pass gives; every channel / unit is labelled with a probed
    RAM address or marked; the top natural frames' boxes are receptive fields of a map position, inside the 84x84 frame;
    the oracle steer lands at every layer (steers take each layer's shape); probe_report.py renders those layers."""
    out = tmp_path / "probe"
    run_script(PROBE, "--pixel-checkpoint", cleanba["file"]["impala"], *PROBE_INPUTS, *PROBE_TINY, "--out-dir", out,
               cwd=tmp_path)
    res = json.loads((out / "results.json").read_text())
    assert res["inputs"]["pixel_architecture"] == "impala-cnn"
    assert res["inputs"]["pixel_source"]["policy"] == "cleanba_ppo_envpool_impala_atari_wrapper (IMPALA CNN)"
    hidden = [f"seq{s}.{p}" for s in range(3) for p in ("pool", "res0", "res1")] + ["relu", "relu_fc"]
    assert list(res["layers"]) == hidden + ["actor", "critic"]
    agent = scripts["probe"].load_checkpoint(str(cleanba["file"]["impala"]), "pixel", "--pixel-checkpoint")["model"]
    shapes = {}
    for k in hidden + ["actor"]:
        assert res["layers"][k]["module"] == (k if k == "actor" else f"network.{k}")
        agent.get_submodule(res["layers"][k]["module"]).register_forward_hook(
            lambda m, i, o, k=k: shapes.__setitem__(k, list(o.shape[1:])))
    with torch.no_grad():
        agent.get_action_and_value(torch.as_tensor(cleanba["x"][:1]))
    assert {k: res["layers"][k]["shape"] for k in shapes} == shapes
    assert shapes["seq0.pool"] == [16, 42, 42] and shapes["seq2.res1"] == shapes["relu"] == [32, 11, 11]
    z = np.load(out / "activations.npz")
    assert z["layer_names"].tolist() == list(res["layers"]) and z["act_seq1.res0"].shape[1:] == (32, 21, 21)
    # every channel (a conv map) / unit (the fc) labelled with a probed address, or dead, silent or weak
    probed = [v["index"] for v in res["variables"]]
    for k in hidden:
        units = res["layers"][k]["units"]
        assert [u["unit"] for u in units] == list(range(shapes[k][0]))
        for u in units:
            if u["var"] >= 0:
                assert u["status"] == "labelled" and u["index"] == probed[u["var"]] and u["name"] == res["variables"][u["var"]]["name"]
            else:
                assert u["status"] in ("dead", "silent", "weak") and u["index"] is None, (k, u)
    assert any(u["var"] >= 0 for k in hidden for u in res["layers"][k]["units"])
    # the boxes of the top natural frames: the receptive field of one position of the map (an fc unit: of the last
    # map, relu), clipped to the frame; padding puts the fields of the first positions partly outside it
    fields = res["natural"]["top_frames"]["receptive_field"]
    assert list(fields) == hidden[:-1] and min(f["start"] for f in fields.values()) < 0
    for k in hidden:
        f = fields[k if k in fields else "relu"]
        side = shapes[k if k in fields else "relu"][1]
        sides = {(max(f["start"] + i * f["stride"], 0), min(f["start"] + i * f["stride"] + f["size"] - 1, 83))
                 for i in range(side)}
        boxes = z[f"top_box_{k}"][z[f"top_frame_{k}"] >= 0]
        assert len(boxes) and 0 <= boxes.min() and boxes.max() <= 83, k
        assert all((r0, r1) in sides and (c0, c1) in sides for r0, r1, c0, c1 in boxes.tolist()), k
    # steering at every hidden layer: the oracle (the pair's true difference, added at that layer) lands on the target
    landed = {k for v in res["variables"] for k, c in (v["causal"] or {}).items()
              if c and c["oracle"]["gap_closed_actor"] is not None and c["oracle"]["gap_closed_actor"] > 0.95}
    assert landed == set(hidden) and all(set(v["verdict"]["steering"]) == set(hidden) for v in res["variables"])
    page = (out / "report.html").read_text()
    for k in hidden:
        assert f"<h3 id='layer-{k}'>network.{k} " in page and f"data-layer='{k}'" in page, k


def six_action_cleanba_files(cleanba, folder, names):
    """Nature-CNN cleanba files with 6 actions (Pong's), Flax's default init: {args env_id (None: no env_id in the args):
    path written in `folder`}."""
    import flax
    import jax
    networks, actor, critic = cleanba_modules(6)
    x = cleanba["x"][:1]
    params = [networks["naturecnn"].init(jax.random.PRNGKey(0), x)]
    hidden = networks["naturecnn"].apply(params[0], x)
    params += [actor.init(jax.random.PRNGKey(1), hidden), critic.init(jax.random.PRNGKey(2), hidden)]
    paths = {}
    for name in names:
        paths[name] = folder / f"{name or 'anonymous'}.cleanrl_model"
        paths[name].write_bytes(flax.serialization.to_bytes([{"env_id": name} if name else {"seed": 1}, params]))
    return paths


def test_cleanba_files_that_do_not_fit_are_refused(cleanba, tmp_path):
    """Damaged, of another layout, of another game, or without the msgpack package: one `error:` line each."""
    import flax
    data = cleanba["file"]["naturecnn"].read_bytes()
    cut = tmp_path / "cut.cleanrl_model"
    cut.write_bytes(data[:len(data) // 2])
    other = tmp_path / "dict.cleanrl_model"
    other.write_bytes(flax.serialization.to_bytes({"params": {"w": np.zeros(3, np.float32)}}))
    files = six_action_cleanba_files(cleanba, tmp_path, ["Pong-v5", "Breakout-v5"])
    pong, six = files["Pong-v5"], files["Breakout-v5"]  # six: said to be Breakout, with Pong's 6 actions
    cases = [(cut, ["cannot be read"]), (other, ["holding params", "not cleanba's"]), (six, ["6 actions", "4"]),
             (pong, ["trained on Pong-v5", "not on breakout"])]
    for path, needles in cases:
        assert_clean_error(run_script(PIXEL, "--eval-checkpoint", path, *EVAL, cwd=tmp_path, check=False), *needles)
        assert not (tmp_path / "eval.json").exists()
    blocker = tmp_path / "no_msgpack"  # a `msgpack` that cannot be imported stands for the package missing
    (blocker / "msgpack").mkdir(parents=True)
    (blocker / "msgpack" / "__init__.py").write_text("raise ImportError('msgpack is blocked by the test')\n")
    proc = run_script(PIXEL, "--eval-checkpoint", cleanba["file"]["naturecnn"], *EVAL, cwd=tmp_path, check=False,
                      env_extra={"PYTHONPATH": str(blocker)})
    assert_clean_error(proc, "needs the msgpack package", "pip install msgpack")
    proc = run_script(PROBE, "--pixel-checkpoint", pong, "--ram-vars", ROOT / "ram_vars" / f"{ENV}.json", "--out-dir",
                      tmp_path / "probe", cwd=tmp_path, check=False)  # the probe: a Pong agent on Breakout's bytes
    assert_clean_error(proc, "trained on Pong-v5", "not on breakout")
    assert not (tmp_path / "probe").exists()


def test_probe_without_ram_vars_extracts_the_game_the_file_names(cleanba, tmp_path):
    """No --ram-vars: the game comes from the cleanba file's args (Pong-v5); with no ram_vars/PongNoFrameskip-v4.json in
    the working folder, extract_ram_vars.py writes it into <out-dir>/ram_vars/ first and the probe runs on that game's
    selected bytes. A second run reuses that file. A file that names no game needs --ram-vars or --env-id; an --env-id
    that is not a gymnasium id, or one the extractor refuses, ends in one line."""
    files = six_action_cleanba_files(cleanba, tmp_path, ["Pong-v5", None])
    out = tmp_path / "probe"
    proc = run_script(PROBE, "--pixel-checkpoint", files["Pong-v5"], "--extract-frames", "3000", *PROBE_TINY,
                      "--importance-states", "4", "--no-natural", "--out-dir", out, "--no-report", cwd=tmp_path)
    assert "extracting the RAM variables of PongNoFrameskip-v4 first" in proc.stdout
    path = out / "ram_vars" / "PongNoFrameskip-v4.json"
    rv = json.loads(path.read_text())
    assert rv["env_id"] == "PongNoFrameskip-v4" and rv["produced_by"]["args"]["total_frames"] == 3000
    res = json.loads((out / "results.json").read_text())
    assert res["env_id"] == "PongNoFrameskip-v4" and res["game"] == "pong"
    assert res["inputs"]["ram_vars"] == str(path) and res["inputs"]["ram_vars_from"] == "extracted by this run"
    assert res["args"]["ram_vars"] == str(path) and res["inputs"]["ram_checkpoint"] is None
    probed = [v["index"] for v in res["variables"]]
    assert probed and set(probed) <= set(rv["selected"])
    # the same folder again: the extraction is reused (the run then stops at a bad --include-vars, checked after it)
    before = path.read_bytes()
    unselected = next(i for i in range(128) if i not in rv["selected"])
    proc = run_script(PROBE, "--pixel-checkpoint", files["Pong-v5"], "--include-vars", str(unselected), "--out-dir", out,
                      cwd=tmp_path, check=False)
    assert_clean_error(proc, "--include-vars")
    assert "(an earlier run's extraction)" in proc.stdout and "extracting" not in proc.stdout
    assert path.read_bytes() == before
    for extra, needles in [([], ["--ram-vars is required", "does not name its game"]),
                           (["--env-id", "NoSuchGame-v9"], ["--env-id NoSuchGame-v9", "not a registered gymnasium id"]),
                           (["--env-id", "CartPole-v1"], ["extract_ram_vars.py --env-id CartPole-v1 failed",
                                                          "not an ALE gymnasium id"])]:
        proc = run_script(PROBE, "--pixel-checkpoint", files[None], *extra, "--out-dir", tmp_path / "anon", cwd=tmp_path,
                          check=False)
        assert_clean_error(proc, *needles)
        assert not (tmp_path / "anon" / "results.json").exists()


# ---- floringogianu/atari-agents: gzip of torch.save({"estimator_state": AtariNet.state_dict(), ...})
class AtariNet(nn.Module):
    """atari-agents' play.py estimator, written here from its published architecture: the Nature CNN as
    `self.__features` (convs) and `self.__head` (fc, Q-values), attributes whose names Python mangles to
    _AtariNet__features / _AtariNet__head, as in their state_dicts; C51 adds `self.__support` and 51 atoms per action."""

    def __init__(self, n_actions, distributional=False):
        super().__init__()
        self.n_actions, self.distributional = n_actions, distributional
        if distributional:
            self.__support = nn.Parameter(torch.linspace(-10, 10, 51), requires_grad=False)
        self.__features = nn.Sequential(nn.Conv2d(4, 32, 8, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
                                        nn.Conv2d(64, 64, 3, stride=1), nn.ReLU())
        self.__head = nn.Sequential(nn.Linear(64 * 7 * 7, 512), nn.ReLU(), nn.Linear(512, n_actions * (51 if distributional else 1)))

    def forward(self, x):
        return self.__head(self.__features(x.float().div(255)).flatten(1))


def save_atari_agents(path, model, **extra):
    import gzip
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        torch.save({"estimator_state": model.state_dict(), **extra}, f)
    return path


@pytest.fixture(scope="module")
def atari_agents(tmp_path_factory):
    """An M-DQN AtariNet (PyTorch's default init, biases moved off it) saved under their folder layout."""
    d = tmp_path_factory.mktemp("atari_agents")
    torch.manual_seed(5)
    model = AtariNet(4)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.05 * torch.randn_like(p))
    path = save_atari_agents(d / "MDQN_modern" / "Breakout" / "0" / "model_50000000.gz", model, step=50_000_000)
    return {"dir": d, "model": model.eval(), "file": path, "x": torch.as_tensor(real_frames())}


@pytest.mark.parametrize("loader", ["pixel", "probe"])
def test_atari_agents_file_gives_their_q_values(atari_agents, scripts, loader):
    agent, ckpt = our_agent(scripts, loader, atari_agents["file"])
    src = ckpt["source"]
    assert src["library"] == "atari-agents" and src["algorithm"] == "M-DQN" and src["actor"] == "Q-values" and not src["critic"]
    assert src["preprocessing"] == "atari-agents-modern" and src["layer_map"]["actor"] == "_AtariNet__head.2"
    x = atari_agents["x"]
    with torch.no_grad():
        q, theirs = agent.actor(agent.hidden(x)), atari_agents["model"](x)
        assert torch.count_nonzero(agent.get_value(x)) == 0
    assert theirs.std() > 1e-2
    assert (q - theirs).abs().max() <= 1e-5, (q - theirs).abs().max()
    assert torch.equal(q.argmax(1), theirs.argmax(1))


def test_eval_plays_an_atari_agents_file_and_refuses_what_does_not_fit(atari_agents, tmp_path):
    evaluate_once(atari_agents["file"], "atari-agents", True, tmp_path)
    c51 = save_atari_agents(tmp_path / "C51_classic" / "Pong" / "0" / "model_1.gz", AtariNet(6, distributional=True))
    pickled = save_atari_agents(tmp_path / "DQN_modern" / "Pong" / "0" / "model_2.gz", AtariNet(6), when=datetime.date(2022, 1, 1))
    odd = tmp_path / "DQN_modern" / "Pong" / "0" / "model_3.gz"  # readable without pickle, but not a state_dict
    with gzip.open(odd, "wb") as f:
        torch.save({"estimator_state": {**AtariNet(6).state_dict(), "steps": 3}}, f)
    cases = [(c51, ["C51", "only DQN and M-DQN"]), (pickled, ["weights_only"]), (odd, ["more than tensors"])]
    for path, needles in cases:
        assert_clean_error(run_script(PIXEL, "--eval-checkpoint", path, *EVAL, cwd=tmp_path, check=False), *needles)
        assert not (tmp_path / "eval.json").exists()


@pytest.mark.parametrize("game", ["Breakout", "MsPacman"])
def test_envpool_replay_equals_envpool(scripts, game):
    """The probe's replay of cleanba's EnvPool pipeline (envpool_pipeline) against EnvPool itself, on the same actions:
    with noop_max=1 neither draws no-ops, so the two must agree exactly, through lost lives (episodic life) and game
    overs. EnvPool is optional (pip install envpool); without it this test skips."""
    envpool = pytest.importorskip("envpool", reason="envpool is not installed (optional: pip install envpool)")
    pool = envpool.make(f"{game}-v5", env_type="gymnasium", num_envs=1, episodic_life=True, repeat_action_probability=0,
                        noop_max=1, full_action_space=False, reward_clip=True, seed=0, max_episode_steps=27000)
    obs = pool.reset()[0][0]
    rec = scripts["probe"].ScreenRecorder(gym.make(f"{game}NoFrameskip-v4", frameskip=1, repeat_action_probability=0.0))
    ours, act = scripts["probe"].envpool_pipeline(rec, 0, noop_max=1)
    rng, ends, diffs = np.random.default_rng(1), 0, [np.abs(obs.astype(int) - ours).max()]
    for _ in range(800):
        a = int(rng.integers(pool.action_space.n))
        obs, _, term, trunc, _ = pool.step(np.array([a]))
        if term[0] or trunc[0]:  # EnvPool resets on the call after a terminal step, ignoring its action
            obs, ends = pool.step(np.array([0]))[0], ends + 1
        ours, done = act(a)
        assert done == bool(term[0] or trunc[0])
        diffs.append(np.abs(obs[0].astype(int) - ours).max())
    assert ends > 0 and max(diffs) == 0, (ends, max(diffs))


# ---- Sample Factory 2.x: torch.save of its Learner's checkpoint dict (checkpoint_p0/*.pth), config.json beside them
NO_SF = ("sample-factory is not installed (optional: pip install --no-deps sample-factory signal-slot-mp colorlog; "
         "its own code builds, saves and runs the reference actor-critic)")


def save_sample_factory_run(train_dir, experiment, n_actions, frames, *argv, updates=500):
    """An Atari actor-critic made and written by Sample Factory's own code, as its training does: its config parsed by
    sf_examples/atari's parser (parse_sf_args + atari_override_defaults + parse_full_cfg, extra flags in argv), its
    Learner (Learner.init: create_actor_critic on the Atari env's spaces, Adam), the input normaliser's running
    statistics gathered on real frames as its learner gathers them (prepare_and_normalize_obs in train mode, `updates`
    times: 0 for a file that is only to be refused), the
    returns normaliser's on some returns, every bias moved off SF's init of 0 and the heads' weights scaled by 10, then
    Learner.save (checkpoint_p0/
    checkpoint_<train_step>_<env_steps>.pth) and config.json as its Runner._save_cfg writes it (json.dump of cfg_dict).
    The spaces are those SF's make_env gives an Atari env (its DictObservationsWrapper: {"obs": (4, 84, 84) uint8}).
    Returns (the checkpoint's path, the actor-critic in eval mode)."""
    from sample_factory.algo.learning.learner import Learner
    from sample_factory.algo.utils.env_info import EnvInfo
    from sample_factory.algo.utils.model_sharing import ParameterServer
    from sample_factory.algo.utils.rl_utils import prepare_and_normalize_obs
    from sample_factory.cfg.arguments import cfg_dict, parse_full_cfg, parse_sf_args
    from sf_examples.atari.atari_params import atari_override_defaults
    argv = [f"--env={experiment.split('_2B_')[-1].rsplit('_', 1)[0]}", f"--experiment={experiment}",
            f"--train_dir={train_dir}", "--device=cpu", "--seed=3", *argv]
    parser, partial = parse_sf_args(argv=argv)
    atari_override_defaults(partial.env, parser)
    cfg = parse_full_cfg(parser, argv)
    obs_space = gym.spaces.Dict(obs=gym.spaces.Box(0, 255, (4, 84, 84), np.uint8))
    env_info = EnvInfo(obs_space=obs_space, action_space=gym.spaces.Discrete(n_actions), num_agents=1, gpu_actions=False,
                       gpu_observations=False, action_splits=None, all_discrete=None, frameskip=4)
    versions = torch.zeros(1, dtype=torch.int32)
    with torch.random.fork_rng(devices=[]):  # (Learner.init seeds torch's and numpy's global generators with cfg.seed)
        state = np.random.get_state()
        learner = Learner(cfg, env_info, versions, 0, ParameterServer(0, versions, serial_mode=True))
        learner.init()
        np.random.set_state(state)
        ac = learner.actor_critic
        for _ in range(updates):  # (as a long training leaves them: pixels that never change get a variance near 0)
            prepare_and_normalize_obs(ac, {"obs": torch.as_tensor(frames)})
        if ac.returns_normalizer is not None:
            ac.returns_normalizer(3 * torch.randn(64, 1) + 2)
        with torch.no_grad():
            for name, p in ac.named_parameters():
                if p.dim() == 1:
                    p.add_(0.1 * torch.randn_like(p))
                elif name.startswith(("critic_linear.", "action_parameterization.")):
                    p.mul_(10)  # outputs that differ visibly between observations
    learner.train_step, learner.env_steps = 7, 12348  # env_steps: emulator frames (summaries_use_frameskip)
    assert learner.save()
    with open(train_dir / experiment / "config.json", "w") as f:
        json.dump(cfg_dict(cfg), f, indent=2)
    return next((train_dir / experiment / "checkpoint_p0").glob("checkpoint_*.pth")), ac.eval()


@pytest.fixture(scope="module")
def sample_factory(tmp_path_factory):
    """A Breakout APPO checkpoint as Sample Factory writes it (the Hub's layout: <experiment>/checkpoint_p0/*.pth and
    <experiment>/config.json), and Sample Factory's own logits and values on real frames and noise."""
    pytest.importorskip("sample_factory", reason=NO_SF)
    from sample_factory.algo.utils.rl_utils import prepare_and_normalize_obs
    d = tmp_path_factory.mktemp("sample_factory")
    x = real_frames()
    path, ac = save_sample_factory_run(d, "atari_2B_atari_breakout_1111", 4, x[:-4])
    with torch.no_grad():
        out = ac(prepare_and_normalize_obs(ac, {"obs": torch.as_tensor(x)}), torch.zeros(len(x), 1))
    return {"dir": d, "file": path, "x": x, "logits": out["action_logits"].numpy(), "value": out["values"].numpy(),
            "returns_normalizer": ac.returns_normalizer}


@pytest.mark.parametrize("loader", ["pixel", "probe"])
def test_sample_factory_checkpoint_gives_its_logits_and_value(sample_factory, scripts, loader):
    if loader == "pixel":
        ckpt = scripts["pixel"].load_checkpoint(str(sample_factory["file"]))
        agent = scripts["pixel"].SampleFactoryAgent(**ckpt["model_kwargs"])
        agent.load_state_dict(ckpt["state_dict"])
        agent.eval()
    else:
        agent, ckpt = our_agent(scripts, loader, sample_factory["file"])
        assert type(agent).__name__ == "SampleFactoryAgent"
    src = ckpt["source"]
    assert src["library"] == "Sample Factory" and src["algorithm"] == "APPO" and src["trained_on"] == "BreakoutNoFrameskip-v4"
    assert src["preprocessing"] == "cleanrl" and "make_atari_env" in src["pipeline"] and src["config"].endswith("config.json")
    cfg = json.loads((sample_factory["file"].parent.parent / "config.json").read_text())
    assert cfg["summaries_use_frameskip"] and cfg["env_frameskip"] == 4  # sf_examples/atari's: env_steps counts frames
    assert ckpt["architecture"] == "sample-factory-cnn" and ckpt["global_step"] == 12348 // 4  # agent steps
    assert src["layer_map"]["actor"] == "action_parameterization.distribution_linear" and src["layer_map"]["critic"] == "critic_linear"
    rn = sample_factory["returns_normalizer"]
    assert src["value_normalization"]["mean"] == float(rn.running_mean[0]) != 0
    assert src["value_normalization"]["std"] == pytest.approx(float(torch.sqrt(rn.running_var[0] + 1e-5)))
    x = torch.as_tensor(sample_factory["x"])
    with torch.no_grad():
        hidden = agent.hidden(x)
        logits, value = agent.actor(hidden).numpy(), agent.critic(hidden)[:, 0].numpy()
        eval_logits = agent.actor(agent.network(x.float() / 255.0)).numpy()  # as the eval loop calls it
    theirs_logits, theirs_value = sample_factory["logits"], sample_factory["value"]
    assert theirs_value.std() > 1e-2 and theirs_logits.std() > 1e-2  # real outputs that differ between observations
    assert np.abs(logits - theirs_logits).max() <= 1e-5, np.abs(logits - theirs_logits).max()
    assert np.abs(value - theirs_value).max() <= 1e-5, np.abs(value - theirs_value).max()
    assert np.array_equal(eval_logits, logits)
    # the input normaliser matters: the same weights without it give other logits
    plain = scripts["pixel"].Agent(**ckpt["model_kwargs"])
    plain.load_state_dict({k: v for k, v in ckpt["state_dict"].items() if not k.startswith("network.norm.")})
    with torch.no_grad():
        assert np.abs(plain.actor(plain.hidden(x)).numpy() - theirs_logits).max() > 1e-2


def test_eval_plays_a_sample_factory_checkpoint(sample_factory, tmp_path):
    evaluate_once(sample_factory["file"], "Sample Factory", False, tmp_path)


def test_probe_runs_on_a_sample_factory_checkpoint(sample_factory, tmp_path):
    out = tmp_path / "probe"
    run_script(PROBE, "--pixel-checkpoint", sample_factory["file"], *PROBE_INPUTS, *PROBE_TINY, "--out-dir", out,
               "--no-report", cwd=tmp_path)
    res = json.loads((out / "results.json").read_text())
    assert res["inputs"]["pixel_source"]["library"] == "Sample Factory"
    check = res["preprocessing_check"]
    assert "make_atari_env" in check["pipeline"]
    try:
        import stable_baselines3  # noqa: F401
    except ImportError:  # SF's Atari wrappers are SB3's: the check says why it could not compare
        assert not check["compared"] and "stable-baselines3" in check["reason"]
    else:
        assert check["compared"] and check["observation"]["max_abs_diff"] >= check["frame"]["max_abs_diff"]
    z = np.load(out / "activations.npz")
    assert z["act_critic"].std() > 0 and z["act_actor"].shape[1] == 4


def test_sample_factory_checkpoints_that_do_not_fit_are_refused(sample_factory, scripts, tmp_path):
    """A recurrent core, separate actor and critic encoders, a config.json whose obs_scale is null or a list or whose
    env_frameskip is no integer, a returns normaliser without its variance or with empty statistics: ValueError, one
    line (read_external_agent, the reader of both scripts). Another game in config.json, Pong's 6 actions on Breakout:
    one `error:` line each, end to end (eval and probe), nothing written. The step count is in agent steps unless
    summaries_use_frameskip is off."""
    x = sample_factory["x"][:8]
    gru, _ = save_sample_factory_run(tmp_path, "atari_2B_atari_breakout_2222", 4, x, "--use_rnn=True", updates=0)
    separate, _ = save_sample_factory_run(tmp_path, "atari_2B_atari_breakout_3333", 4, x,
                                          "--actor_critic_share_weights=False", updates=0)
    pong, _ = save_sample_factory_run(tmp_path, "atari_2B_atari_pong_1111", 6, x, updates=0)
    good = sample_factory["file"]
    cfg = json.loads((good.parent.parent / "config.json").read_text())
    ckpt = torch.load(good, map_location="cpu", weights_only=True)

    def variant(name, config=None, **model):  # the fixture's checkpoint, its config or model changed
        path = tmp_path / name / "checkpoint_p0" / good.name
        path.parent.mkdir(parents=True)
        (path.parent.parent / "config.json").write_text(json.dumps(dict(cfg, **(config or {}))))
        sd = {k: v for k, v in dict(ckpt["model"], **model).items() if v is not None}
        torch.save(dict(ckpt, model=sd), path)
        return path

    rn = "returns_normalizer.running_"
    cases = [(gru, ["recurrent core", "use_rnn"]), (separate, ["separate actor and critic"]),
             (variant("null_scale", {"obs_scale": None}), ["obs_scale None"]),
             (variant("list_scale", {"obs_scale": [255]}), ["obs_scale [255]"]),
             (variant("skip", {"env_frameskip": "4"}), ["env_frameskip", "'4'"]),
             (variant("no_var", **{rn + "var": None}), ["returns normaliser", "no running_var"]),
             (variant("empty", **{rn + "mean": torch.zeros(0)}), ["returns normaliser", "0 values"])]
    for path, needles in cases:
        with pytest.raises(ValueError) as e:
            scripts["pixel"].read_external_agent(str(path))
        assert "\n" not in str(e.value) and all(n in str(e.value) for n in needles), (path, str(e.value))
    frames = variant("frames", {"summaries_use_frameskip": False})  # env_steps are then agent steps
    assert scripts["pixel"].read_external_agent(str(frames))["global_step"] == ckpt["env_steps"] == 12348
    six = tmp_path / "six" / "checkpoint_p0" / pong.name  # Pong's network, no config.json: the game is not known
    six.parent.mkdir(parents=True)
    six.write_bytes(pong.read_bytes())
    for path, needles in [(pong, ["trained on PongNoFrameskip-v4", "not on breakout"]), (six, ["6 actions", "4"])]:
        assert_clean_error(run_script(PIXEL, "--eval-checkpoint", path, *EVAL, cwd=tmp_path, check=False), *needles)
        assert not (path.parent / "eval.json").exists()
    proc = run_script(PROBE, "--pixel-checkpoint", pong, "--ram-vars", ROOT / "ram_vars" / f"{ENV}.json", "--out-dir",
                      tmp_path / "probe", cwd=tmp_path, check=False)  # the probe: a Pong agent on Breakout's bytes
    assert_clean_error(proc, "trained on PongNoFrameskip-v4", "not on breakout")
    assert not (tmp_path / "probe").exists()


def test_torch_files_with_pickled_objects_are_refused(tmp_path):
    """A torch file that weights_only cannot read (a pickled object beside the weights, as a Sample Factory checkpoint
    holding a datetime would be) is one `error:` line that names the object; numpy scalars (numbers) are read."""
    weights = {"critic_linear.weight": torch.zeros(1, 512), "critic_linear.bias": torch.zeros(1)}
    pickled = tmp_path / "checkpoint_p0" / "checkpoint_000000001_1.pth"
    pickled.parent.mkdir()
    torch.save({"model": weights, "saved": datetime.date(2022, 10, 14)}, pickled)
    proc = run_script(PIXEL, "--eval-checkpoint", pickled, *EVAL, cwd=tmp_path, check=False)
    assert_clean_error(proc, "pickled object", "datetime.date", "weights_only")
    numbers = tmp_path / "numbers.pth"  # readable: it then fails as a layout that does not fit, saying what it holds
    torch.save({"model": weights, "best_performance": np.float64(3.5), "env_steps": np.int64(7)}, numbers)
    proc = run_script(PIXEL, "--eval-checkpoint", numbers, *EVAL, cwd=tmp_path, check=False)
    assert_clean_error(proc, "Sample Factory", "critic_linear", "not the layout")
    assert not (tmp_path / "eval.json").exists() and not (pickled.parent / "eval.json").exists()
