"""Coarse-to-fine runs (--scales): stage transitions, per-stage memory plans, refusals before any work."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

import minivgg.transfer.run as run_module
import minivgg.transfer.stages as stages_module
from minivgg import memory
from minivgg.transfer.cli import parse_args
from minivgg.transfer.config import stage_iterations

ERROR = "python -m minivgg.transfer: error: "


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR), err
    return lines[0][len(ERROR):]


@pytest.mark.parametrize("argv,problem", [
    (("--scales", "64", "32"), "--scales must increase from stage to stage, got 64 32"),
    (("--scales", "32", "32"), "--scales must increase"),
    (("--scales", "32", "64", "--size", "48"), "--size 48 disagrees with the last of --scales (64)"),
    (("--scales", "32", "48", "64", "--iters", "5", "6"), "--iters has 2 values for 3 stages"),
    (("--iters", "5", "6"), "--iters takes one number"),
    (("--upsample-partial",), "--upsample-partial applies to --scales runs only"),
])
def test_inconsistent_scales_are_refused_before_anything(cli, photo, tmp_path, argv, problem):
    code, out, err = cli("--content", photo, "--style", photo, *argv)
    assert code == 2 and out == "" and problem in one_error_line(err)
    assert list(tmp_path.glob("*.png")) == [photo]                 # nothing written


def test_a_stage_under_the_networks_minimum_is_refused(cli, photo):
    """A 40x30 photo at long side 20 is 20x15: conv5_1 needs 16 on each side."""
    code, _, err = cli("--content", photo, "--style", photo, "--scales", "20", "64")
    message = one_error_line(err)
    assert code == 2 and "stage at 20 would be 20x15 pixels" in message and "at least 16" in message
    assert "start --scales at 21 or more" in message


def test_iteration_schedules():
    assert stage_iterations([256, 512, 1024], None) == (200, 100, 50)
    assert stage_iterations([64] * 6, None)[-1] == 10                  # never fewer than 10
    assert stage_iterations([256, 512], [30]) == (30, 30)
    assert stage_iterations([256, 512], [30, 7]) == (30, 7)
    sizes = parse_args(["--scales", "32", "64"]).stages
    assert sizes.size == 64 and sizes.scales == (32, 64) and sizes.iterations == (200, 100)
    assert sizes.total_iterations == 300
    sizes = parse_args([]).stages
    assert sizes.scales == (256,) and sizes.size == 256 and sizes.iterations == (200,)


def test_stages_start_from_the_previous_result_upsampled(cli, photo, tmp_path, monkeypatch):
    """Stage 2 starts from stage 1's best image, resized; progress names the stage; output at the last size."""
    starts, real = [], run_module.optimise

    def spy(config, objective, x0, out, to_rgb, k, stages, time_limit=None):
        result = real(config, objective, x0, out, to_rgb, k, stages, time_limit)
        starts.append((x0.copy(), result.x.copy(), stages[k].hw))
        return result

    monkeypatch.setattr(run_module, "optimise", spy)
    code, out, err = cli("--content", photo, "--style", photo, "--scales", "32", "48", "--iters", "2", "3",
                         "--out", "o.png")
    assert code == 0, err
    assert [hw for _, _, hw in starts] == [(24, 32), (36, 48)]
    first_result, second_start = starts[0][1], starts[1][0]
    assert np.array_equal(second_start, run_module.upsampled(first_result, (36, 48)))
    assert "stage 1/2 32x24: iter    2/2" in err and "stage 2/2 48x36: iter    3/3" in err
    assert "32x24 (2 it) -> 48x36 (3 it)" in err and "done after 5 iterations" in err
    assert Image.open(tmp_path / "o.png").size == (48, 36)


def test_the_summary_names_a_stage_off_the_default_lean_setting(cli, photo):
    """On the CPU the lean mode is the default route, so only --lean off shows in the stages."""
    code, _, err = cli("--content", photo, "--style", photo, "--scales", "32", "48", "--iters", "1",
                       "--lean", "off", "--out", "o.png")
    assert code == 0, err
    assert "32x24 (1 it, not lean) -> 48x36 (1 it, not lean)" in err.splitlines()[0]


