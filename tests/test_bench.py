"""The benchmark's arithmetic and interface (no timing is asserted)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from minivgg import bench, bench_cases
from minivgg.transfer import evaluate


@pytest.mark.parametrize("height,width", [(16, 16), (256, 256), (512, 512), (96, 160)])
def test_forward_macs_per_pixel_is_361152_up_to_conv5_1(height, width):
    """Hand count: conv1_1 1728 + conv1_2 36864 + block 2 (18432 + 36864) + block 3 (18432 + 3 * 36864)
    + block 4 (18432 + 3 * 36864) + conv5_1 9216 = 361,152 MACs per input pixel."""
    assert bench_cases.forward_macs(height, width) == 361_152 * height * width


def test_flops_are_forward_and_backward_two_per_mac():
    assert bench_cases.objective_flops(512, 512) == 4 * 361_152 * 512 * 512   # 378.7 GFLOP
    assert bench_cases.forward_macs(32, 32, last="conv1_2") == (3 + 64) * 64 * 9 * 32 * 32


def test_floor_sizes_count_each_layer_at_its_own_size():
    # 17x17: pools floor to 8, 4, 2, 1, so conv5_1 runs on 1x1
    assert bench_cases.forward_macs(17, 17) == (
        (3 * 64 + 64 * 64) * 9 * 289 + (64 * 128 + 128 * 128) * 9 * 64
        + (128 * 256 + 3 * 256 * 256) * 9 * 16 + (256 * 512 + 3 * 512 * 512) * 9 * 4 + 512 * 512 * 9)


def test_blas_info_reports_the_openblas_environment(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    info = bench.blas_info()
    assert info["OPENBLAS_CORETYPE"] == "Haswell" and "blas" in info
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    assert "OPENBLAS_CORETYPE" not in bench.blas_info()


def test_help_describes_the_options(capsys):
    with pytest.raises(SystemExit) as info:
        bench.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--sizes", "--device", "--json", "--torch", "--repeats", "--dtype", "--rounds"):
        assert option in text


def test_json_rows_in_a_subprocess(vgg_params):
    """One tiny case end to end: the fields the issue asks for, from a fresh process."""
    done = subprocess.run([sys.executable, "-m", "minivgg.bench", "--sizes", "32", "--repeats", "1",
                           "--warmup", "0", "--json", "--style-loss", "gram", "mean-std"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == 2 and "style_loss" not in rows[0] and rows[1]["style_loss"] == "mean-std"
    row, other = rows
    for field in ("size", "device", "dtype", "seconds_per_eval", "gflops", "matmul_gflops",
                  "fraction_of_matmul", "peak_rss_bytes", "estimated_peak_bytes", "estimate_error",
                  "blas", "total_loss"):
        assert field in row, field
    assert (row["size"], row["device"], row["dtype"]) == (32, "cpu", "float32")
    assert row["seconds_per_eval"] > 0 and row["peak_rss_bytes"] > 0
    # the derived figures are what they say they are
    assert row["gflops"] == pytest.approx(bench_cases.objective_flops(32, 32) / row["seconds_per_eval"] / 1e9)
    assert row["fraction_of_matmul"] == pytest.approx(row["gflops"] / row["matmul_gflops"])
    assert row["estimate_error"] == pytest.approx(row["estimated_peak_bytes"] / row["peak_rss_bytes"] - 1)
    # and the loss is the paper's objective on the bench's seeded images, recomputed here in float64
    content, style, x = bench_cases._images(32, 32)
    _, _, total, _ = evaluate(x, content, style, alpha=bench_cases.ALPHA, beta=bench_cases.BETA,
                              content_layer=bench_cases.CONTENT_LAYER, dtype="float64")
    assert row["total_loss"] == pytest.approx(float(total), rel=1e-4)       # float32 against float64
    _, _, total, _ = evaluate(x, content, style, alpha=bench_cases.ALPHA, beta=bench_cases.BETA,
                              content_layer=bench_cases.CONTENT_LAYER, dtype="float64", style_loss="mean-std")
    assert other["total_loss"] == pytest.approx(float(total), rel=1e-4)     # the other statistic's objective


def test_rounds_alternate_the_cases_and_report_medians(monkeypatch, capsys):
    """--rounds 3: every case three times, the second round in reverse order; each case's row has the
    median of its rounds' seconds and the largest peak; the ratio line is ours over PyTorch's."""
    order = []

    def fake(case):
        k = sum(1 for c in order if c == (case["impl"], case["size"]))
        order.append((case["impl"], case["size"]))
        seconds = {"minivgg": [1.0, 3.0, 2.0], "torch": [4.0, 4.5, 3.9]}[case["impl"]][k]
        return {"impl": case["impl"], "size": case["size"], "device": "cpu", "dtype": "float32",
                "seconds_per_eval": seconds, "gflops": 10.0 / seconds, "matmul_gflops": 100.0,
                "fraction_of_matmul": 0.1 / seconds,
                "peak_rss_bytes": (100 + k) * 2**20 * (2 if case["impl"] == "torch" else 1),
                "estimated_peak_bytes": 100 * 2**20, "estimate_error": 0.0, "total_loss": 1.0}
    monkeypatch.setattr(bench, "_run_case_in_subprocess", fake)
    monkeypatch.setattr(bench, "torch_importable", lambda: True)
    assert bench.main(["--sizes", "64", "--torch", "--rounds", "3"]) == 0
    assert order == [("minivgg", 64), ("torch", 64), ("torch", 64), ("minivgg", 64), ("minivgg", 64), ("torch", 64)]
    out = capsys.readouterr().out
    assert "time 0.50x, peak memory 0.50x" in out                        # 2.0 / 4.0; 102 / 204 MiB
    assert bench.merge_rounds([{"seconds_per_eval": 2.0, "gflops": 5.0, "peak_rss_bytes": 1},
                               {"error": "boom"}]) == {"error": "boom"}
    merged = bench.merge_rounds([fake({"impl": "minivgg", "size": 8}) for _ in range(3)])
    assert merged["seconds_per_eval"] == 2.0 and merged["round_seconds"] == [1.0, 3.0, 2.0]
    assert merged["gflops"] == pytest.approx(5.0) and merged["peak_rss_bytes"] == 102 * 2**20
    assert merged["estimate_error"] == pytest.approx(100 / 102 - 1)
    assert bench.main(["--rounds", "0"]) == 2
