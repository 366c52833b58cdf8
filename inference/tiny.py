"""Build an offline, random-weight SDXL (base, refiner, VAE, LoRAs, embedding, ControlNets, IP-Adapter) and more.

The parts have the real SDXL structure (two CLIP text encoders, a "text_time"
UNet, a refiner UNet with aesthetic-score conditioning, an 8× VAE) at a tiny
width, so the same loading and generation code runs on them as on the real
weights, in well under a second per image on a CPU. They draw noise, not
pictures. Nothing is downloaded: the tokenizer is a byte-level CLIP tokenizer
made here, and every weight comes from a fixed torch seed, so two builds are
identical file for file.

Layout under ``<data_dir>/models/tiny/``::

    base/         StableDiffusionXLPipeline folder (native size 128×128)
    refiner/      StableDiffusionXLImg2ImgPipeline folder (text_encoder_2, tokenizer_2, vae as base)
    inpainter/    StableDiffusionXLInpaintPipeline folder: a 9-channel UNet (latents, mask, masked image),
                  the rest as base, as diffusers/stable-diffusion-xl-1.0-inpainting-0.1 is laid out
    vae/          a second AutoencoderKL (other weights)
    lora/         tiny_lora.safetensors    (diffusers format, base UNet attention)
    lora-2/       tiny_lora_2.safetensors
    embedding/    tiny_embedding.safetensors (SDXL format: clip_l, clip_g; token <tiny>)
    safety-checker/  StableDiffusionSafetyChecker + CLIPImageProcessor (32 px; passes every image)
    taesd/        AutoencoderTiny (TAESD-shaped preview decoder: latents to full-size RGB)
    controlnet/   ControlNetModel made from the base UNet, its zero convolutions randomised
    controlnet-2/ a second one (other random output convolutions), to switch and combine
    upscaler/     tiny_upscaler_x4.safetensors (Real-ESRGAN SRVGGNetCompact ×4, 8 features, 2 convolutions)
    upscaler-x2/  tiny_upscaler_x2.safetensors (Real-ESRGAN RRDBNet ×2, 4 features, 1 block)
    depth/        DepthAnythingForDepthEstimation + its DPT image processor (16-wide DINOv2, 56 px input)
    pose/         VitPoseForPoseEstimation + its image processor (16-wide, 2-layer ViT, 64×48 input, 17 heatmaps)
    ip-adapter/   tiny_ip_adapter.safetensors (IP-Adapter for the base UNet) + image_encoder/ (32 px CLIP vision)
    captioner/    BlipForConditionalGeneration + its BlipProcessor (16-wide, 1-layer vision and text, 32 px input,
                  a BERT tokenizer of a few hundred English words: it writes words, at random)
    .complete     written last; a folder without it is rebuilt

Catalog entries name the parts as ``tiny:<part>``; `resolve` maps such an id
to its folder and file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "NATIVE_SIZE",
    "PARTS",
    "SDXL_SCHEDULER_CONFIG",
    "TOKEN",
    "build",
    "ensure",
    "is_built",
    "load_tokenizer",
    "resolve",
    "save_inpainter",
    "save_sdxl",
    "tiny_root",
    "write_tokenizer",
]

NATIVE_SIZE = 128
TOKEN = "<tiny>"
# Bump when the build changes, so old folders are rebuilt.
_VERSION = "10"
_MARKER = ".complete"

# part -> (folder, weight file inside it or None for a diffusers folder)
PARTS: dict[str, tuple[str, str | None]] = {
    "base": ("base", None),
    "refiner": ("refiner", None),
    "inpainter": ("inpainter", None),
    "vae": ("vae", None),
    "lora": ("lora", "tiny_lora.safetensors"),
    "lora-2": ("lora-2", "tiny_lora_2.safetensors"),
    "embedding": ("embedding", "tiny_embedding.safetensors"),
    "safety-checker": ("safety-checker", None),
    "taesd": ("taesd", None),
    "controlnet": ("controlnet", None),
    "controlnet-2": ("controlnet-2", None),
    "upscaler": ("upscaler", "tiny_upscaler_x4.safetensors"),
    "upscaler-x2": ("upscaler-x2", "tiny_upscaler_x2.safetensors"),
    "depth": ("depth", None),
    "pose": ("pose", None),
    "ip-adapter": ("ip-adapter", "tiny_ip_adapter.safetensors"),
    "captioner": ("captioner", None),
}

_CLIP_L = {"hidden_size": 32, "intermediate_size": 37, "projection_dim": 32}
_CLIP_G = {"hidden_size": 64, "intermediate_size": 96, "projection_dim": 64}
_TIME_EMBED_DIM = 8
# The scheduler config of stabilityai/stable-diffusion-xl-base-1.0, so that
# step splits computed on the tiny model hold for the real one.
SDXL_SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "use_karras_sigmas": False,
}


def tiny_root(data_dir: Path) -> Path:
    """Return the folder the tiny model lives in under `data_dir`."""
    return Path(data_dir) / "models" / "tiny"


def resolve(local_id: str, data_dir: Path) -> tuple[Path, str | None]:
    """Map a ``tiny:<part>`` catalog id to its folder and weight file, building the model if needed.

    Args:
        local_id: a catalog ``local`` id such as ``tiny:base`` or ``tiny:lora``.
        data_dir: the data directory the model is (or will be) built under.

    Returns:
        The folder, and the file name inside it for LoRAs and embeddings (None for diffusers folders).
    """
    prefix, _, part = local_id.partition(":")
    if prefix != "tiny" or part not in PARTS:
        raise ValueError(f"{local_id!r} is not a tiny model part (known: {', '.join(sorted(PARTS))})")
    folder, weight_name = PARTS[part]
    return ensure(data_dir) / folder, weight_name


def ensure(data_dir: Path) -> Path:
    """Build the tiny model under `data_dir` unless a complete build of this version is there.

    Safe to call from several processes at once: each builds into its own
    temporary folder and the first to finish moves it into place.

    Returns:
        The tiny model's root folder.
    """
    root = tiny_root(data_dir)
    if _is_complete(root):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=root.parent))
    try:
        _build_into(staging)
        if _is_complete(root):
            return root
        if root.exists():
            shutil.rmtree(root)
        try:
            os.rename(staging, root)
        except OSError:
            # Another process moved its build in between; theirs is as good as ours.
            if not _is_complete(root):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def build(data_dir: Path) -> Path:
    """Build the tiny model under `data_dir`, replacing any earlier build.

    Returns:
        The tiny model's root folder.
    """
    root = tiny_root(data_dir)
    if root.exists():
        shutil.rmtree(root)
    return ensure(data_dir)


def is_built(data_dir: Path) -> bool:
    """Tell whether a complete build of this version is under `data_dir` (building nothing)."""
    return _is_complete(tiny_root(data_dir))


def _is_complete(root: Path) -> bool:
    marker = root / _MARKER
    return marker.is_file() and marker.read_text(encoding="utf-8").strip() == _VERSION


def _build_into(root: Path) -> None:
    """Write every part into `root`, the marker last."""
    tokenizer_dir = root / ".tokenizer"
    write_tokenizer(tokenizer_dir)
    tokenizer = load_tokenizer(tokenizer_dir)
    text_encoder, text_encoder_2 = _text_encoders(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    unet = _unet(cross_attention_dim=_CLIP_L["hidden_size"] + _CLIP_G["hidden_size"], time_ids=6, seed=1)
    refiner_unet = _unet(cross_attention_dim=_CLIP_G["hidden_size"], time_ids=5, seed=2)
    vae = _vae(seed=3)
    save_sdxl(root, tokenizer_dir, text_encoder, text_encoder_2, unet, refiner_unet, vae)
    save_inpainter(root / "inpainter", tokenizer_dir, text_encoder, text_encoder_2, _inpainting(unet, seed=18), vae)
    shutil.rmtree(tokenizer_dir)

    _vae(seed=4).save_pretrained(root / "vae")
    _save_lora(unet, root / "lora", PARTS["lora"][1], seed=5)
    _save_lora(unet, root / "lora-2", PARTS["lora-2"][1], seed=6)
    _save_embedding(root / "embedding", PARTS["embedding"][1], seed=7)
    _save_safety_checker(root / "safety-checker", seed=8)
    _taesd(seed=9).save_pretrained(root / "taesd")
    _controlnet(unet, seed=10).save_pretrained(root / "controlnet")
    _controlnet(unet, seed=11).save_pretrained(root / "controlnet-2")
    _save_upscaler(root / "upscaler", PARTS["upscaler"][1], "compact", seed=12)
    _save_upscaler(root / "upscaler-x2", PARTS["upscaler-x2"][1], "rrdb", seed=13)
    _save_depth(root / "depth", seed=14)
    _save_pose(root / "pose", seed=15)
    _save_ip_adapter(unet, root / "ip-adapter", PARTS["ip-adapter"][1], seed=16)
    _save_captioner(root / "captioner", seed=17)
    (root / _MARKER).write_text(_VERSION + "\n", encoding="utf-8")


def save_sdxl(
    root: Path, tokenizer_dir: Path, text_encoder: Any, text_encoder_2: Any, unet: Any, refiner_unet: Any, vae: Any
) -> None:
    """Save an SDXL pair as the real one is laid out: ``base/`` and ``refiner/`` pipeline folders.

    The refiner shares the second text encoder and the VAE and has aesthetic-score conditioning;
    both use SDXL's scheduler config and the tokenizer written to `tokenizer_dir` (`write_tokenizer`).
    """
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    base = {"text_encoder": text_encoder, "tokenizer": load_tokenizer(tokenizer_dir), "unet": unet}
    refiner = {
        "text_encoder": None,
        "tokenizer": None,
        "unet": refiner_unet,
        "requires_aesthetics_score": True,
        "force_zeros_for_empty_prompt": False,
    }
    _save_pipeline(StableDiffusionXLPipeline, root / "base", tokenizer_dir, text_encoder_2, vae, **base)
    _save_pipeline(StableDiffusionXLImg2ImgPipeline, root / "refiner", tokenizer_dir, text_encoder_2, vae, **refiner)


def save_inpainter(
    folder: Path, tokenizer_dir: Path, text_encoder: Any, text_encoder_2: Any, unet: Any, vae: Any
) -> None:
    """Save an SDXL inpainting pipeline folder: `unet` takes 9 channels, the other parts are the base's."""
    from diffusers import StableDiffusionXLInpaintPipeline

    encoders = {"text_encoder": text_encoder, "tokenizer": load_tokenizer(tokenizer_dir), "unet": unet}
    _save_pipeline(StableDiffusionXLInpaintPipeline, folder, tokenizer_dir, text_encoder_2, vae, **encoders)


