"""``python -m minivgg.bench --ablate``: the default route and each switch flipped, one subprocess each, and
the table of each transformation's gain, run through its whole code path at 32 px."""
from __future__ import annotations

import dataclasses
import json

from minivgg import bench
from minivgg.fast.transforms import Transforms


def test_the_ablation_flips_each_switch_once_from_the_default_route():
    for device in ("cpu", "gpu"):
        cases = bench.ablation_cases(device)
        default = dataclasses.asdict(Transforms.default(device))
        assert cases[0] == ("default", default) and len(cases) == 1 + len(Transforms.names())
        for (label, switches), name in zip(cases[1:], Transforms.names()):
            assert {k for k in switches if switches[k] != default[k]} == {name}
            assert label == f"{name}-{'on' if switches[name] else 'off'}"
    assert [label for label, _ in bench.ablation_cases("cpu")][-1] == "lean-off"     # on by default: CPU
    assert [label for label, _ in bench.ablation_cases("gpu")][-1] == "lean-on"
    assert "channels_last-on" in dict(bench.ablation_cases("gpu"))


def test_the_gains_are_off_over_on_whichever_way_a_switch_was_flipped():
    mb = 2**20
    rows = [{"size": 64, "switch": "default", "seconds_per_eval": 1.0, "peak_rss_bytes": 100 * mb},
            {"size": 64, "switch": "winograd-off", "seconds_per_eval": 2.5, "peak_rss_bytes": 130 * mb},
            {"size": 64, "switch": "lean-on", "seconds_per_eval": 1.25, "peak_rss_bytes": 60 * mb},
            {"size": 64, "switch": "inplace-off", "error": "boom"}]
    table = bench.ablation_table(rows).splitlines()
    assert table[1].split() == ["winograd", "64", "1.000", "2.500", "2.50x", "100", "130", "30"]
    assert table[2].split() == ["lean", "64", "1.250", "1.000", "0.80x", "60", "100", "40"]
    assert table[3].split()[:3] == ["inplace", "64", "failed:"]


def test_the_ablation_runs_end_to_end_at_32_pixels(capsys):
    code = bench.main(["--sizes", "32", "--ablate", "--repeats", "1", "--warmup", "0", "--weights", "random",
                       "--json"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert code == 0 and [r["switch"] for r in rows] == [label for label, _ in bench.ablation_cases("cpu")]
    # each case's network ran the route its label names, not the default one
    assert [r["transforms"] for r in rows] == [switches for _, switches in bench.ablation_cases("cpu")]
    assert all("error" not in r and r["seconds_per_eval"] > 0 and r["peak_rss_bytes"] > 0 for r in rows)
    # every route computes the same objective (float32: the routes round differently)
    assert max(abs(r["total_loss"] / rows[0]["total_loss"] - 1) for r in rows) < 1e-4
    assert len(bench.ablation_table(rows).splitlines()) == 1 + len(Transforms.names())
