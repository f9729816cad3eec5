"""The CUDA paths: each job on the GPU reproduces its CPU result (`bash scripts/test.sh --gpu`)."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file

from hspace.cli import CONFIG_DIR
from hspace.cli.run import run
from hspace.directions.container import Directions

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]


def run_on(device: str, tmp_path, overrides: list[str]) -> tuple[dict, object]:
    run_dir = tmp_path / device
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            config_name="run",
            overrides=[
                *overrides,
                f"trainer.accelerator={device}",
                f"run_dir={run_dir}",
                f"cache_dir={tmp_path / ('cache-' + device)}",
                "logger=none",
            ],
        )
        return run(cfg), run_dir


def on_both(tmp_path, overrides: list[str]) -> tuple[dict, dict, Directions, Directions, object, object]:
    """The job on the CPU and on CUDA: metrics, directions and run directories of each."""
    cpu_metrics, cpu_dir = run_on("cpu", tmp_path, overrides)
    gpu_metrics, gpu_dir = run_on("cuda", tmp_path, overrides)
    a, b = (Directions.load(d / "directions.safetensors") for d in (cpu_dir, gpu_dir))
    return cpu_metrics, gpu_metrics, a, b, cpu_dir, gpu_dir


def test_main_job_on_cuda_matches_cpu(tmp_path):
    overrides = [
        "method.num_samples=96",
        "method.num_components=4",
        "method.oversample=8",
        "method.batch_size=48",
        "sampler.num_steps=10",
        "num_samples=4",
        "real_images=2",
        "num_directions=2",
        "edit.strengths=[-2.0,0.0,2.0]",
        "metrics.fid.reference_count=64",
    ]
    cpu_metrics, gpu_metrics, a, b, cpu_dir, gpu_dir = on_both(tmp_path, overrides)
    cos = (a.vectors.flatten(2) * b.vectors.flatten(2)).sum(-1).abs()  # unit vectors per step; signs may flip
    assert cos.min() > 0.99, cos.min()
    edits_a, edits_b = (
        load_file(cpu_dir / "edits.safetensors")["images"],
        load_file(gpu_dir / "edits.safetensors")["images"],
    )
    assert (
        edits_a.float() - edits_b.float()
    ).abs().mean() < 3.0  # uint8 images; per-step sign flips are aligned by the method
    assert abs(cpu_metrics["inversion/mse"] - gpu_metrics["inversion/mse"]) < 1e-3
    # 4 samples: one decision
    assert gpu_metrics["edit/pc0/success"] == pytest.approx(cpu_metrics["edit/pc0/success"], abs=0.26)


def test_bf16_autocast_on_cuda_stays_close_to_fp32():
    from hspace.diffusion.loading import load_model
    from hspace.diffusion.sampler import noise_for, sample
    from hspace.diffusion.schedule import make_schedule

    model = load_model("shapes32", device="cuda")
    schedule = make_schedule(model.alphas_cumprod, 20, "trailing")
    x_T, _ = noise_for(range(16), model, schedule)
    reference = sample(model, schedule, x_T, record_h=True)
    model.autocast = "bf16"
    mixed = sample(model, schedule, x_T, record_h=True)
    assert mixed.x0.dtype == torch.float32 and not torch.equal(mixed.x0, reference.x0)
    assert (mixed.x0 - reference.x0).abs().mean() < 0.02
    assert (mixed.h - reference.h).norm() / reference.h.norm() < 0.05


def test_jacobian_directions_on_cuda_match_cpu(tmp_path):
    overrides = [
        "method=jacobian",
        "method.num_directions=2",
        "method.tol=1e-5",
        "method.max_iters=200",
        "sampler.num_steps=6",
        "num_samples=1",
        "real_images=0",
        "edit.strengths=[1.0]",
        "metrics=none",
    ]
    _, _, a, b, _, _ = on_both(tmp_path, overrides)
    cos = (a.vectors.flatten(2) * b.vectors.flatten(2)).sum(-1).abs()
    assert cos.min() > 0.99, cos
    torch.testing.assert_close(b.scales, a.scales, rtol=1e-3, atol=1e-5)


def test_boundary_directions_and_edit_on_cuda(tmp_path):
    overrides = [
        "method=boundary",
        "edit=boundary_step",
        "method.num_bank=60",
        "method.t_mix=500",
        "sampler.num_steps=10",
        "num_samples=8",
        "real_images=0",
        "edit.strengths=[-2.0,0.0,2.0]",
        "metrics.fid.backend=none",
    ]
    cpu_metrics, gpu_metrics, a, b, cpu_dir, gpu_dir = on_both(tmp_path, overrides)
    t = a.info["t_index"]
    assert b.info["t_index"] == t
    assert (a.extra["x_normal"].flatten() @ b.extra["x_normal"].flatten()).item() > 0.95
    assert (a.vectors[0, t].flatten() @ b.vectors[0, t].flatten()).item() > 0.95  # the unit h normal at t_m
    assert gpu_metrics["boundary/x/val_acc"] == pytest.approx(cpu_metrics["boundary/x/val_acc"], abs=0.05)
    edits = load_file(gpu_dir / "edits.safetensors")["images"]
    unedited = edits[:, :, 1].float()
    assert (edits[:, :, 0].float() - unedited).abs().mean() > 1.0  # the edit moves the image on the GPU too


def test_a_short_bf16_mixed_training_on_cuda_resumes_and_exports(tmp_path):
    from hspace.cli.train import train
    from hspace.diffusion.loading import load_model
    from tests.test_train import TINY

    def trained(overrides):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return train(compose(config_name="train", overrides=[*TINY, "trainer=gpu", *overrides]))

    run_dir = tmp_path / "run"
    trained([f"run_dir={run_dir}", "trainer.max_steps=3"])
    last = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 3
    export = trained([f"run_dir={run_dir}", "trainer.max_steps=5", f"ckpt_path={last}"])
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 5
    model = load_model(str(export), device="cuda")
    assert all(torch.isfinite(p).all() for p in model.unet.parameters())


def test_h_swap_and_edit_friendly_inversion_on_cuda_match_cpu():
    from hspace.diffusion.inversion import edit_friendly_invert
    from hspace.diffusion.loading import load_model
    from hspace.diffusion.schedule import make_schedule
    from hspace.metrics.h_dependence import h_swap_change

    cpu, gpu = load_model("shapes32"), load_model("shapes32", device="cuda")
    on_cpu, on_gpu = (h_swap_change(m, num_samples=4, timesteps=(599,)) for m in (cpu, gpu))
    assert on_gpu[599] == pytest.approx(on_cpu[599], rel=0.05)
    schedule = make_schedule(cpu.alphas_cumprod, 10, "trailing", eta=1.0)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    a, b = (edit_friendly_invert(m, schedule, images, seeds=[0, 1]) for m in (cpu, gpu))
    torch.testing.assert_close(b.x_T.cpu(), a.x_T.cpu(), atol=1e-3, rtol=1e-3)
