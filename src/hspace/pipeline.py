"""hspace editing as a diffusers pipeline: `HSpaceEditPipeline(unet, scheduler)`, saved and loaded like any other.

    pipe = HSpaceEditPipeline(unet=UNet2DModel.from_pretrained(...), scheduler=DDIMScheduler.from_config(...))
    out = pipe(seeds=[0, 1], directions="run/directions.safetensors", index=0, strengths=[-4, 0, 4])
    out.images              # PIL images, seed-major: seed 0 at every strength, then seed 1, ...
    pipe.save_pretrained("my-pipe"); HSpaceEditPipeline.from_pretrained("my-pipe")

The scheduler contributes its training noise schedule and parameterisation; the sampling itself is hspace's
DDIM loop on the directions' own grid (hspace.api), so the images equal those of hspace-run for the same
seeds, directions and strengths. The weights are not checked against the directions' weight hash (a pipeline
does not know the file it was loaded from); the h shape, the grid, and the scheduler's training schedule and
prediction type (against the model the directions were found for) are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput

from hspace.diffusion.model import DiffusionModel
from hspace.directions.container import Directions
from hspace.errors import UserError


class HSpaceEditPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "unet"

    def __init__(self, unet, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @torch.no_grad()
    def __call__(
        self,
        seeds: Sequence[int],
        directions: Directions | str | Path,
        index: int = 0,
        strengths: Sequence[float] = (-4.0, 0.0, 4.0),
        eta: float = 0.0,
        output_type: str = "pil",
    ) -> ImagePipelineOutput:
        from hspace.api import Edited, default_sampler, edit_seeds

        if output_type not in ("pil", "pt"):
            raise UserError(f"output_type={output_type!r} is not one of pil, pt: choose one of them")
        if not isinstance(directions, Directions):
            directions = Directions.load(directions)
        if not directions.finds_h:
            raise UserError(
                f"the pipeline moves h, and these directions (method={directions.method}) move x_t: edit them with "
                "hspace.api.edit_seeds(model, directions, seeds, edit=XtShift()) (hspace.edits.xt_shift)"
            )
        # The pipeline does not check the weights (its UNet may be any copy of them): the model takes the hash the
        # directions recorded, or a placeholder for files that recorded none, so no weights are hashed either.
        recorded = directions.weight_hash or "unrecorded"
        directions = replace(directions, weight_hash=recorded)
        model = DiffusionModel(self.unet, dict(self.scheduler.config), name="pipeline", weight_hash=recorded)
        sampler = replace(default_sampler(directions), eta=eta)
        edited: Edited = edit_seeds(model, directions, seeds, index, strengths, sampler=sampler)
        if output_type == "pil":
            images = [image for row in edited.pil() for image in row]
        else:
            images = edited.images.flatten(0, 1)
        return ImagePipelineOutput(images=images)
