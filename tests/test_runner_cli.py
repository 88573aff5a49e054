"""Runner and CLI: end-to-end on digits (smoke), external plugins, config errors."""
import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import advrbd_plugin as ap
from advrbd_plugin import cli, runner
from advrbd_plugin.defenses import Defense, DefenseConfig
from advrbd_plugin.types import DefenseResult

FAST = ["train.epochs=1", "monitor_size=50"]


def test_run_clean_digits_writes_run_folder(tmp_path, capsys):
    code = cli.main(["run", "--dataset", "digits", "--preset", "smoke", "--out", str(tmp_path),
                     "--quiet", "--set", "train.epochs=1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "ACC %" in out and "none" in out
    folder = tmp_path / "digits" / "none" / "none" / "0"
    m = json.loads((folder / "metrics.json").read_text())
    assert 0 <= m["acc"] <= 1 and m["asr"] is None and "acc" in m["definitions"]
    assert (folder / "config.yaml").is_file() and (folder / "model.pt").is_file()


def test_external_defense_runs_through_runner(tmp_path):
    calls = []

    @dataclass
    class EchoConfig(DefenseConfig):
        flag_all: bool = False

    @ap.DEFENSES.register("echo_test")
    class Echo(Defense):
        Config = EchoConfig

        def run(self, data, model, *, clean_set, monitor):
            calls.append(data.truth)
            import torch
            return DefenseResult(model=model, poison_mask=torch.full((len(data),), self.config.flag_all))

    try:
        m = runner.run(dataset="digits", preset="smoke", attack="badnet", defense="echo_test",
                       out=str(tmp_path), quiet=True, sets=FAST + ["defense.flag_all=true"])
        assert calls == [None]  # the defense never sees the ground truth
        assert m["detection"]["tpr"] == 1.0 and m["detection"]["fpr"] == 1.0
    finally:
        ap.DEFENSES.unregister("echo_test")


def test_entry_point_defense(monkeypatch, tmp_path):
    class EP:
        name, value = "ep_def", "thirdparty:EpDef"

        def load(self):
            @ap.DEFENSES.register("ep_def")
            class EpDef(Defense):
                def run(self, data, model, *, clean_set, monitor):
                    return DefenseResult(model=model)
            return EpDef

    monkeypatch.setattr("advrbd_plugin.registry._entry_points",
                        lambda group: [EP()] if group == "advrbd_plugin.defenses" else [])
    monkeypatch.setattr(ap.DEFENSES, "_loaded", False)
    try:
        assert "ep_def" in ap.DEFENSES.names()
        m = runner.run(dataset="digits", preset="smoke", defense="ep_def", out=str(tmp_path),
                       quiet=True, sets=FAST)
        assert m["defense"] == "ep_def"
    finally:
        ap.DEFENSES.unregister("ep_def")


def test_config_errors():
    with pytest.raises(ValueError, match="unknown config key 'train.epoch'.*epochs"):
        runner.resolve_config(sets=["train.epoch=3"])
    with pytest.raises(ValueError, match="unknown config key 'defense.epz'"):
        runner.resolve_config(defense="advrbd", sets=["defense.epz=0.1"])
    with pytest.raises(ValueError, match="unknown preset"):
        runner.resolve_config(preset="huge")
    cfg = runner.resolve_config(preset="smoke", defense="advrbd", sets=["defense.eps=0.05"], seed=3)
    assert cfg["defense"]["eps"] == 0.05 and cfg["seed"] == 3 and cfg["train"]["epochs"] == 3


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["run", "--dataset", f"npz:{tmp_path}/missing.npz", "--out", str(tmp_path)]) == 2
    assert "missing.npz" in capsys.readouterr().err
    assert cli.main(["run", "--defense", "advrbdd", "--out", str(tmp_path)]) == 2
    assert "Did you mean 'advrbd'" in capsys.readouterr().err


def test_list_and_show_config(capsys):
    assert cli.main(["list", "models"]) == 0
    assert "resnet20" in capsys.readouterr().out
    assert cli.main(["show-config", "--preset", "cpu", "--defense", "advrbd"]) == 0
    out = capsys.readouterr().out
    assert "model: resnet9" in out and "eps:" in out


def test_monitor_samples_every_class_of_a_sorted_test_set(tmp_path):
    """Histories must not see only the first classes of a class-sorted test set."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 50)
    x = rng.integers(0, 256, (200, 8, 8, 3), dtype=np.uint8)
    path = tmp_path / "sorted.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)
    cfg = runner.resolve_config(sets=["monitor_size=40", "attack.name=none"],
                                dataset=f"npz:{path}", preset="smoke")
    exp = runner.Experiment(cfg)
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, xb):
            seen.append(len(xb))
            return torch.zeros(len(xb), 4)

    monitor = exp.monitor()
    assert monitor is not None
    # predicting class 0 everywhere scores 1.0 on the first 40 sorted samples, ~0.25 on a random 40
    assert monitor(Spy())["acc"] < 0.6 and sum(seen) == 40


def test_diverging_run_fails_clearly_and_writes_no_results(tmp_path, capsys):
    code = cli.main(["run", "--dataset", "digits", "--preset", "smoke", "--out", str(tmp_path),
                     "--set", "train.lr=1e12", "--set", "train.schedule=constant", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "diverged" in err and "learning rate" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("metrics.json")) and not list(tmp_path.rglob("model.pt"))


def test_collapsed_model_is_named_in_the_metrics():
    import torch

    from advrbd_plugin.runner import prediction_spread

    one = prediction_spread(torch.full((500,), 3), 10)
    assert one["predicted_classes"] == 1 and "predicts class 3 for 100.0%" in one["warnings"][0]
    spread = prediction_spread(torch.arange(500) % 10, 10)
    assert spread == {"predicted_classes": 10, "warnings": []}


@pytest.mark.parametrize("defense, own", [("advrbd", ("advrbd cluster", "features")),
                                           ("advrbd_paper", ("advrbd relabel",))])
def test_every_long_pass_shows_progress_and_quiet_silences_it(defense, own, tmp_path, capsys):
    argv = ["run", "--dataset", "digits", "--attack", "badnet", "--defense", defense, "--preset",
            "smoke", "--set", "train.epochs=1", "--precision", "fp32"]
    assert cli.main(argv + ["--out", str(tmp_path / "loud")]) == 0
    err = capsys.readouterr().err
    for stage in ("advrbd warm-up", "advrbd partition", "advrbd enhance 2/2: ranking", "advrbd clean",
                  *own, "evaluate: clean test set", "evaluate: triggered test set"):
        assert stage in err, stage
    assert "advrbd: cpu, fp32 (explicit)" in err
    assert cli.main(argv + ["--out", str(tmp_path / "quiet"), "--quiet"]) == 0
    quiet = capsys.readouterr().err  # warnings (ours or third-party) may remain; no progress
    ours = [line for line in quiet.splitlines() if line.startswith("advrbd:")]
    assert "it/s" not in quiet and "%|" not in quiet, quiet[-500:]
    assert all(line.startswith("advrbd: warning:") for line in ours), ours
