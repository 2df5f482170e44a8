"""Config loading: defaults, presets, overrides, and one clear message per kind of error."""

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from climit import config as C

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_validate_and_round_trip():
    cfg = C.load()
    assert C.from_dict(C.to_dict(cfg)) == cfg
    assert hash(cfg) == hash(C.from_dict(C.to_dict(cfg)))


def test_overrides_are_typed():
    cfg = C.load(None, ["teacher.lr=3e-4", "teacher.hidden=[32, 16]", "imitator.dropout=0.1",
                        "teacher.dueling=true", "run.name=x"])
    assert cfg.teacher.lr == 3e-4 and isinstance(cfg.teacher.lr, float)
    assert cfg.teacher.hidden == (32, 16)
    assert cfg.teacher.dueling is True and cfg.run.name == "x"


def test_numbers_read_as_yaml_1_2_decimal_in_files_and_overrides(tmp_path):
    # YAML 1.1 (PyYAML) read 010 as octal 8 and 1:30 as base-60 90, silently: here 010 is 10,
    # 0001 stays a name, and 1:30 is refused; a `<<:` merge works with explicit keys winning.
    cfg = C.load(None, ["run.seed=010", "teacher.hidden=[010]"])
    assert (cfg.run.seed, cfg.teacher.hidden) == (10, (10,))
    for override, key in (("teacher.lr=1:30", "teacher.lr"),
                          ("teacher.seeds=1:30", "teacher.seeds"),
                          ("teacher.hidden=[0x10]", r"teacher.hidden\[0\]")):
        with pytest.raises(C.ConfigError, match=key + ": expected"):
            C.load(None, [override])
    (tmp_path / "p.yaml").write_text("run:\n  name: 0001\n  seed: 010\n"
                                     "teacher:\n  <<: {lr: 0.002, gamma: 0.5}\n  gamma: 0.9\n")
    cfg = C.load(tmp_path / "p.yaml")
    assert ((cfg.run.name, cfg.run.seed, cfg.teacher.lr, cfg.teacher.gamma)
            == ("0001", 10, 0.002, 0.9))
    with pytest.raises(C.ConfigError,
                       match="teacher.sweep: key 'lr' is given twice in one mapping"):
        C.load(None, ["teacher.sweep={lr: [1e-3], lr: [2e-3]}"])


def test_int_accepts_integral_float_but_not_fraction():
    assert C.load(None, ["teacher.total_env_steps=1e5"]).teacher.total_env_steps == 100_000
    with pytest.raises(C.ConfigError, match="teacher.batch_size: expected an integer"):
        C.load(None, ["teacher.batch_size=1.5"])


def test_preset_extends_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("teacher:\n  lr: 1.0e-4\n  seeds: 3\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nteacher:\n  seeds: 5\n")
    cfg = C.load(tmp_path / "child.yaml", ["teacher.gamma=0.9"])
    assert (cfg.teacher.lr, cfg.teacher.seeds, cfg.teacher.gamma) == (1e-4, 5, 0.9)



def test_a_section_with_every_key_commented_out_changes_nothing(tmp_path):
    """It reads as None; neither an error nor a wipe of the section of the file it extends."""
    (tmp_path / "base.yaml").write_text("teacher:\n  seeds: 3\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nteacher:\n  # seeds: 5\n"
                                         "imitator:\n  # d_model: 32\n")
    cfg = C.load(tmp_path / "child.yaml", ["imitator.n_layers=3"])
    assert (cfg.teacher.seeds, cfg.imitator.d_model, cfg.imitator.n_layers) == (3, 64, 3)
    (tmp_path / "typo.yaml").write_text("teachr:\n  # seeds: 5\n")
    with pytest.raises(C.ConfigError, match="teachr: unknown key"):
        C.load(tmp_path / "typo.yaml")