def _save_pipeline(cls: Any, folder: Path, tokenizer_dir: Path, text_encoder_2: Any, vae: Any, **parts: Any) -> None:
    """Save one SDXL pipeline folder of `cls` with SDXL's scheduler config and our tokenizer's own files."""
    from diffusers import EulerDiscreteScheduler

    tokenizer = load_tokenizer(tokenizer_dir)
    scheduler = EulerDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG)
    pipe = cls(vae=vae, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer, scheduler=scheduler, **parts)
    pipe.save_pretrained(folder)
    # save_pretrained writes the tokenizer's own files; ours are the byte-level vocabulary as written.
    for sub in ("tokenizer", "tokenizer_2"):
        if (folder / sub).is_dir():
            for name in ("vocab.json", "merges.txt"):
                shutil.copyfile(tokenizer_dir / name, folder / sub / name)


def _byte_unicode_chars() -> list[str]:
    """Return GPT-2's printable stand-ins for the 256 byte values, as CLIP's BPE uses them."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in chars:
            chars[byte] = chr(256 + extra)
            extra += 1
    return [chars[byte] for byte in range(256)]


def write_tokenizer(folder: Path) -> None:
    """Write a CLIP tokenizer with no merges: every word is spelled out byte by byte."""
    chars = _byte_unicode_chars()
    tokens = [*chars, *(char + "</w>" for char in chars), "<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True)
    vocab = {token: index for index, token in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")


def load_tokenizer(folder: Path) -> Any:
    """Load the tokenizer `write_tokenizer` wrote, at CLIP's context length."""
    from transformers import CLIPTokenizer

    # CLIP's context length; without it the tokenizer would not pad or truncate to 77.
    return CLIPTokenizer.from_pretrained(folder, model_max_length=77)


