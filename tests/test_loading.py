import pytest
import torch

from hspace.bottleneck import HSpace
from hspace.diffusion.loading import load_model
from hspace.diffusion.weights import SHIPPED_DIR, resolve_weights
from hspace.errors import UserError


def test_google_layout_loads_from_a_local_directory_and_exposes_h(google_layout_dir):
    model = load_model(str(google_layout_dir))
    assert model.prediction_type == "epsilon" and model.num_train_timesteps == 1000
    assert model.h_shape == (16, 2, 2)  # 512x8x8 at full size: 16 channels, five downsamples of 64
    assert len(model.weight_hash) == 64
    x = torch.randn(2, 3, 64, 64)
    with HSpace(model.unet, capture=True) as hs:
        model(x, 500)
    assert hs.captured[0].shape == (2, 16, 2, 2)
    assert not any(p.requires_grad for p in model.unet.parameters()) and not model.unet.training


def test_shipped_model_goes_through_the_same_path():
    model = load_model("shapes32")
    assert model.prediction_type == "v_prediction" and float(model.alphas_cumprod[-1]) == 0.0
    assert model.image_shape == (3, 32, 32)
    assert len(model.h_shape) == 3


def test_hub_id_offline_without_a_local_copy_is_one_clear_line(tmp_path):
    with pytest.raises(UserError) as error:
        resolve_weights("google/ddpm-ema-celebahq-256", cache_dir=str(tmp_path / "hf"), offline=True)
    message = str(error.value)
    assert "\n" not in message
    assert str(tmp_path / "hf") in message and "model.weights=" in message


def test_missing_local_path_names_it(tmp_path):
    with pytest.raises(UserError, match="no directory .*nowhere"):
        resolve_weights(str(tmp_path / "nowhere"))


def test_directory_without_safetensors_is_refused(google_layout_dir):
    (google_layout_dir / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(UserError, match="has no diffusion_pytorch_model.safetensors"):
        load_model(str(google_layout_dir))


def test_a_path_loads_and_a_bad_device_or_dtype_is_one_line_before_the_weights_are_read(tmp_path, monkeypatch):
    from hspace.diffusion import loading

    model = load_model(SHIPPED_DIR / "shapes32")  # a Path, not only its text
    assert model.image_shape == (3, 32, 32)
    monkeypatch.setattr(loading, "resolve_weights", lambda *args, **kwargs: pytest.fail("the weights were read"))
    bad = [({"device": "gpu"}, "device='gpu' is not a torch device"), ({"dtype": "float16"}, "dtype='float16'")]
    if not torch.cuda.is_available():
        bad.append(({"device": "cuda"}, "device=cuda but this machine has no CUDA GPU"))
    for settings, words in bad:
        with pytest.raises(UserError, match=words):
            load_model("shapes32", **settings)
