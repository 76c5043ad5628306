"""The official figures of the released ResNet-RS checkpoints (facts sheet sections 3.1, 3.3)
and of EfficientNet B0-B7 (efficientnet_noisy_student.md sections 1.9 and 3).

Reference data, used by rs.tools.summary's table (docs/models.md) and the tests: trainable
parameters with 1000 classes (equal in the TF1 code, timm and rs), forward GFLOPs per image at
the released resolution (2 x multiply-accumulates, every conv tap counted; the paper's 4.6 for
RS-50@160 and ~128 for RS-420@320 agree), and the README's ImageNet top-1.
"""
PARAMS = {
    'resnetrs50': 35_691_912, 'resnetrs101': 63_618_696, 'resnetrs152': 86_621_576,
    'resnetrs200': 93_209_992, 'resnetrs270': 129_861_448, 'resnetrs350': 163_956_168,
    'resnetrs420': 191_891_656,
    # EfficientNet: TF trainable variables = timm's param_count.
    'efficientnet_b0': 5_288_548, 'efficientnet_b1': 7_794_184, 'efficientnet_b2': 9_109_994,
    'efficientnet_b3': 12_233_232, 'efficientnet_b4': 19_341_616,
    'efficientnet_b5': 30_389_784, 'efficientnet_b6': 43_040_704,
    'efficientnet_b7': 66_347_960,
}

# (model, resolution): (GFLOPs, top-1)
RELEASED = {
    ('resnetrs50', 160): (4.6, 78.8),
    ('resnetrs101', 160): (8.4, 80.3),
    ('resnetrs101', 192): (12.0, 81.2),
    ('resnetrs152', 192): (17.5, 82.0),
    ('resnetrs152', 224): (23.8, 82.2),
    ('resnetrs152', 256): (31.1, 83.0),
    ('resnetrs200', 256): (40.2, 83.4),
    ('resnetrs270', 256): (53.9, 83.8),
    ('resnetrs350', 256): (68.8, 84.0),
    ('resnetrs350', 320): (107.4, 84.2),
    ('resnetrs420', 320): (127.9, 84.4),
}

# EfficientNet at its native resolution: (multiply-accumulates in G, counted over convs and
# the classifier, efficientnet_noisy_student.md 1.9; the paper's "FLOPs"), top-1 (paper v5
# Table 2 = the README's AutoAugment checkpoints).
EFFICIENTNET = {
    'efficientnet_b0': (0.386, 77.1), 'efficientnet_b1': (0.687, 79.1),
    'efficientnet_b2': (0.994, 80.1), 'efficientnet_b3': (1.827, 81.6),
    'efficientnet_b4': (4.394, 82.9), 'efficientnet_b5': (10.27, 83.6),
    'efficientnet_b6': (19.07, 84.0), 'efficientnet_b7': (37.75, 84.3),
}

# The resolution of the released checkpoint that timm ported for each name (timm's file names:
# resnetrs101_i192_ema, resnetrs152_i256_ema, resnetrs350_i256_ema, ...; configs/rs*_i*.py;
# EfficientNet's native resolutions): what rs.convert's imports are evaluated at.
TIMM_IMAGE_SIZE = {'efficientnet_b0': 224, 'efficientnet_b1': 240, 'efficientnet_b2': 260,
                   'efficientnet_b3': 300, 'efficientnet_b4': 380, 'efficientnet_b5': 456,
                   'efficientnet_b6': 528, 'efficientnet_b7': 600,
                   'resnetrs50': 160, 'resnetrs101': 192, 'resnetrs152': 256,
                   'resnetrs200': 256, 'resnetrs270': 256, 'resnetrs350': 256,
                   'resnetrs420': 320}