def _text_encoders(vocab_size: int, bos: int, eos: int) -> tuple[Any, Any]:
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def config(sizes: dict[str, int]) -> CLIPTextConfig:
        return CLIPTextConfig(
            vocab_size=vocab_size,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=eos,
            num_attention_heads=4,
            num_hidden_layers=5,
            max_position_embeddings=77,
            hidden_act="gelu",
            layer_norm_eps=1e-5,
            **sizes,
        )

    torch.manual_seed(0)
    text_encoder = CLIPTextModel(config(_CLIP_L))
    torch.manual_seed(0)
    text_encoder_2 = CLIPTextModelWithProjection(config(_CLIP_G))
    return text_encoder.eval(), text_encoder_2.eval()


def _unet(cross_attention_dim: int, time_ids: int, seed: int) -> Any:
    """Make a two-level SDXL UNet; `time_ids`: 6 for the base, 5 (with aesthetic score) for the refiner."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=NATIVE_SIZE // 8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        transformer_layers_per_block=(1, 2),
        cross_attention_dim=cross_attention_dim,
        addition_embed_type="text_time",
        addition_time_embed_dim=_TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=time_ids * _TIME_EMBED_DIM + _CLIP_G["projection_dim"],
        norm_num_groups=32,
    ).eval()


def _inpainting(unet: Any, seed: int) -> Any:
    """Return a copy of `unet` widened to SDXL inpainting's 9 input channels: latents, mask, masked image.

    The real inpainting UNet was trained on from the base's weights; here its five new input
    channels are random (seeded) and the rest is the base's.
    """
    import torch
    from diffusers import UNet2DConditionModel

    config = dict(unet.config)
    config["in_channels"] = 9
    widened = UNet2DConditionModel.from_config(config)
    state = unet.state_dict()
    generator = torch.Generator().manual_seed(seed)
    old = state["conv_in.weight"]
    extra = torch.randn((old.shape[0], 5, *old.shape[2:]), generator=generator) * old.std()
    state["conv_in.weight"] = torch.cat([old, extra], dim=1)
    widened.load_state_dict(state)
    return widened.eval()


def _controlnet(unet: Any, seed: int) -> Any:
    """Make an SDXL ControlNet from the base UNet, as ControlNet training starts, with its output convolutions random.

    A trained ControlNet starts from the UNet's encoder and zero convolutions (the residuals it
    adds, and the last layer of the guide's embedding, are zeros), so a fresh one changes nothing.
    Drawing those at random too makes the tiny ControlNet move the image, so a test that it acts
    (or acts only on its steps) can fail.
    """
    import torch
    from diffusers import ControlNetModel

    # Seeded before from_unet: the guide's embedding (all but its last layer) is not taken from the UNet.
    torch.manual_seed(seed)
    controlnet = ControlNetModel.from_unet(unet, conditioning_channels=3)
    zero_convs = [
        *controlnet.controlnet_down_blocks,
        controlnet.controlnet_mid_block,
        controlnet.controlnet_cond_embedding.conv_out,
    ]
    with torch.no_grad():
        for conv in zero_convs:
            conv.reset_parameters()  # PyTorch's default (Kaiming-uniform) draw
    return controlnet.eval()


def _save_ip_adapter(unet: Any, folder: Path, file_name: str | None, seed: int) -> None:
    """Save a random-weight IP-Adapter for the base UNet and its CLIP image encoder (32 px) with the processor.

    The file is in the layout diffusers reads from an IP-Adapter ``.safetensors``: ``image_proj.*``
    (a linear projection of the image embedding to 4 tokens, then a layer norm) and
    ``ip_adapter.<k>.to_k_ip/to_v_ip`` for each cross-attention of the UNet, numbered 1, 3, 5… in
    the order of its attention processors. Drawn at random, so the image prompt moves the image and a
    test that it acts (or acts only on its steps) can fail.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    assert file_name is not None
    torch.manual_seed(seed)
    vision = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2}
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**vision, image_size=32, patch_size=8, projection_dim=32))
    encoder.eval().save_pretrained(folder / "image_encoder")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder / "image_encoder"
    )
    cross = unet.config.cross_attention_dim
    tensors = {
        "image_proj.proj.weight": torch.randn(4 * cross, 32) * 0.2,
        "image_proj.proj.bias": torch.zeros(4 * cross),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    modules = dict(unet.named_modules())
    cross_attentions = [name for name in unet.attn_processors if name.endswith("attn2.processor")]
    for number, name in zip(range(1, 2 * len(cross_attentions), 2), cross_attentions, strict=True):
        attention = modules[name.removesuffix(".processor")]
        for to in ("to_k", "to_v"):
            linear = getattr(attention, to)
            tensors[f"ip_adapter.{number}.{to}_ip.weight"] = torch.randn(linear.out_features, linear.in_features) * 0.3
    save_file({key: value.contiguous() for key, value in tensors.items()}, folder / file_name)


def _taesd(seed: int) -> Any:
    """Make a tiny-autoencoder preview decoder of TAESD's shape (8× upsampling) with a few thousand weights."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    return AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
    ).eval()


def _vae(seed: int) -> Any:
    """Make a four-level (8× downsampling, like SDXL's) VAE of a few thousand weights."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
        sample_size=NATIVE_SIZE,
        scaling_factor=0.13025,
        force_upcast=True,
    ).eval()


def _save_lora(unet: Any, folder: Path, weight_name: str | None, seed: int) -> None:
    """Save a random rank-4 LoRA on the base UNet's attention in the diffusers format."""
    import copy

    import torch
    from diffusers import StableDiffusionXLPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    model = copy.deepcopy(unet)
    # init_lora_weights=False draws B at random too, so weight 1 changes the image.
    model.add_adapter(
        LoraConfig(r=4, lora_alpha=4, init_lora_weights=False, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    )
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(model))
    state = {key: value.detach().contiguous() for key, value in state.items()}
    StableDiffusionXLPipeline.save_lora_weights(folder, unet_lora_layers=state, weight_name=weight_name)


def _save_embedding(folder: Path, file_name: str | None, seed: int) -> None:
    """Save a two-vector textual inversion for both encoders, as SDXL embeddings are shipped."""
    import torch
    from safetensors.torch import save_file

    assert file_name is not None
    torch.manual_seed(seed)
    folder.mkdir(parents=True)
    tensors = {
        "clip_l": torch.randn(2, _CLIP_L["hidden_size"]),
        "clip_g": torch.randn(2, _CLIP_G["hidden_size"]),
    }
    save_file(tensors, folder / file_name)


def _save_safety_checker(folder: Path, seed: int) -> None:
    """Save a random-weight Stable Diffusion safety checker (a 32 px CLIP vision model) and its processor."""
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(seed)
    vision = {
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "image_size": 32,
        "patch_size": 4,
    }
    text = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2}
    checker = StableDiffusionSafetyChecker(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32))
    with torch.no_grad():
        checker.concept_embeds.normal_()
        checker.special_care_embeds.normal_()
        # Thresholds above any cosine similarity (at most 1): random weights must not flag noise at
        # random, so the tiny checker passes every image; tests flag one with tests/fakes/safety.py.
        checker.concept_embeds_weights.fill_(2.0)
        checker.special_care_embeds_weights.fill_(2.0)
    checker.eval().save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)


