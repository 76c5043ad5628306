"""ResNet-RS networks (Flax Linen); nothing here imports training code."""
from rs.models import architecture
from rs.models.registry import DTYPES, MODELS, STAGE_SIZES, create_model
from rs.models.resnet import ResNet
