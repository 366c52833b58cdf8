"""The offline tiny SDXL: deterministic, complete, loadable like any diffusers folder."""

from __future__ import annotations

import hashlib
import json

import pytest

from inference import tiny


def digests(root):
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_half_built_folder_is_rebuilt_identically(tiny_data_dir, tmp_path):
    """A folder without the marker is rebuilt, and the rebuild is byte-identical to another build."""
    half = tiny.tiny_root(tmp_path)
    (half / "base").mkdir(parents=True)
    (half / "base" / "leftover.txt").write_text("crashed here")
    root = tiny.ensure(tmp_path)
    assert not (root / "base" / "leftover.txt").exists()
    assert digests(root) == digests(tiny.tiny_root(tiny_data_dir))


def test_ensure_keeps_a_complete_build(tiny_data_dir):
    """A complete build is reused as it is."""
    root = tiny.tiny_root(tiny_data_dir)
    before = {path: path.stat().st_mtime_ns for path in root.rglob("*")}
    assert tiny.ensure(tiny_data_dir) == root
    assert {path: path.stat().st_mtime_ns for path in root.rglob("*")} == before


def test_layout(tiny_data_dir):
    """Every part is where resolve says, as plain diffusers folders and safetensors files."""
    for part, (folder, weight_name) in tiny.PARTS.items():
        path, name = tiny.resolve(f"tiny:{part}", tiny_data_dir)
        assert path == tiny.tiny_root(tiny_data_dir) / folder
        assert name == weight_name
        if name:
            assert (path / name).is_file()
        else:
            assert (path / "model_index.json").is_file() or (path / "config.json").is_file()
    refiner_index = json.loads((tiny.tiny_root(tiny_data_dir) / "refiner" / "model_index.json").read_text())
    assert refiner_index["text_encoder"] == [None, None]
    assert refiner_index["requires_aesthetics_score"] is True


@pytest.mark.parametrize("local_id", ["tiny:nope", "base", "sdxl:base"])
def test_resolve_rejects_other_ids(local_id, tiny_data_dir):
    """Only tiny:<part> ids resolve."""
    with pytest.raises(ValueError, match="not a tiny model part"):
        tiny.resolve(local_id, tiny_data_dir)


def test_loads_offline_with_sdxl_classes(tiny_data_dir):
    """Base and refiner load with from_pretrained(local_files_only=True), sharing encoder 2 and VAE."""
    import torch
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    root = tiny.tiny_root(tiny_data_dir)
    base = StableDiffusionXLPipeline.from_pretrained(root / "base", local_files_only=True)
    refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(
        root / "refiner",
        text_encoder_2=base.text_encoder_2,
        tokenizer_2=base.tokenizer_2,
        vae=base.vae,
        local_files_only=True,
    )
    assert refiner.text_encoder_2 is base.text_encoder_2 and refiner.vae is base.vae
    assert base.unet.config.addition_embed_type == "text_time"
    assert refiner.unet.config.projection_class_embeddings_input_dim == 5 * 8 + 64
    assert base.vae_scale_factor == 8
    assert base.tokenizer.model_max_length == 77
    assert base.unet.config.sample_size * base.vae_scale_factor == tiny.NATIVE_SIZE
    ids = base.tokenizer("a cat").input_ids
    assert ids[0] == base.tokenizer.bos_token_id and ids[-1] == base.tokenizer.eos_token_id
    with torch.no_grad():
        out = base.text_encoder_2(torch.tensor([ids]), output_hidden_states=True)
    assert out.text_embeds.shape == (1, 64)
