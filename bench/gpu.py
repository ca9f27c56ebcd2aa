"""GPU benchmark of the diffusion engines, end to end through the runner.

Builds the SD-Turbo and SDXL-Turbo architectures from their configurations with random weights (the
same computation as the real models; nothing downloaded), and a ControlNet of each (the full-size
one diffusers' training script makes from the UNet), saves them in diffusers layout, starts the
runner on each with a set of optimizations, and measures 1-step 512x512 frames at batch 1 (one
connection, frames back to back) and batch 4 (four connections at once, which the runner batches
into one pipeline call): image to image, and with the ControlNet a picture along the drawing's lines
(text to image following it, the drawing page's default for such an app).

    python bench/gpu.py                 # on a CUDA machine, with requirements-gpu.txt installed
    python bench/gpu.py --smoke         # the same code on the CPU with tiny models, to check it runs
    python bench/gpu.py --controlnet    # only the ControlNet variants, and the plain one they add to

Figures go to stdout and ``bench/out/gpu.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import msgpack
from PIL import Image, ImageDraw
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out" / "gpu.json"
LISTENING = re.compile(r"runner listening on ws://127\.0\.0\.1:(\d+)")

# (name, runner options) in the order they are tried; each adds one optimization to the last.
VARIANTS = [
    ("fp32", "dtype=float32&channels_last=0"),
    ("fp16", "dtype=float16&channels_last=0"),
    ("fp16+channels_last", "dtype=float16&channels_last=1"),
    ("fp16+channels_last+taesd", "dtype=float16&channels_last=1&taesd={taesd}"),
    ("fp16+channels_last+taesd+compile", "dtype=float16&channels_last=1&taesd={taesd}&compile=1"),
    ("fp16+channels_last+taesd+controlnet", "dtype=float16&channels_last=1&taesd={taesd}&controlnet={controlnet}"),
    ("fp16+channels_last+taesd+compile+controlnet",
     "dtype=float16&channels_last=1&taesd={taesd}&compile=1&controlnet={controlnet}"),
]  # fmt: skip
LINES = {"num_inference_steps": 1}  # a ControlNet app's frame: the drawing is the lines, one step from noise
IMAGE = {"strength": 0.5, "num_inference_steps": 2}  # image to image: 2 x 0.5, one denoising step


def sd_turbo_parts(tiny: bool) -> dict[str, Any]:
    """SD 2.1-base (SD-Turbo) shapes: OpenCLIP ViT-H text encoder, 4-level UNet, SD VAE."""
    from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if tiny:
        width, layers, blocks, heads = 32, 2, (32, 64), 4
        unet = UNet2DConditionModel(
            block_out_channels=blocks, layers_per_block=1, cross_attention_dim=width, norm_num_groups=32,
            sample_size=8, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        )  # fmt: skip
        vae = AutoencoderKL(
            block_out_channels=blocks, latent_channels=4, norm_num_groups=32,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        )  # fmt: skip
    else:
        width, layers, heads = 1024, 23, 16
        unet = UNet2DConditionModel(
            block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=1024,
            attention_head_dim=(5, 10, 20, 20), use_linear_projection=True, sample_size=64,
        )  # fmt: skip
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512), latent_channels=4, layers_per_block=2,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        )  # fmt: skip
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408, hidden_size=width, intermediate_size=width * 4, num_attention_heads=heads,
            num_hidden_layers=layers, projection_dim=width, hidden_act="gelu",
        )
    )  # fmt: skip
    scheduler = EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    return {"unet": unet, "vae": vae, "text_encoder": text, "scheduler": scheduler}


def sdxl_turbo_parts(tiny: bool) -> dict[str, Any]:
    """SDXL (SDXL-Turbo) shapes: CLIP ViT-L and OpenCLIP bigG text encoders, 3-level UNet, SDXL VAE."""
    from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    small = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2}
    one = small if tiny else {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
                              "num_hidden_layers": 11}  # fmt: skip
    two = small if tiny else {"hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 20,
                              "num_hidden_layers": 32}  # fmt: skip
    text_1 = CLIPTextModel(CLIPTextConfig(vocab_size=49408, projection_dim=one["hidden_size"], **one))
    text_2 = CLIPTextModelWithProjection(CLIPTextConfig(vocab_size=49408, projection_dim=two["hidden_size"], **two))
    cross = one["hidden_size"] + two["hidden_size"]
    if tiny:
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=cross, norm_num_groups=32,
            sample_size=8, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), addition_embed_type="text_time",
            addition_time_embed_dim=8, projection_class_embeddings_input_dim=8 * 6 + two["hidden_size"],
            attention_head_dim=(2, 4),
        )  # fmt: skip
        vae = AutoencoderKL(
            block_out_channels=(32, 64), latent_channels=4, norm_num_groups=32,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        )  # fmt: skip
    else:
        unet = UNet2DConditionModel(
            block_out_channels=(320, 640, 1280), layers_per_block=2, cross_attention_dim=2048,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
            sample_size=128,
        )  # fmt: skip
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512), latent_channels=4, layers_per_block=2,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        )  # fmt: skip
    scheduler = EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    return {"unet": unet, "vae": vae, "text_encoder": text_1, "text_encoder_2": text_2, "scheduler": scheduler}


def save_model(name: str, folder: Path, tiny: bool) -> Path:
    import torch
    from diffusers import AutoencoderTiny, StableDiffusionImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline
    from transformers import CLIPTokenizer

    from tests.runner.tiny_pipeline import write_tokenizer

    torch.manual_seed(0)
    write_tokenizer(folder / "vocab")
    tokenizer = CLIPTokenizer(str(folder / "vocab" / "vocab.json"), str(folder / "vocab" / "merges.txt"),
                              model_max_length=77)  # fmt: skip
    if name == "sd-turbo":
        pipe = StableDiffusionImg2ImgPipeline(
            tokenizer=tokenizer, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
            **sd_turbo_parts(tiny),
        )  # fmt: skip
    else:
        pipe = StableDiffusionXLImg2ImgPipeline(tokenizer=tokenizer, tokenizer_2=tokenizer, **sdxl_turbo_parts(tiny))
    target = folder / name
    pipe.save_pretrained(target)
    taesd = AutoencoderTiny() if not tiny else AutoencoderTiny(encoder_block_out_channels=(32,) * 4,
                                                                decoder_block_out_channels=(32,) * 4)  # fmt: skip
    taesd.save_pretrained(folder / f"{name}-taesd")
    return target


def save_controlnet(name: str, folder: Path, model: Path, tiny: bool) -> Path:
    """A ControlNet for ``model``, made from its UNet (as diffusers' ControlNet training starts)."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(model / "unet")
    net = ControlNetModel.from_unet(unet, **({"conditioning_embedding_out_channels": (8, 16)} if tiny else {}))
    target = folder / f"{name}-controlnet"
    net.save_pretrained(target)
    return target


def drawing(side: int) -> bytes:
    img = Image.new("RGB", (side, side), "white")
    draw = ImageDraw.Draw(img)
    for i in range(0, side, side // 8):
        draw.line((0, i, side, side - i), fill=(i % 256, 90, 200), width=side // 64)
    out = BytesIO()
    img.save(out, "JPEG", quality=85)
    return out.getvalue()


def start_runner(apps: str) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("RUNNER_SECRET", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "realtime_site.runner", "--port", "0", "--apps", apps, "--log-level", "WARNING"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if match := LISTENING.search(line):
            return proc, int(match[1])
    raise RuntimeError("runner did not start:\n" + "".join(lines))


async def frames(url: str, side: int, count: int, connections: int, fields: dict[str, Any]) -> dict[str, Any]:
    image = drawing(side)
    frame = {"prompt": "a watercolor harbour", "image_bytes": image, "image_size": {"width": side, "height": side},
             "seed": 1, **fields}  # fmt: skip
    inference: list[float] = []

    async def session() -> None:
        async with connect(url, compression=None, max_size=None, open_timeout=600) as ws:
            for _ in range(count):
                await ws.send(msgpack.packb(frame))
                reply = msgpack.unpackb(await ws.recv())
                if "images" not in reply:
                    raise RuntimeError(f"no image: {reply}")
                inference.append(reply["timings"]["inference"])

    await asyncio.gather(*(session() for _ in range(connections)))  # warm-up round (compile, caches)
    inference.clear()
    started = time.perf_counter()
    await asyncio.gather(*(session() for _ in range(connections)))
    wall = time.perf_counter() - started
    total = count * connections
    return {"frames": total, "ms_per_frame": wall * 1000 / total, "fps": total / wall,
            "engine_ms_p50": statistics.median(inference) * 1000}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU: checks the code path only")
    parser.add_argument("--frames", type=int, default=50, help="frames per connection per measurement")
    parser.add_argument("--models", default="sd-turbo,sdxl-turbo")
    parser.add_argument("--variants", default="", help="comma-separated names of the variants to run (default: all)")
    parser.add_argument("--controlnet", action="store_true", help="the ControlNet variants and their baseline only")
    args = parser.parse_args()
    if args.controlnet:
        args.variants = ",".join(label for label, _ in VARIANTS if label.startswith("fp16+channels_last+taesd"))
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print("no CUDA GPU here: run this on a GPU machine, or --smoke for a CPU check of the code path")
        return 2
    side, count = (64, 3) if args.smoke else (512, args.frames)
    device = "cpu" if args.smoke else torch.cuda.get_device_name(0)
    print(f"device: {device}; torch {torch.__version__}; python {platform.python_version()}; {side}x{side}, 1 step")
    results: dict[str, Any] = {"device": device, "side": side, "runs": []}
    variants = [v for v in VARIANTS if v[0] in args.variants.split(",")] if args.variants else VARIANTS
    if args.smoke:  # one without and one with a ControlNet, in float32 on the CPU
        variants = [(label, "dtype=float32&device=cpu" + ("&controlnet={controlnet}" if "controlnet" in label else ""))
                    for label in ("fp32", "fp32+controlnet")]  # fmt: skip
    if not variants:
        print(f"no variant is named {args.variants!r}; known: {', '.join(v[0] for v in VARIANTS)}")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            model = save_model(name, Path(tmp), tiny=args.smoke)
            controlnet = None
            for label, options in variants:
                if "controlnet" in label and controlnet is None:
                    controlnet = save_controlnet(name, Path(tmp), model, tiny=args.smoke)
                opts = options.format(taesd=Path(tmp) / f"{name}-taesd", controlnet=controlnet)
                proc, port = start_runner(f"bench/{name}=turbo?model={model}&max_batch=4&{opts}")
                try:
                    url = f"ws://127.0.0.1:{port}/bench/{name}/realtime"
                    for batch in (1, 4):
                        fields = LINES if "controlnet" in label else IMAGE
                        figures = asyncio.run(frames(url, side, count, batch, fields))
                        row = {"model": name, "variant": label, "batch": batch, **figures}
                        results["runs"].append(row)
                        print(
                            f"{name:11} {label:44} batch {batch}: {figures['ms_per_frame']:7.1f} ms/frame "
                            f"({figures['fps']:6.1f} fps), engine call p50 {figures['engine_ms_p50']:7.1f} ms"
                        )
                finally:
                    proc.terminate()
                    proc.wait(60)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    print(f"figures in {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
