"""The official figures of the released ResNet-RS checkpoints (facts sheet sections 3.1, 3.3).

Reference data, used by rs.tools.summary's table (docs/models.md) and the tests: trainable
parameters with 1000 classes (equal in the TF1 code, timm and rs), forward GFLOPs per image at
the released resolution (2 x multiply-accumulates, every conv tap counted; the paper's 4.6 for
RS-50@160 and ~128 for RS-420@320 agree), and the README's ImageNet top-1.
"""
PARAMS = {
    'resnetrs50': 35_691_912, 'resnetrs101': 63_618_696, 'resnetrs152': 86_621_576,
    'resnetrs200': 93_209_992, 'resnetrs270': 129_861_448, 'resnetrs350': 163_956_168,
    'resnetrs420': 191_891_656,
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

# The resolution of the released checkpoint that timm ported for each name (timm's file names:
# resnetrs101_i192_ema, resnetrs152_i256_ema, resnetrs350_i256_ema, ...; configs/rs*_i*.py):
# what rs.convert's imports are evaluated at.
TIMM_IMAGE_SIZE = {'resnetrs50': 160, 'resnetrs101': 192, 'resnetrs152': 256,
                   'resnetrs200': 256, 'resnetrs270': 256, 'resnetrs350': 256,
                   'resnetrs420': 320}
