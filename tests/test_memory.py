"""The memory model: its terms against hand counts, its growth, and the refusal before a run."""
from __future__ import annotations

from pathlib import Path

import pytest

from minivgg import memory
from minivgg.architecture import CONV_SHAPES, layer_index
from minivgg.memory import (NotEnoughMemory, available_memory_bytes, estimate, estimate_peak_bytes,
                            estimate_phases, refusal_message)

# Elements per input pixel of every output kept up to conv5_1, by hand (sizes divisible by 16):
# input 3; conv1_1, conv1_2 2*64; pool1 64/4; conv2_* 2*128/4; pool2 128/16; conv3_* 4*256/16;
# pool3 256/64; conv4_* 4*512/64; pool4 512/256; conv5_1 512/256.
KEPT_PER_PIXEL = 3 + 128 + 16 + 64 + 8 + 64 + 4 + 32 + 2 + 2


def test_activations_match_a_hand_count():
    evaluation, _ = estimate_phases(512, 512, "float32")
    assert evaluation.activations == KEPT_PER_PIXEL * 4 * 512 * 512
    evaluation64, _ = estimate_phases(512, 512, "float64")
    assert evaluation64.activations == 2 * evaluation.activations


def test_weights_count_is_vgg19s():
    assert memory.WEIGHT_COUNT == 20_024_384                        # 16 convs of VGG-19, weights + biases


def test_estimate_grows_with_size_and_dtype():
    sizes = [64, 128, 256, 512, 1024, 2048]
    peaks = [estimate_peak_bytes(s, s) for s in sizes]
    assert all(a < b for a, b in zip(peaks, peaks[1:]))
    assert estimate_peak_bytes(300, 200) < estimate_peak_bytes(300, 400)
    assert estimate_peak_bytes(512, 512, "float64") > estimate_peak_bytes(512, 512, "float32")
    # large images: the activations dominate, so the estimate scales like the pixel count
    assert 3.5 < estimate_peak_bytes(2048, 2048) / estimate_peak_bytes(1024, 1024) < 4.1


def test_terms_add_up_and_name_the_phase():
    e = estimate(512, 512)
    assert e.total == e.baseline + e.activations + e.gradients + e.transient + e.optimizer
    assert e.phase in ("evaluation", "construction")
    assert e.total == max(p.total for p in estimate_phases(512, 512))


def test_optimizer_adds_the_lbfgs_state():
    n = 3 * 256 * 256
    without = estimate_peak_bytes(256, 256, optimizer=None)
    with_lbfgs = estimate_peak_bytes(256, 256, maxcor=20)          # a run: L-BFGS-B by default
    assert with_lbfgs - without == memory.SCIPY_BYTES + (2 * 20 + 13) * 8 * n + 16 * n
    assert (estimate_peak_bytes(256, 256, optimizer="lbfgs", maxcor=40)
            - with_lbfgs) == 2 * 20 * 8 * n                       # 20 more (s, y) pairs


def test_the_device_optimiser_holds_one_history_slot_per_iteration_on_the_cpu():
    n, m = 3 * 256 * 256, 20
    full = estimate_peak_bytes(256, 256, optimizer="lbfgs-device", maxcor=m)
    assert full - estimate_peak_bytes(256, 256, optimizer=None) == \
        memory.SCIPY_BYTES + (2 * m + 8) * 4 * n + n
    short = [estimate_peak_bytes(256, 256, optimizer="lbfgs-device", maxcor=m, iterations=k)
             for k in (1, 2, 5, m + 1, 10 * m)]
    assert [b - short[0] for b in short[:3]] == [0, 2 * 4 * n, 8 * 4 * n]   # S and Y: one row each
    assert short[3] == short[4] == full                 # the ring is full after maxcor + 1
    gpu = [estimate_peak_bytes(256, 256, optimizer="lbfgs-device", device="gpu", iterations=k)
           for k in (1, None)]
    assert gpu[0] == gpu[1]                             # CuPy's zeros take the whole pool block


