"""Tiny random-weight Stable Diffusion pipelines (SD- and SDXL-shaped) and ControlNets for them,
built and saved locally.

Everything a real one has (a CLIP tokenizer from a vocabulary written here, CLIP text models, a UNet,
a VAE, a scheduler; a ControlNet made from the UNet as diffusers' training script makes one), only
very small, so the real loading code can be tested on the CPU with ``HF_HUB_OFFLINE=1`` and nothing
downloaded.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any


def write_tokenizer(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tokens = ["<|startoftext|>", "<|endoftext|>"]
    for char in string.ascii_lowercase + string.digits + " ,.!":
        tokens += [char, f"{char}</w>"]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")


def build(folder: Path, *, scheduler: str = "lcm") -> Path:
    """Save a tiny pipeline in diffusers layout under ``folder``; returns it."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerAncestralDiscreteScheduler,
        LCMScheduler,
        StableDiffusionImg2ImgPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    write_tokenizer(folder / "tokenizer_source")
    tokenizer = CLIPTokenizer(
        str(folder / "tokenizer_source" / "vocab.json"),
        str(folder / "tokenizer_source" / "merges.txt"),
        model_max_length=77,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_attention_heads=4,
            num_hidden_layers=2, max_position_embeddings=77, projection_dim=32,
            bos_token_id=0, eos_token_id=1, pad_token_id=1,
        )
    )  # fmt: skip
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=32,
    )  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    )  # fmt: skip
    sched_cls = LCMScheduler if scheduler == "lcm" else EulerAncestralDiscreteScheduler
    pipe = StableDiffusionImg2ImgPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=sched_cls(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    target = folder / "pipeline"
    pipe.save_pretrained(target)
    return target


def _tokenizer(folder: Path) -> Any:  # a transformers CLIPTokenizer
    from transformers import CLIPTokenizer

    write_tokenizer(folder / "tokenizer_source")
    source = folder / "tokenizer_source"
    return CLIPTokenizer(str(source / "vocab.json"), str(source / "merges.txt"), model_max_length=77)


def build_sdxl(folder: Path) -> Path:
    """Save a tiny SDXL-shaped image-to-image pipeline (two text encoders, pooled and time embeddings)."""
    import torch
    from diffusers import AutoencoderKL, LCMScheduler, StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    tokenizer = _tokenizer(folder)
    small = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2,
             "max_position_embeddings": 77, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}  # fmt: skip
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), projection_dim=32, **small))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(vocab_size=len(tokenizer), projection_dim=32, **small))
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, norm_num_groups=32, attention_head_dim=(2, 4), addition_embed_type="text_time",
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=8 * 6 + 32,
    )  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    )  # fmt: skip
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer, tokenizer_2=tokenizer,
        unet=unet, scheduler=LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"),
    )  # fmt: skip
    target = folder / "pipeline"
    pipe.save_pretrained(target)
    return target


def build_controlnet(pipeline: Path, folder: Path) -> Path:
    """Save a ControlNet for the pipeline saved at ``pipeline``, made from its UNet. Training starts
    a ControlNet's output convolutions at zero (no effect); random ones here, so that it has one."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    torch.manual_seed(1)
    unet = UNet2DConditionModel.from_pretrained(pipeline / "unet")
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16))
    for module in (*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out):
        torch.nn.init.normal_(module.weight, std=0.5)
        torch.nn.init.normal_(module.bias, std=0.5)
    target = folder / "controlnet"
    net.save_pretrained(target)
    return target


def build_lora(pipeline: Path, folder: Path) -> Path:
    """Save a LoRA for the UNet of the pipeline at ``pipeline`` (random, so that merging it shows),
    in the layout diffusers' ``save_lora_weights`` writes, as LCM-LoRA is published."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(2)
    unet = UNet2DConditionModel.from_pretrained(pipeline / "unet")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    for name, parameter in unet.named_parameters():
        if "lora_B" in name:  # peft starts B at zero (no effect), as training does
            torch.nn.init.normal_(parameter, std=0.5)
    target = folder / "lcm-lora"
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(target, unet_lora_layers=layers, safe_serialization=True)
    return target