def _save_upscaler(folder: Path, file_name: str | None, kind: str, seed: int) -> None:
    """Save a random-weight Real-ESRGAN network under its official weight names, as ``.safetensors``.

    ``compact``: SRVGGNetCompact ×4 (about 5,000 weights); ``rrdb``: RRDBNet ×2, which
    pixel-unshuffles its input (conv_first takes 12 channels; about 4,000 weights).
    """
    import torch
    from safetensors.torch import save_file

    from inference.local._esrgan import RRDBNet, SRVGGNetCompact

    assert file_name is not None
    torch.manual_seed(seed)
    net = (
        SRVGGNetCompact(features=8, convs=2, scale=4)
        if kind == "compact"
        else RRDBNet(scale=2, features=4, blocks=1, growth=4)
    )
    folder.mkdir(parents=True)
    save_file({key: value.detach().contiguous() for key, value in net.state_dict().items()}, folder / file_name)


def _save_depth(folder: Path, seed: int) -> None:
    """Save a random-weight Depth Anything (a 16-wide, 4-layer DINOv2 backbone) and its image processor.

    The weights are drawn wider than the library's default (0.2, not 0.02) so that the random
    network's output varies across an image instead of sitting at zero behind its last ReLU.
    """
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessorPil

    torch.manual_seed(seed)
    backbone = Dinov2Config(
        hidden_size=16,
        num_hidden_layers=4,
        num_attention_heads=2,
        mlp_ratio=2,
        image_size=28,
        patch_size=14,
        out_features=["stage1", "stage2", "stage3", "stage4"],
        reshape_hidden_states=False,
        initializer_range=0.2,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=16,
        neck_hidden_sizes=[8, 8, 16, 16],
        fusion_hidden_size=8,
        head_hidden_size=4,
        initializer_range=0.2,
    )
    DepthAnythingForDepthEstimation(config).eval().save_pretrained(folder)
    # Depth Anything's own processor settings (keep the aspect ratio, sides multiples of 14), at 56 px.
    DPTImageProcessorPil(
        size={"height": 56, "width": 56},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        resample=3,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(folder)


def _save_pose(folder: Path, seed: int) -> None:
    """Save a random-weight ViTPose (a 16-wide, 2-layer ViT with the simple decoder) and its image processor.

    Its input is 64×48 (ViTPose's 256×192 shape, a quarter of it) in 16-pixel patches, and its
    heatmaps 16×12, one for each of COCO's 17 keypoints. The weights are drawn wide (0.2) so that
    the heatmaps' peaks differ, keypoint by keypoint, and some pass the drawing's score threshold.
    """
    import torch
    from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation, VitPoseImageProcessorPil

    torch.manual_seed(seed)
    backbone = VitPoseBackboneConfig(
        image_size=[64, 48],
        patch_size=[16, 16],
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        mlp_ratio=2,
        out_indices=[2],
        initializer_range=0.2,
    )
    config = VitPoseConfig(backbone_config=backbone, num_labels=17, initializer_range=0.2)
    VitPoseForPoseEstimation(config).eval().save_pretrained(folder)
    VitPoseImageProcessorPil(size={"height": 64, "width": 48}).save_pretrained(folder)


# The tiny captioner's words: a random network picks among them, so its captions read as English.
_CAPTION_WORDS: tuple[str, ...] = (
    "a", "an", "the", "of", "on", "in", "with", "and", "at", "by", "near", "under", "over", "next", "to", "from",
    "its", "their", "two", "three", "four", "some", "group", "man", "woman", "boy", "girl", "child", "people",
    "person", "dog", "cat", "horse", "bird", "cow", "sheep", "fish", "car", "bus", "train", "boat", "bicycle",
    "plane", "tree", "flower", "grass", "forest", "field", "garden", "mountain", "hill", "river", "lake", "sea",
    "beach", "sand", "sky", "cloud", "sun", "moon", "star", "snow", "rain", "city", "street", "road", "bridge",
    "building", "house", "tower", "church", "castle", "room", "kitchen", "table", "chair", "bed", "window", "door",
    "wall", "floor", "roof", "shirt", "dress", "hat", "coat", "glasses", "cup", "plate", "bowl", "bottle", "book",
    "phone", "clock", "lamp", "picture", "painting", "photo", "drawing", "portrait", "view", "close", "up", "top",
    "front", "side", "background", "light", "shadow", "night", "day", "morning", "sunset", "red", "orange", "yellow",
    "green", "blue", "purple", "pink", "brown", "black", "white", "gray", "golden", "silver", "dark", "bright",
    "colorful", "large", "small", "big", "tall", "little", "old", "young", "long", "short", "wooden", "stone",
    "metal", "glass", "empty", "busy", "sunny", "cloudy", "foggy", "sitting", "standing", "walking", "running",
    "flying", "lying", "looking", "holding", "wearing", "riding", "playing", "eating", "smiling",
)  # fmt: skip


def _save_captioner(folder: Path, seed: int) -> None:
    """Save a random-weight BLIP captioner (16-wide, 1-layer vision and text) with its processor, as BLIP ships.

    The tokenizer is BERT's WordPiece over `_CAPTION_WORDS` (``vocab.txt``, as Salesforce's folders
    hold it) with BLIP's two added tokens: ``[DEC]``, the decoder's start (the config's
    ``bos_token_id``), and ``[ENC]``; a caption ends at ``[SEP]``, as in BERT. A trained
    captioner never writes its other special tokens; this one is kept from them by its output
    bias, so a decoded caption is words, not empty.
    """
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessorPil,
        BlipProcessor,
    )

    folder.mkdir(parents=True)
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # BERT's, at BERT's ids 0-4
    (folder / "vocab.txt").write_text("\n".join([*special, *_CAPTION_WORDS]) + "\n", encoding="utf-8")
    # 64: longer than any caption the worker asks for (its max_length), as BERT's 512 is for BLIP.
    tokenizer = BertTokenizer(vocab=str(folder / "vocab.txt"), model_max_length=64)
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 64,
        "encoder_hidden_size": 16,  # the vision width: the decoder cross-attends to the image's patches
        "bos_token_id": tokenizer.bos_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "initializer_range": 0.2,
    }
    vision = {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
        "initializer_range": 0.2,
    }
    torch.manual_seed(seed)
    config = BlipConfig(text_config=text, vision_config=vision, projection_dim=16, image_text_hidden_size=16)
    model = BlipForConditionalGeneration(config).eval()
    with torch.no_grad():
        bias = model.text_decoder.cls.predictions.bias
        for token in tokenizer.all_special_ids:
            if token != tokenizer.sep_token_id:
                bias[token] = -1e4  # within float16's range, for a GPU worker running the tiny model in half
    model.save_pretrained(folder)
    BlipProcessor(BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer).save_pretrained(folder)
