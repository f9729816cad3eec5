"""The Python API and the diffusers pipeline, as the README shows them."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_the_readme_example_runs_and_the_pipeline_round_trip_gives_the_same_images(tmp_path, monkeypatch):
    section = README.split("### Python API and diffusers pipeline\n", 1)[1].split("\n### ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)

    edited, inverted, images, again = scope["edited"], scope["inverted"], scope["images"], scope["again"]
    assert edited.images.shape == (2, 3, 3, 32, 32) and (tmp_path / "pc0.png").is_file()
    torch.testing.assert_close(edited.images[:, 1], edited.unedited)  # strength 0 is the plain sample
    assert not torch.allclose(edited.images[:, 0], edited.images[:, 2])
    assert len(inverted.pil()) == 2 and len(scope["first_row"]) == 3
    # The pipeline draws what the API draws, and a saved and reloaded pipeline draws the same again.
    assert len(images) == 6
    ours = np.stack([np.asarray(image) for row in edited.pil() for image in row])
    np.testing.assert_array_equal(np.stack([np.asarray(i) for i in images]), ours)
    reloaded = again(seeds=[0, 1], directions=scope["directions"], index=0, strengths=[-4, 0, 4]).images
    np.testing.assert_array_equal(np.stack([np.asarray(i) for i in reloaded]), ours)
    assert (tmp_path / "hspace-pipeline" / "model_index.json").is_file()
    # an unknown output type is refused before any sampling
    monkeypatch.setattr("hspace.api.edit_seeds", lambda *args, **kwargs: pytest.fail("sampled before refusing"))
    with pytest.raises(ValueError, match="output_type must be pil or pt, not 'np'"):
        again(seeds=[0], directions=scope["directions"], output_type="np")
