"""precision: auto, resolved from what torch reports (mocked here), explicit choices win."""
import pytest
import torch

from advrbd_plugin.engine import Engine
from advrbd_plugin.engine import precision as prec

CPU = torch.device("cpu")


def _cpu(capability, bf16=None, amx=None, isa=None):
    return {"capability": capability, "avx512_bf16": bf16, "amx": amx, "onednn_max_isa": isa}


def _never_probe():
    raise AssertionError("the probe ran although the capability decides")


@pytest.mark.parametrize("features, expected", [
    (_cpu("AVX2", bf16=False, amx=False), "fp32"),          # the EPYC/laptop kind: emulated bf16
    (_cpu("AVX2", bf16=True, amx=False), "fp32"),           # ATen forced to AVX2: no native path
    (_cpu("DEFAULT"), "fp32"),
    (_cpu("AVX512", bf16=True, amx=False), "bf16"),          # AMD EPYC Zen 4 (AVX512-BF16)
    (_cpu("AVX512", bf16=True, amx=True), "bf16"),           # Sapphire Rapids (AMX)
    (_cpu("AVX512", bf16=False, amx=False), "fp32"),         # Skylake-X / Cascade Lake
    (_cpu("AVX512_BF16"), "bf16"),
    (_cpu("AMX"), "bf16"),
    (_cpu("AVX512", bf16=True, isa="AVX2"), "fp32"),         # oneDNN capped below its bf16 kernels
])
def test_cpu_rules_follow_the_capability(features, expected):
    got, why = prec.resolve_precision("auto", CPU, features=features, probe=_never_probe)
    assert got == expected and why


@pytest.mark.parametrize("faster, expected", [(True, "bf16"), (False, "fp32")])
def test_unreadable_capability_is_measured(faster, expected):
    calls = []
    got, why = prec.resolve_precision("auto", CPU, features=_cpu("SVE256"),
                                      probe=lambda: calls.append(1) or faster)
    assert got == expected and calls == [1] and "micro-probe" in why
    for unknown in (_cpu("AVX512"), _cpu("AVX512", amx=False)):  # old torch: no bf16 query
        got, _ = prec.resolve_precision("auto", CPU, features=unknown, probe=lambda: faster)
        assert got == expected


@pytest.mark.parametrize("requested", ["bf16", "fp16", "fp32"])
def test_explicit_choice_always_wins(requested):
    for features in (_cpu("AVX2"), _cpu("AVX512", bf16=True)):
        assert prec.resolve_precision(requested, CPU, features=features, probe=_never_probe) == \
            (requested, "explicit")


@pytest.mark.parametrize("capability, expected", [((9, 0), "bf16"), ((8, 0), "bf16"),
                                                  ((7, 5), "fp16"), ((7, 0), "fp16"),
                                                  ((6, 1), "fp32")])
def test_cuda_rules(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "mock GPU")
    got, why = prec.resolve_precision("auto", torch.device("cuda"))
    assert got == expected and "mock GPU" in why
    assert prec.resolve_precision("fp32", torch.device("cuda")) == ("fp32", "explicit")


def test_engine_resolves_auto_and_reports_it(monkeypatch):
    monkeypatch.setattr(prec, "cpu_features", lambda: _cpu("AVX2", bf16=False, amx=False))
    eng = Engine(device="cpu", quiet=True)
    assert eng.precision == "fp32" and "AVX2" in eng.precision_reason
    info = eng.describe()
    assert info["precision"] == "fp32" and info["device"] == "cpu" and info["threads"] >= 1
    assert Engine(device="cpu", precision="bf16").precision == "bf16"
    with pytest.raises(ValueError, match="precision: expected one of auto, bf16, fp16, fp32"):
        Engine(device="cpu", precision="half")


def test_probe_returns_a_bool():
    assert prec.probe_cpu_bf16() in (True, False)


def test_run_metrics_name_the_precision(tmp_path):
    from advrbd_plugin.runner import run

    m = run(dataset="digits", preset="smoke", out=str(tmp_path), quiet=True,
            sets=["train.epochs=1"])
    assert m["engine"]["precision"] in ("bf16", "fp32") and m["engine"]["precision_reason"]


RESULTS = __import__("pathlib").Path(__file__).resolve().parents[1] / "benchmarks" / "results"
#: The committed engine tables and the CPU features of the machine each was measured on
#: (engine_cpu.json predates the avx512_bf16 field; its md names the CPU's AVX512-BF16).
TABLES = {"engine_cpu.json": {"avx512_bf16": True},
          "engine_cpu_avx512.json": {},
          "engine_cpu_avx2_emulated.json": {}}


@pytest.mark.parametrize("table", sorted(TABLES))
def test_auto_is_within_10_percent_of_the_best_measured_path(table):
    import json

    path = RESULTS / table
    if not path.is_file():
        pytest.skip(f"{path} not committed")
    data = json.loads(path.read_text())
    mach, caps = data["machine"], data.get("env_caps") or {}
    features = _cpu(mach["isa"], bf16=mach.get("avx512_bf16"), amx=mach.get("amx"),
                    isa=caps.get("ONEDNN_MAX_CPU_ISA"))
    features.update(TABLES[table])
    picked, _ = prec.resolve_precision("auto", CPU, features=features, probe=_never_probe)
    for row in data["rows"]:
        explicit = {k[:-6]: v for k, v in row.items() if k.endswith("_img_s")
                    and not k.startswith(("eval", "auto")) and "compile" not in k}
        best = max(explicit.values())
        assert explicit[picked] >= 0.9 * best, (table, row["model"], picked, explicit)
