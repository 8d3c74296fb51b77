"""Tiny image towers of the real architectures, for the test fixtures of model families whose image tower is a timm
model (SigLIP's ViT with attention pooling, MobileCLIP's FastViT MCi). They are timm's own model classes with
fewer and narrower layers, registered under these names so that open_clip configs in tools/model_configs can name
them; importing this module registers them."""
from timm.models import register_model
from timm.models.fastvit import fastvit_mci0
from timm.models.vision_transformer import vit_base_patch16_siglip_224


@register_model
def tiny_vit_siglip(pretrained=False, **kwargs):
    """vit_base_patch16_siglip_224 (no class token, MAP pooling) at width 32, 2 blocks."""
    return vit_base_patch16_siglip_224(pretrained, **dict(dict(embed_dim=32, depth=2, num_heads=2), **kwargs))


@register_model
def tiny_fastvit_mci(pretrained=False, **kwargs):
    """fastvit_mci0 (RepMixer stages, then attention with conditional positional encoding) with one block per stage."""
    return fastvit_mci0(pretrained, **dict(dict(layers=(1, 1, 1, 1), embed_dims=(8, 16, 32, 64)), **kwargs))


# The published model each tiny test config stands for: a random-weights export preprocesses images as that
# model's weights expect (tools/export_model.py).
STANDS_FOR = {"siglip-tiny": "ViT-B-16-SigLIP", "siglip2-tiny": "ViT-B-16-SigLIP2", "mobileclip-tiny": "MobileCLIP-S1"}