def test_settings_change_the_estimate():
    paper = estimate_peak_bytes(256, 256)
    assert estimate_peak_bytes(256, 256, pooling="max") > paper     # int8 winners per pool output
    shallow = estimate_peak_bytes(256, 256, content_layer="conv2_2", style_layers=("conv1_1",))
    assert shallow < paper
    assert estimate_peak_bytes(256, 256, content_layer=None) > 0    # texture synthesis
    assert estimate_peak_bytes(256, 256, style_layers=()) > 0       # content reconstruction
    gpu, cpu = estimate(256, 256, device="gpu"), estimate(256, 256, optimizer=None)
    assert gpu.baseline == cpu.baseline - memory.INTERPRETER_BYTES  # no interpreter on the device
    assert gpu.optimizer == 0 < estimate(256, 256).optimizer        # the optimiser lives on the host


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="unknown VGG-19 layer"):
        estimate_peak_bytes(256, 256, content_layer="conv9_9")
    with pytest.raises(ValueError, match="pooling"):
        estimate_peak_bytes(256, 256, pooling="median")
    with pytest.raises(ValueError, match="content layer, style layers"):
        estimate_peak_bytes(256, 256, content_layer=None, style_layers=())


def test_refusal_gives_estimate_and_available_on_one_line():
    needed = estimate_peak_bytes(4096, 4096)
    error = NotEnoughMemory(refusal_message(needed, 2 * 10**9, "cpu", "a 4096x4096 run"))
    message = str(error)
    assert "\n" not in message
    assert "4096x4096" in message and f"estimated peak {needed / 1e9:.2f} GB" in message
    assert "available 2.00 GB" in message
    assert isinstance(error, MemoryError) and isinstance(error, ValueError)


def test_layers_without_roles_are_modelled_conservatively():
    paper = ("conv4_2",) + memory.PAPER_STYLE_LAYERS
    assert estimate_peak_bytes(256, 256, layers=paper) >= estimate_peak_bytes(256, 256)
    assert estimate_peak_bytes(256, 256, layers=paper) < 1.1 * estimate_peak_bytes(256, 256)


def test_available_memory_reads_the_system(tmp_path, monkeypatch):
    """This machine's answer lies in (0, MemTotal]; from files of known contents the answer is exact:
    MemAvailable (in kB), or the cgroup's room when that is smaller, or None when nothing says."""
    meminfo = Path("/proc/meminfo")
    if not meminfo.exists():
        pytest.skip("no /proc/meminfo on this system: nothing to compare against")
    fields = dict(line.split(":", 1) for line in meminfo.read_text().splitlines() if ":" in line)
    total = int(fields["MemTotal"].split()[0]) * 1024
    found = available_memory_bytes()
    assert found is not None and 0 < found <= total        # never more than the machine has
    fake = tmp_path / "meminfo"
    fake.write_text("MemTotal:       16318112 kB\nMemFree:          912340 kB\n"
                    "MemAvailable:    7654321 kB\nBuffers:          123456 kB\n")
    cgroup = tmp_path / "job"
    cgroup.mkdir()
    monkeypatch.setattr(memory, "MEMINFO_PATH", str(fake))
    monkeypatch.setattr(memory, "_cgroup_folders", lambda: [(str(cgroup), "memory.max", "memory.current")])
    (cgroup / "memory.max").write_text("max\n")
    (cgroup / "memory.current").write_text(f"{40 * 2**20}\n")
    assert available_memory_bytes() == 7654321 * 1024                   # no limit: MemAvailable
    (cgroup / "memory.max").write_text(f"{100 * 2**20}\n")
    assert available_memory_bytes() == 60 * 2**20                       # the cgroup's room is smaller
    (cgroup / "memory.current").write_text(f"{101 * 2**20}\n")
    assert available_memory_bytes() == 0                                # over its limit: no room
    monkeypatch.setattr(memory, "MEMINFO_PATH", str(tmp_path / "absent"))
    (cgroup / "memory.max").unlink()
    assert available_memory_bytes() is None                             # nothing says