def test_a_missing_extends_target_names_the_file_that_extends_it(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {tmp_path / 'missing.yaml'}\n")
    with pytest.raises(C.ConfigError) as e:
        C.load(child)
    assert f"{child} extends {tmp_path / 'missing.yaml'}, which does not exist" in str(e.value)


def test_config_diff_names_sections_keys_and_dotted_keys_in_order():
    saved = {"run.seed": 0, "imitator": {"n_layers": 2, "lr": 1e-3}}
    now = {"imitator": {"n_layers": 2, "lr": 5e-4, "new": 1}, "run.seed": 1}
    assert C.config_diff(saved, now) == ["imitator.lr: 0.001 -> 0.0005", "imitator.new: None -> 1",
                                         "run.seed: 0 -> 1"]
    assert C.config_diff(now, now) == []

def test_the_sweep_doc_names_every_sweepable_key():
    # --help and the README's config reference are where a user finds what teacher.sweep takes
    # (the README's sweep section points there rather than keeping its own list).
    doc = {key: doc for key, _, _, doc in C.reference()}["teacher.sweep"]
    assert all(re.search(rf"\b{k}\b", doc) for k in C.TeacherConfig.SWEEPABLE), doc


def test_sweep_mapping():
    cfg = C.load(None, ["teacher.sweep={lr: [1e-3, 3e-4], gamma: [0.9, 0.99]}"])
    assert dict(cfg.teacher.sweep) == {"lr": (1e-3, 3e-4), "gamma": (0.9, 0.99)}
    hash(cfg)
    with pytest.raises(C.ConfigError, match="teacher.sweep.hidden: cannot be swept"):
        C.load(None, ["teacher.sweep={hidden: [1]}"])
    with pytest.raises(C.ConfigError, match="same number of values"):
        C.load(None, ["teacher.sweep={lr: [1e-3], gamma: [0.9, 0.99]}"])


@pytest.mark.parametrize("override, message", [
    ("teacher.lrr=1", "teacher.lrr: unknown key (did you mean 'lr'?); allowed: "),
    ("teacher.zzz=1", "teacher.zzz: unknown key; allowed: "),  # nothing close: no guess
    # other codebases' names, whose closest spelling here is another key (learning_starts)
    ("teacher.learning_rate=1", "teacher.learning_rate: unknown key (did you mean 'lr'?)"),
    ("imitator.learning_rate=1", "imitator.learning_rate: unknown key (did you mean 'lr'?)"),
    ("teacher.discount=0.9", "teacher.discount: unknown key (did you mean 'gamma'?)"),
    # a key of another section is named there, not as its nearest neighbour here
    ("teacher.seed=1", "teacher.seed: unknown key (did you mean 'run.seed'?); allowed: "),
    ("eval.seeds=2", "eval.seeds: unknown key (did you mean 'teacher.seeds' or "
     "'imitator.seeds'?)"),
    ("bogus.x=1", "bogus: unknown key; allowed: run, env"),
    ("tacher.lr=1", "tacher: unknown key (did you mean 'teacher'?); allowed: run, env"),
    ("teacher.lr=fast", "teacher.lr: expected a number, got 'fast'"),
    ("teacher.lr=-1", "teacher.lr: must be > 0.0"),
    ("teacher.lr=.nan", "teacher.lr: expected a number, got nan"),  # no bound refuses NaN
    ("teacher.lr=null", "teacher.lr: expected a number, got None"),  # not the default, silently
    ("teacher.hidden=64", "teacher.hidden: expected a list of an integer, got 64"),
    ("teacher.batch_size=-4", "teacher.batch_size: must be >= 1"),
    ("teacher.dueling=3", "teacher.dueling: expected true/false"),
    ("teacher.loss=l1", "teacher.loss: expected one of 'huber', 'mse'"),
    ("imitator.context_len=0", "imitator.context_len: must be >= 1"),
    ("eval.tasks=18", "eval.tasks: 18 exceeds the 17 held-out tasks of darkroom"),
    ("env.name=pong", "env.name: unknown environment 'pong'; allowed: "),
    ("env.name=cartpole", "env.name: unknown environment 'cartpole' (did you mean "
     "'CartPole-v1'?)"),  # case aside
    ("env.transfer=key_door", "env.transfer: unknown environment 'key_door' (did you mean "
     "'keydoor'?)"),
    ("env.transfer=CartPole-v1", "env.transfer: CartPole-v1 uses interface 'control' but "
     "darkroom uses 'grid'; test (c) needs the same interface: set env.transfer to one of "
     "darkroom_hard, keydoor, or to '' to skip test (c)"),
    ("env.transfer=darkroom", "env.transfer: darkroom is env.name itself"),
    ("teacher.batch_size=100000", "teacher.batch_size: 100000 exceeds buffer_size"),

    ("imitator.n_heads=3", "imitator.d_model: 64 is not divisible by n_heads 3"),
    ("teacher.sweep={eps_decay_steps: [100.5]}",
     "teacher.sweep.eps_decay_steps[0]: expected an integer"),
    ("teacher.snapshot_steps=[200, 200]",
     "teacher.snapshot_steps: must be positive and strictly increasing"),
    ("run.seed=-1", "run.seed: must be >= 0"),
    ("teacher.total_env_steps=3e9", "teacher.total_env_steps: must be <= 2147483647"),
    ("teacher.eval_episodes=200000000", "teacher.eval_episodes: 200000000 episodes of up to 20 "
                                        "steps exceed the 2147483647 steps of one rollout"),
])
def test_errors_name_the_key(override, message):
    with pytest.raises(C.ConfigError) as e:
        C.load(None, [override])
    assert message in str(e.value)


@pytest.mark.parametrize("overrides, message", [
    # two envs would share a replay row in one write (which one lands is unspecified)
    (["teacher.num_envs=4", "teacher.buffer_size=2", "teacher.batch_size=2"],
     "teacher.num_envs: 4 exceeds buffer_size 2"),
    # the int32 update counter (hard target copies) would wrap
    (["teacher.total_env_steps=1.2e9", "teacher.updates_per_train=2"],
     "teacher.updates_per_train: 2 per round every 1 of 1200000000 vector steps makes "
     "2400000000 TD updates per learner, more than 2147483647"),
])
def test_impossible_teacher_sizes(overrides, message):
    with pytest.raises(C.ConfigError) as e:
        C.load(None, overrides)
    assert message in str(e.value)
    C.load(None, overrides[1:])  # fine without the first



def test_transfer_to_another_variant_of_the_same_family_stays_allowed():
    assert C.load(None, ["env.transfer=darkroom_hard"]).env.transfer == "darkroom_hard"

def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(C.ConfigError, match="section.key=value"):
        C.load(None, ["teacher.lr"])
    with pytest.raises(C.ConfigError, match="no such file"):
        C.load(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("teacher: [1, 2\n")
    with pytest.raises(C.ConfigError, match="not valid YAML"):
        C.load(tmp_path / "bad.yaml")


def test_strings_stay_strings_and_numbers_parse_only_for_numeric_fields(tmp_path):
    """A name that looks like a number is kept as written (it is a directory); a numeric
    field takes YAML 1.1's string forms of numbers (1e-3 is a string to PyYAML)."""
    cfg = C.load(None, ['run.name="007"', "run.runs_dir=2024.10", "teacher.lr=1e-3",
                        "teacher.total_env_steps=1e4"])
    assert (cfg.run.name, cfg.run.runs_dir) == ("007", "2024.10")
    assert (cfg.teacher.lr, cfg.teacher.total_env_steps) == (1e-3, 10000)
    assert C.load(None, ["run.name=0001"]).run.name == "0001"
    (tmp_path / "p.yaml").write_text('run:\n  name: "007"\nteacher:\n  lr: 1e-3\n')
    cfg = C.load(tmp_path / "p.yaml")
    assert (cfg.run.name, cfg.teacher.lr) == ("007", 1e-3)


@pytest.mark.parametrize("text, message", [
    ("teacher:\n  lr: 0.1\n  lr: 0.2\n", "key 'lr' is given twice in one mapping (line 2"),
    ("teacher:\n  2: 3\n  foo: 1\n", "teacher.2: unknown key"),
    (b"\xd0\xcf\x11\xe0 binary", "is not valid YAML: 'utf-8' codec can't decode"),
    ("run:\n  seed: 99999999999999999999\n", "run.seed: must be <= 4294967295"),
    # YAML 1.1 reads `no` as false: not the run name "False"; an empty value is not the default
    ("run:\n  name: no\n", "run.name: expected a string, got False"),
    ("teacher:\n  lr:\n", "teacher.lr: expected a number, got None"),
])
def test_bad_preset_files_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(C.ConfigError) as e:
        C.load(path)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_configs_are_frozen():
    cfg = C.load()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.teacher.lr = 1.0  # type: ignore[misc]


def test_every_field_documented():
    for key, _, _, doc in C.reference():
        assert doc and "\n" not in doc, key


def test_presets_load():
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        C.load(path)


def test_cli_config_error_exits_nonzero_and_writes_nothing(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    for args in (["config", "teacher.lr=-1"], ["config", "nope.x=1"],
                 ["config", f"run.runs_dir={tmp_path}/runs", "teacher.batch_size=0"]):
        r = subprocess.run([sys.executable, "-m", "climit.cli", *args], capture_output=True,
                           text=True, env=env, cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("climit: config error: ") and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_readme_references_are_current():
    from climit import docs

    readme = (ROOT / "README.md").read_text()
    assert docs.render(readme) == readme, (
        "README's CLI/config reference or interface table is stale: run `python -m climit.docs`")


@pytest.mark.parametrize("args, message", [
    (["rollout", "--env", "nope"], "unknown environment 'nope'; `climit envs` lists them"),
    (["rollout", "--env", "breakout"], "unknown environment 'breakout' (did you mean "
     "'Breakout-MinAtar'?)"),
    (["rollout", "--heads", "3"], "--d-model 64 is not divisible by --heads 3"),
    (["imitator", "--steps", "0"], "argument --steps: must be at least 1, got 0"),
    (["rollout", "--batch", "0"], "argument --batch: must be at least 1, got 0"),
    (["teacher", "--learners", "2", "0"], "argument --learners: must be at least 1, got 0"),
    # a peer asked for and missing: said before measuring anything (it used to come after)
    (["rollout", "--peer", "--peer-script", "/nonexistent/icrl_rollout_bench.py"],
     "peer benchmark not found at /nonexistent/icrl_rollout_bench.py; pass --peer-script"),
])
def test_bench_refuses_impossible_sizes_before_any_work(args, message, capsys):
    from climit import cli

    try:
        code = cli.main(["bench", *args])
    except SystemExit as e:  # argparse's own usage error
        code = e.code
    captured = capsys.readouterr()
    assert code in (1, 2) and message in captured.err and captured.out == ""  # nothing measured


@pytest.mark.parametrize("override, key", [("teacher.lr=0", "teacher.lr"),
                                           ("imitator.ed_fraction=0", "imitator.ed_fraction"),
                                           ("eval.final_frac=0", "eval.final_frac")])
def test_an_exclusive_minimum_refuses_the_bound_itself(override, key):
    with pytest.raises(C.ConfigError, match=f"{key}: must be > 0.0, got 0"):
        C.load(None, [override])


def test_a_presets_sweep_replaces_the_sweep_of_the_file_it_extends(tmp_path):
    (tmp_path / "base.yaml").write_text("teacher:\n  sweep: {lr: [0.001, 0.0003]}\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\n"
                                         "teacher:\n  sweep: {gamma: [0.9, 0.99]}\n")
    cfg = C.load(tmp_path / "child.yaml")
    assert dict(cfg.teacher.sweep) == {"gamma": (0.9, 0.99)}


def test_q_log_period_that_does_not_divide_the_run_is_refused_at_load():
    # chunk_steps 1000 and q_log_period 100: the last chunk is 50 steps, which
    # dqn.make_chunk refuses only at run time, after 20000 steps of training.
    with pytest.raises(C.ConfigError, match="teacher.q_log_period: 100 must divide "
                                                 "chunk_steps 1000 and the 20050 vector steps"):
        C.load(None, ["teacher.total_env_steps=20050"])


def test_warmup_as_long_as_training_is_refused():
    with pytest.raises(C.ConfigError, match="imitator.warmup_steps: 300 must be below "
                                                 "train_steps 300"):
        C.load(None, ["imitator.warmup_steps=300"])


def test_more_train_tasks_than_the_env_has_is_a_config_error():
    with pytest.raises(C.ConfigError, match="env.train_tasks: 65 exceeds the 64 train "
                                                 "tasks of darkroom"):
        C.load(None, ["env.train_tasks=65"])


# Known answers for mutants that survived the suite: each pins one rule of loading or checking.

def test_overrides_win_over_the_preset_and_a_numeric_name_in_a_file_stays_a_name(tmp_path):
    (tmp_path / "p.yaml").write_text("run:\n  name: 123\nteacher:\n  seeds: 3\n")
    cfg = C.load(tmp_path / "p.yaml", ["teacher.seeds=4"])
    assert (cfg.run.name, cfg.teacher.seeds) == ("123", 4)


@pytest.mark.parametrize("override, message", [
    ("teacher.network=minatar", "teacher.hidden: the MinAtar network (conv + one dense layer) "
                                "takes one width"),
    ("imitator.n_heads=64", "imitator.n_heads: head size d_model/n_heads = 1 must be even"),
    ("teacher.learning_starts=20000", "teacher.learning_starts: 20000 leaves no updates"),
    ("teacher.snapshot_steps=[0, 100]", "teacher.snapshot_steps: must be positive"),
    ("teacher.sweep={lr: []}", "teacher.sweep.lr: needs at least one value"),
    ("teacher.sweep={lr: [1e-3, -1]}", "teacher.sweep.lr[1]: must be > 0.0, got -1"),
    ("imitator.horizon=20001", "imitator.horizon: 20001 exceeds teacher.total_env_steps 20000"),
    ("eval.transfer_tasks=1297", "eval.transfer_tasks: 1297 exceeds the 1296 held-out tasks"),
    ("run.name=a/b", "run.name: must be a plain directory name, got 'a/b'"),
])
def test_checks_refuse_the_first_value_past_their_edge(override, message):
    with pytest.raises(C.ConfigError) as e:
        C.load(None, [override])
    assert message in str(e.value)


def test_transfer_tasks_without_a_transfer_family_are_refused():
    # There is no family to count them in.
    with pytest.raises(C.ConfigError, match="eval.transfer_tasks: sets test .c.'s tasks, but "
                                            "env.transfer names no new family"):
        C.load(None, ["env.transfer=", "eval.transfer_tasks=3"])


def test_checks_accept_the_values_at_their_edge():
    cfg = C.load(None, ["teacher.learning_starts=19999", "imitator.horizon=20000",
                        "eval.transfer_tasks=1296", "teacher.snapshot_steps=[1, 100]"])
    assert (cfg.imitator.horizon, cfg.eval.transfer_tasks) == (20000, 1296)
    # Update rounds come every train_every vector steps: 1.2e9 steps / 2 x 2 fit the counter.
    cfg = C.load(None, ["teacher.total_env_steps=1.2e9", "teacher.updates_per_train=2",
                        "teacher.train_every=2"])
    assert cfg.teacher.updates_per_train == 2
    # As many envs as replay rows: each env still writes its own row.
    assert C.load(None, ["teacher.num_envs=2", "teacher.buffer_size=2",
                         "teacher.batch_size=2"]).teacher.num_envs == 2


def test_fingerprints_leave_out_storage_fields_and_added_fields_at_their_default():
    base = C.load()
    stored = C.load(None, ["teacher.checkpoint_every=3", "teacher.keep_checkpoints=5"])
    assert C.teacher_identity(stored.teacher) == C.teacher_identity(base.teacher)
    lr = C.load(None, ["teacher.lr=0.002"])
    assert C.fingerprint(C.teacher_identity(lr.teacher)) != \
        C.fingerprint(C.teacher_identity(base.teacher))
    # eval.transfer_tasks came after runs were recorded: out of the hash at 0 only.
    without = {k: v for k, v in C.to_dict(base.eval).items() if k != "transfer_tasks"}
    assert C.fingerprint(base.eval) == C.fingerprint(without)
    assert C.fingerprint(C.load(None, ["eval.transfer_tasks=3"]).eval) != C.fingerprint(base.eval)


def test_a_teacher_or_histories_field_added_at_its_default_changes_no_earlier_run(monkeypatch):
    # The teacher and histories sections reach fingerprints and resume checks as plain dicts:
    # a field registered in ADDED_FIELDS must drop out there too, or every earlier run (whose
    # stored config lacks it) trains again and an interrupted teacher refuses to resume.
    from climit.teacher import train as teacher_train

    monkeypatch.setitem(C.ADDED_FIELDS, C.TeacherConfig, {"double": True})
    monkeypatch.setitem(C.ADDED_FIELDS, C.HistoriesConfig, {"record_q": True})
    now = C.to_dict(C.load())
    before = {**now, "teacher": {k: v for k, v in now["teacher"].items() if k != "double"},
              "histories": {k: v for k, v in now["histories"].items() if k != "record_q"}}
    assert C.teacher_identity(before["teacher"]) == C.teacher_identity(now["teacher"])
    assert teacher_train._config_diff(before, now) == []
    other = C.to_dict(C.load(None, ["teacher.double=false", "histories.record_q=false"]))
    assert teacher_train._config_diff(before, other) == [
        "histories.record_q: None -> False", "teacher.double: None -> False"]


def test_a_transfer_env_when_no_other_env_shares_the_interface_is_told_to_skip_test_c():
    with pytest.raises(C.ConfigError) as e:
        C.load(None, ["env.name=DeepSea-bsuite", "env.train_tasks=1", "eval.tasks=1"])
    assert str(e.value).endswith("test (c) needs the same interface: no other environment has "
                                 "it: set env.transfer to '' to skip test (c)")


def test_a_field_added_with_a_tuple_default_drops_out_of_the_fingerprint(monkeypatch):
    # A tuple default is held as a list in a section dict (to_dict, or a config.yaml read
    # back): registered as the tuple the field declares, it must still drop out.
    monkeypatch.setitem(C.ADDED_FIELDS, C.TeacherConfig, {"hidden": (64, 64)})
    now = C.to_dict(C.load())["teacher"]
    assert now["hidden"] == [64, 64]
    before = {k: v for k, v in now.items() if k != "hidden"}
    assert C.teacher_identity(before) == C.teacher_identity(now)
    wider = C.to_dict(C.load(None, ["teacher.hidden=[128,128]"]))["teacher"]
    assert C.teacher_identity(wider) != C.teacher_identity(before)


def test_the_default_configs_fingerprints_are_pinned():
    # Every run made with the defaults is found again by these: a change here retrains (or
    # refuses to resume) every earlier run. A new field of a fingerprinted section belongs in
    # config.ADDED_FIELDS with its default; change a pin only for a deliberate change of what
    # the stage computes (then say so in the commit).
    from climit import evaluate
    from climit.imitator import train as imitator_train
    from climit.teacher import train as teacher_train

    cfg = C.load()
    assert teacher_train.fingerprint(cfg) == "287564e372b43dd8"
    assert imitator_train.fingerprint(cfg) == "2d8e715e520cf386"
    assert evaluate.fingerprint(cfg) == "82e33c08e05af623"


def test_a_cycle_of_presets_an_extends_that_is_no_path_and_an_empty_key_part_are_named(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(C.ConfigError, match="extends: cycle through .*a.yaml"):
        C.load(tmp_path / "a.yaml")
    (tmp_path / "n.yaml").write_text("extends: 3\n")
    with pytest.raises(C.ConfigError, match="extends: expected a path, got 3"):
        C.load(tmp_path / "n.yaml")
    for override in ("teacher.=1", "teacher..lr=1"):
        with pytest.raises(C.ConfigError, match="an override key must be section.key"):
            C.load(None, [override])


def test_every_ablation_the_evaluation_accepts_is_an_imitator_variant():
    # eval.ablation names the imitator variant trained as the context-ablated control: a name
    # that is no variant would pass the config and fail only when its imitator is trained.
    import typing

    hints = lambda cls: typing.get_type_hints(cls)  # noqa: E731
    ablations = set(typing.get_args(hints(C.EvalConfig)["ablation"]))
    variants = set(typing.get_args(hints(C.ImitatorConfig)["variant"]))
    assert ablations and ablations <= variants - {"ad", "ed"}


def test_a_stored_config_is_read_as_today_unless_it_cannot_be():
    older = C.to_dict(C.load(None, []))
    del older["eval"]["transfer_tasks"]
    assert C.as_read_now(older) == C.to_dict(C.load(None, []))
    gone = {**older, "removed_section": {"x": 1}}  # a field this version no longer has
    assert C.as_read_now(gone) is gone
    assert C.as_read_now({}) == {}  # nothing recorded is not the defaults
