"""CLIP zero-shot attribute classifier: P(attribute) = softmax over a (positive, negative) prompt pair.

For each attribute, e.g. smile: ("A smiling person", "A person"), the probability is the softmax of
CLIP's scaled cosine similarities of the image with the two prompts, taken at the positive one. The
model and tokenizer come from a local save_pretrained directory or the Hugging Face cache
(transformers CLIPModel, safetensors weights only); images are resized and normalised in torch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hspace.diffusion.loading import file_sha256
from hspace.diffusion.weights import resolve_weights
from hspace.errors import UserError
from hspace.identity import state_hash, weights_identity

CLIP_FILES = [
    "config.json",
    "model.safetensors",
    "tokenizer*",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "preprocessor_config.json",
]
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class CLIPZeroShot(nn.Module):
    def __init__(
        self,
        model,
        tokenizer,
        prompts: Mapping[str, Sequence[str]],
        mean=OPENAI_MEAN,
        std=OPENAI_STD,
        weight_hash: str | None = None,
    ):
        super().__init__()
        for attribute, pair in prompts.items():
            if len(pair) != 2:
                raise UserError(f"CLIP prompts for {attribute!r} must be a [positive, negative] pair, got {list(pair)}")
        self.model = model.eval().requires_grad_(False)
        self.attributes = list(prompts)
        self.image_size = model.config.vision_config.image_size
        self.weight_hash = weight_hash  # of the weights file it was loaded from; None: hashed from memory
        self.loaded_state = state_hash(self.model) if weight_hash else None  # the weights it read (weights_identity)
        self.prompts = {attribute: list(pair) for attribute, pair in prompts.items()}
        texts = [text for pair in prompts.values() for text in pair]
        tokens = tokenizer(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            text = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        text = text if isinstance(text, torch.Tensor) else text.pooler_output
        self.register_buffer("text_embeddings", F.normalize(text, dim=-1).view(len(self.attributes), 2, -1))
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def identity(self) -> str:
        """The weights' hash with the prompts, their embeddings (what the tokenizer made of them) and the
        normalisation: everything the probabilities depend on."""
        weights = weights_identity(self.model, self.weight_hash, self.loaded_state)
        embeddings = hashlib.sha256(self.text_embeddings.float().cpu().contiguous().numpy().tobytes()).hexdigest()
        settings = json.dumps(
            {
                "prompts": self.prompts,
                "mean": self.mean.flatten().tolist(),
                "std": self.std.flatten().tolist(),
                "text_embeddings": embeddings[:16],
            },
            sort_keys=True,
        )
        return f"{weights}:{hashlib.sha256(settings.encode()).hexdigest()[:16]}"

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images -> CLIP input: shortest side resized to the model's size, centre crop, normalised."""
        x = (images.float() + 1) / 2
        h, w = x.shape[-2:]
        if min(h, w) != self.image_size:
            # the long side truncated, as CLIP's own preprocessing (torchvision's Resize, transformers') sizes it
            long = int(self.image_size * max(h, w) / min(h, w))
            size = (self.image_size, long) if h <= w else (long, self.image_size)
            x = F.interpolate(
                x, size=size, mode="bicubic", align_corners=False, antialias=min(h, w) > self.image_size
            ).clamp(0, 1)
        top, left = (x.shape[-2] - self.image_size) // 2, (x.shape[-1] - self.image_size) // 2
        x = x[..., top : top + self.image_size, left : left + self.image_size]
        return (x - self.mean) / self.std

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """P(attribute) for each image. (B, A) in [0, 1]"""
        out = []
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].to(self.mean.device)
            features = self.model.get_image_features(pixel_values=self.preprocess(batch))
            features = features if isinstance(features, torch.Tensor) else features.pooler_output
            features = F.normalize(features, dim=-1)
            logits = self.model.logit_scale.exp() * torch.einsum("bd,apd->bap", features, self.text_embeddings)
            out.append(logits.softmax(dim=-1)[..., 0])
        return torch.cat(out)

    @classmethod
    def load(
        cls, source: str, prompts: Mapping[str, Sequence[str]], device: str | torch.device = "cpu"
    ) -> CLIPZeroShot:
        """From a save_pretrained directory (model, tokenizer, optional preprocessor_config.json) or a
        Hugging Face id in the local cache (the hub only when online)."""
        from transformers import AutoTokenizer, CLIPModel

        directory = resolve_weights(source, patterns=CLIP_FILES, setting="metrics.classifier.source")
        if not (directory / "model.safetensors").is_file():
            raise UserError(
                f"no CLIP weights at {directory}: expected model.safetensors from CLIPModel.save_pretrained "
                "(safetensors only)"
            )
        model = CLIPModel.from_pretrained(directory, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(directory)
        mean, std = OPENAI_MEAN, OPENAI_STD
        processor = directory / "preprocessor_config.json"
        if processor.is_file():
            settings = json.loads(processor.read_text())
            mean, std = settings.get("image_mean", mean), settings.get("image_std", std)
        classifier = cls(
            model, tokenizer, prompts, mean, std, weight_hash=file_sha256(directory / "model.safetensors")[:16]
        )
        return classifier.to(device)