def test_reference_engine_counts_its_whole_unrolled_matrix():
    """engine="reference" asks minivgg.conv for its sizes: the whole im2col matrix, no Winograd weights."""
    from minivgg.conv import workspace_bytes
    fast = estimate(512, 512, optimizer=None)
    ref = estimate(512, 512, optimizer=None, engine="reference")
    conv1_2 = workspace_bytes(64, 64, 512, 512, 4)
    assert conv1_2 >= 9 * 64 * 512 * 512 * 4                        # the unrolled input, 9x its size
    assert ref.phase == "evaluation" and ref.transient >= conv1_2
    assert ref.baseline < fast.baseline and ref.total > fast.total


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_available_memory_reads_this_process_cgroup_and_its_ancestors(tmp_path, monkeypatch, version):
    """A limit on the process's own (nested) cgroup counts, not only the root's: how containers and
    `systemd-run -p MemoryMax=` limit a job."""
    proc = tmp_path / "cgroup"
    if version == "v1":
        proc.write_text("9:pids:/\n4:cpu,cpuacct:/job\n3:memory:/outer/job\n")
        base, names = tmp_path / "memory", ("memory.limit_in_bytes", "memory.usage_in_bytes")
    else:
        proc.write_text("0::/outer/job\n")
        base, names = tmp_path, ("memory.max", "memory.current")
    folders = memory._cgroup_folders(str(proc), str(tmp_path))
    assert [f for f, *_ in folders] == [f"{base}/outer/job", f"{base}/outer", str(base)]
    for folder, limit, usage in ((base / "outer" / "job", 8 * 2**30, 3 * 2**30), (base / "outer", 16 * 2**30, 3 * 2**30)):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / names[0]).write_text(f"{limit}\n")
        (folder / names[1]).write_text(f"{usage}\n")
    (base / names[0]).write_text("max\n" if version == "v2" else f"{2**63 - 4096}\n")
    (base / names[1]).write_text("0\n")
    monkeypatch.setattr(memory, "_cgroup_folders", lambda: folders)
    monkeypatch.setattr(memory, "_meminfo_available", lambda: 20 * 2**30)
    assert available_memory_bytes() == 5 * 2**30                     # the job's 8 GiB, 3 used


def test_the_model_asks_the_kernels(monkeypatch):
    """estimate_phases holds no byte formula of a kernel: change a kernel's own report and the estimate
    follows it (the reports themselves are held to the kernels in tests/test_kernel_bytes.py)."""
    from minivgg.fast import conv_backward, lean, pooling, winograd
    kept = estimate(256, 256, conv="im2col").baseline - estimate(256, 256, conv="im2col", engine="reference").baseline
    assert kept == 4 * sum(o * c * 9 for name, (o, c, _, _) in CONV_SHAPES.items()    # the flipped weights
                           if c > 3 and layer_index(name) <= layer_index("conv5_1"))
    monkeypatch.setattr(winograd, "weights_bytes", lambda o, c, m, itemsize: 0)
    monkeypatch.setattr(conv_backward, "transposed_weights_bytes", lambda *args: 0)
    assert estimate(256, 256).baseline == estimate(256, 256, conv="im2col").baseline   # no U, no flip kept
    masks = [estimate_phases(256, 256, lean=True)[0].activations]
    monkeypatch.setattr(lean, "packed_bytes", lambda shape: 10**9)
    masks.append(estimate_phases(256, 256, lean=True)[0].activations)
    assert masks[1] - masks[0] == 7 * 10**9 - sum(c * h * w // 8 for c, h, w in
                                                  [(64, 256, 256), (128, 128, 128), (256, 64, 64), (256, 64, 64),
                                                   (256, 64, 64), (512, 32, 32), (512, 32, 32)])
    monkeypatch.setattr(pooling, "workspace_bytes", lambda *args, **kwargs: 10**12)
    assert estimate(256, 256).transient >= 10**12                       # the row sums' report counted


def test_a_stage_estimate_counts_the_runs_style_statistic():
    """``stages.estimate_bytes`` passes --style-loss on: the estimate is the memory model's for that
    statistic (its targets and work arrays: tests/test_statistic_bytes.py)."""
    from minivgg.transfer import stages
    from minivgg.transfer.cli import parse_args
    ask = lambda *argv: stages.estimate_bytes(parse_args(list(argv)), (384, 512), [(384, 512)],  # noqa: E731
                                              False, 20, 100)
    gram, sliced = ask(), ask("--style-loss", "sliced-wasserstein")
    assert sliced == estimate_peak_bytes(384, 512, style_size=(384, 512), style_loss="sliced-wasserstein",
                                         iterations=100)
    assert gram == estimate_peak_bytes(384, 512, style_size=(384, 512), iterations=100)
    assert sliced > gram
    with pytest.raises(ValueError, match="unknown style loss"):
        estimate_peak_bytes(256, 256, style_loss="median")
