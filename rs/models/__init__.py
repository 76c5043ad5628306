"""ResNet-RS networks (Flax Linen); nothing here imports training code."""
from rs.models.registry import MODELS, STAGE_SIZES, create_model
from rs.models.resnet import ResNet