@pytest.mark.parametrize("upsample", [False, True])
def test_a_run_stopped_in_an_earlier_stage_keeps_its_image(cli, photo, tmp_path, monkeypatch, upsample):
    """The time limit ends stage 1 of 2: its best image is written at its size, or upsampled if asked."""
    real = run_module.optimise

    def stop_in_stage_one(config, objective, x0, out, to_rgb, k, stages, time_limit=None):
        result = real(config, objective, x0, out, to_rgb, k, stages, time_limit)
        return dataclasses.replace(result, stopped="time limit") if k == 0 else result

    monkeypatch.setattr(run_module, "optimise", stop_in_stage_one)
    code, _, err = cli("--content", photo, "--style", photo, "--scales", "32", "48", "--iters", "3",
                       "--out", "o.png", *(["--upsample-partial"] if upsample else []))
    assert code == 0, err
    assert "stopped at the 32x24 stage" in err
    assert Image.open(tmp_path / "o.png").size == ((48, 36) if upsample else (32, 24))


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_every_stage_is_planned_before_any_work_and_lean_or_fewer_pairs_make_it_fit(monkeypatch, device):
    """--lean auto: on the GPU the lean mode only for a stage that needs it, with a note; on the CPU
    it is the default route, every stage lean from the start, no note. Then fewer pairs."""
    config = parse_args(["--scales", "256", "512", "1024", "--device", device])
    ask = lambda lean, maxcor: stages_module.estimate_bytes(  # noqa: E731
        config, (768, 1024), [(768, 1024)], lean, maxcor, config.stages.iterations[-1])
    normal, lean, lean_fewer = ask(False, 20), ask(True, 20), ask(True, 10)
    assert lean < normal and lean_fewer < lean
    gpu = device == "gpu"
    for available, want in ((None, (not gpu, 20)), (normal, (not gpu, 20)), (lean, (True, 20)),
                            (lean_fewer, (True, 10))):
        monkeypatch.setattr(memory, "available_memory_bytes", lambda device="cpu", a=available: a)
        stages, notes = stages_module.plan_stages(config, (768, 1024))
        assert [st.hw for st in stages] == [(192, 256), (384, 512), (768, 1024)]
        assert (stages[-1].lean, stages[-1].maxcor) == want
        assert all(st.lean == (not gpu) and st.maxcor == 20 for st in stages[:-1])   # the small stages
        assert stages[0].estimate < stages[1].estimate < normal
        assert ("memory-lean mode" in " ".join(notes)) == (gpu and want[0])
        assert ("--maxcor lowered from 20 to 10" in " ".join(notes)) == (want[1] == 10)


def test_a_stage_that_cannot_fit_is_refused_with_the_largest_scale_that_fits(cli, photo, monkeypatch):
    config = parse_args(["--scales", "64", "512"])
    available = stages_module.estimate_bytes(config, (192, 256), [(192, 256)], True, 3,
                                             config.stages.iterations[-1])   # 256 x 192 just fits
    monkeypatch.setattr(memory, "available_memory_bytes", lambda device="cpu": available)
    code, _, err = cli("--content", photo, "--style", photo, "--scales", "64", "512")
    message = one_error_line(err)
    assert code == 2 and "not enough memory for a 512x384 run on cpu" in message
    assert message.endswith("the largest scale that fits is 256")


def test_a_first_stage_too_small_for_the_content_is_noted():
    from minivgg.transfer.stages import MIN_CONTENT_STAGE
    note = "is small for the content"
    for argv, noted in ((["--scales", "128", "256"], True), (["--scales", str(MIN_CONTENT_STAGE), "512"], False),
                        (["--scales", "128", "256", "--mode", "texture"], False), (["--size", "128"], False)):
        _, notes = stages_module.plan_stages(parse_args(argv), (768, 1024))
        assert any(note in n for n in notes) == noted, (argv, notes)
