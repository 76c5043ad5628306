"""rs.data.randaugment against independent implementations (PIL, numpy) on real photographs.

The photos are scikit-image's bundled samples, downscaled with PIL for speed; one is
deliberately non-square so that a height/width mix-up in the geometric ops shows.
Every comparison states its tolerance next to it.
"""
import numpy as np
import pytest
import skimage.data
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from rs.data import randaugment as ra

GRAY = (128, 128, 128)


def _photo(loader, size):
  return np.asarray(Image.fromarray(loader()).resize(size, Image.BILINEAR))


PHOTOS = {
    'chelsea': _photo(skimage.data.chelsea, (225, 150)),  # (H, W) = (150, 225)
    'astronaut': _photo(skimage.data.astronaut, (128, 128)),
    'coffee': _photo(skimage.data.coffee, (180, 120)),
}
CHELSEA = PHOTOS['chelsea']
BIG = _photo(skimage.data.astronaut, (256, 256))  # large enough for 150 px translations


def _diff(ours, reference):
  return np.abs(np.asarray(ours).astype(np.int32) - np.asarray(reference).astype(np.int32))


def _assert_close(ours, reference, max_diff=0, max_frac=0.0, max_mean=None):
  """|difference| <= max_diff everywhere, and at most max_frac of the values differ at all."""
  ours = np.asarray(ours)
  assert ours.shape == np.asarray(reference).shape and ours.dtype == np.uint8
  d = _diff(ours, reference)
  assert d.max() <= max_diff, (d.max(), np.mean(d > 0))
  assert np.mean(d > 0) <= max_frac, np.mean(d > 0)
  if max_mean is not None:
    assert d.mean() <= max_mean, d.mean()


def _pil_affine(image, data):
  """PIL's inverse affine warp (output -> input), nearest, gray fill."""
  pil = Image.fromarray(image)
  return np.asarray(pil.transform(pil.size, Image.AFFINE, data, Image.NEAREST, fillcolor=GRAY))


photos = pytest.mark.parametrize('photo', list(PHOTOS))


# ---------------------------------------------------------------------------------------------
# The table of arguments.


def test_ops_are_the_official_sixteen_in_order():
  assert ra.OPS == ('AutoContrast', 'Equalize', 'Invert', 'Rotate', 'Posterize', 'Solarize',
                    'Color', 'Contrast', 'Brightness', 'Sharpness', 'ShearX', 'ShearY',
                    'TranslateX', 'TranslateY', 'Cutout', 'SolarizeAdd')


@pytest.mark.parametrize('magnitude, expected', [
    (10, dict(Rotate=30, ShearX=0.3, ShearY=0.3, TranslateX=100, TranslateY=100, Color=1.9,
              Contrast=1.9, Brightness=1.9, Sharpness=1.9, Posterize=4, Solarize=256,
              SolarizeAdd=110, Cutout=40)),
    (15, dict(Rotate=45, ShearX=0.45, ShearY=0.45, TranslateX=150, TranslateY=150, Color=2.8,
              Contrast=2.8, Brightness=2.8, Sharpness=2.8, Posterize=6, Solarize=384,
              SolarizeAdd=165, Cutout=60)),
])
def test_level_to_arg_table(magnitude, expected):
  """The facts-sheet table (section 4.3); integer arguments exactly, floats to 1e-12."""
  for name, value in expected.items():
    arg = ra.level_to_arg(name, magnitude)
    if isinstance(value, int) and name in ('Posterize', 'Solarize', 'SolarizeAdd', 'Cutout'):
      assert arg == value and isinstance(arg, int), name
    else:
      assert arg == pytest.approx(value, abs=1e-12), name
  for name in ('AutoContrast', 'Equalize', 'Invert'):
    assert ra.level_to_arg(name, magnitude) is None
  with pytest.raises(ValueError):
    ra.level_to_arg('Blur', magnitude)


def test_magnitude_sets_strength():
  """Stronger with M in {7, 10, 15} (same seed, so the same sign and Cutout centre):
  pixel ops change the photo more (mean |change|); geometric ops expose a larger gray fill
  (their mean |change| saturates on a photo). Posterize keeps int(4M/10) bits, so it gets
  *weaker* with M, as in the official code."""
  seed = tf.constant([3, 7], tf.int64)
  ms = (7, 10, 15)

  def change(name, m):
    return _diff(ra.apply_op(BIG, name, m, seed), BIG).mean()

  def gray_fill(name, m):
    return np.mean(np.all(ra.apply_op(BIG, name, m, seed).numpy() == 128, axis=-1))

  for name in ('Color', 'Contrast', 'Brightness', 'Sharpness', 'Cutout', 'SolarizeAdd'):
    strengths = [change(name, m) for m in ms]
    assert strengths[0] < strengths[1] < strengths[2], (name, strengths)
  for name in ('Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY'):
    strengths = [gray_fill(name, m) for m in ms]
    assert strengths[0] < strengths[1] < strengths[2], (name, strengths)
  posterize = [change('Posterize', m) for m in ms]
  assert posterize[0] > posterize[1] > posterize[2], posterize


# ---------------------------------------------------------------------------------------------
# Pixel ops against PIL / numpy.


def test_blend_rules():
  """Official/PIL blend: 0 -> degenerate, 1 -> original, truncation, clipping when
  extrapolating. Exact."""
  a = tf.constant([[[0, 100, 200]]], tf.uint8)
  b = tf.constant([[[255, 101, 0]]], tf.uint8)
  np.testing.assert_array_equal(ra.blend(a, b, 0.0), a)
  np.testing.assert_array_equal(ra.blend(a, b, 1.0), b)
  # 0 + 0.5 * 255 = 127.5 -> 127; 100.5 -> 100; 100 -> 100 (truncated, not rounded).
  np.testing.assert_array_equal(ra.blend(a, b, 0.5), [[[127, 100, 100]]])
  # Extrapolation: 0 + 2 * 255 = 510 -> 255; 102; 200 - 400 = -200 -> 0.
  np.testing.assert_array_equal(ra.blend(a, b, 2.0), [[[255, 102, 0]]])


@photos
def test_autocontrast_matches_pil(photo):
  """Most photo channels already span 0..255, so also squeeze them to 40..167 first.
  Tolerance: float32 (official) vs PIL's double at integer boundaries: |d| <= 1 on <= 1% of
  values (rounding instead of truncating would change about half of them)."""
  low = (PHOTOS[photo] // 2 + 40).astype(np.uint8)
  for image in (low, PHOTOS[photo]):
    _assert_close(ra.autocontrast(image), ImageOps.autocontrast(Image.fromarray(image)),
                  max_diff=1, max_frac=0.01)


@photos
def test_equalize_matches_pil(photo):
  """The official port is PIL's algorithm (step = (N - top count) // 255): exact."""
  _assert_close(ra.equalize(PHOTOS[photo]), ImageOps.equalize(Image.fromarray(PHOTOS[photo])))


def test_equalize_constant_channel_is_unchanged():
  image = np.full((8, 8, 3), 77, np.uint8)
  np.testing.assert_array_equal(ra.equalize(image), image)


@photos
def test_invert_posterize_solarize_match_pil(photo):
  """Exact, for every bit depth and thresholds around the edges (off-by-one shows)."""
  image = PHOTOS[photo]
  pil = Image.fromarray(image)
  _assert_close(ra.invert(image), ImageOps.invert(pil))
  for bits in range(1, 9):
    _assert_close(ra.posterize(image, bits), ImageOps.posterize(pil, bits))
  for threshold in (0, 1, 77, 127, 128, 129, 200, 255):
    _assert_close(ra.solarize(image, threshold), ImageOps.solarize(pil, threshold))


def test_posterize_out_of_range_bits_keep_the_top_bit():
  """int(4M/10) is 0 for M < 2.5 and > 8 for M >= 22.5; the official shift 8 - bits is cast
  to uint8 and clamped to 7 by TF, so both keep only the top bit (PIL would give 0s)."""
  for bits in (0, 9, 10):
    _assert_close(ra.posterize(CHELSEA, bits), CHELSEA & 0x80)
  _assert_close(ra.apply_op(CHELSEA, 'Posterize', 20, tf.constant([0, 0])), CHELSEA)


def test_solarize_threshold_wraps_like_the_official_uint8_cast():
  """The official threshold int(256 M/10) is converted to uint8: 256 -> 0 (invert all),
  384 -> 128. So Solarize at M=10 is Invert, and at M=15 the usual solarize at 128. Exact."""
  pil = Image.fromarray(CHELSEA)
  _assert_close(ra.solarize(CHELSEA, 256), ImageOps.invert(pil))
  _assert_close(ra.solarize(CHELSEA, 384), ImageOps.solarize(pil, 128))
  seed = tf.constant([0, 1], tf.int64)
  _assert_close(ra.apply_op(CHELSEA, 'Solarize', 10, seed), ImageOps.invert(pil))
  _assert_close(ra.apply_op(CHELSEA, 'Solarize', 15, seed), ImageOps.solarize(pil, 128))


@photos
def test_solarize_add_matches_numpy(photo):
  """Add (clipped) to values < 128 only. Exact."""
  image = PHOTOS[photo]
  for addition in (0, 30, 110, 165, -50):
    added = np.clip(image.astype(np.int64) + addition, 0, 255).astype(np.uint8)
    _assert_close(ra.solarize_add(image, addition), np.where(image < 128, added, image))


FACTORS = (0.1, 0.64, 1.9, 2.8)  # M = 0, 3, 10, 15


@photos
def test_color_matches_pil(photo):
  """TF's and PIL's grayscale weights round differently by one level on some pixels, which
  the blend scales by |1 - factor| <= 1.8. Tolerance: |d| <= 2, mean |d| <= 0.5."""
  image, pil = PHOTOS[photo], Image.fromarray(PHOTOS[photo])
  for factor in FACTORS:
    _assert_close(ra.color(image, factor), ImageEnhance.Color(pil).enhance(factor),
                  max_diff=2, max_frac=1.0, max_mean=0.5)


@photos
def test_contrast_true_mean_matches_pil(photo):
  """mean='true' is PIL's Contrast; the rounded mean gray level may differ by one between TF's
  and PIL's luma. Tolerance: |d| <= 2, mean |d| <= 1.5 (the gap to the official mode is tens)."""
  image, pil = PHOTOS[photo], Image.fromarray(PHOTOS[photo])
  for factor in FACTORS:
    _assert_close(ra.contrast(image, factor, mean='true'),
                  ImageEnhance.Contrast(pil).enhance(factor), max_diff=2, max_frac=1.0,
                  max_mean=1.5)


@photos
def test_contrast_true_mean_matches_pil_exactly_on_gray_photos(photo):
  """On R=G=B images TF's and PIL's luma agree, so the mean and its rounding (PIL:
  int(mean + 0.5); chelsea's and coffee's gray means end in .53 and .65) must match. Exact."""
  gray = np.asarray(Image.fromarray(PHOTOS[photo]).convert('L'))
  image = np.stack([gray] * 3, axis=-1)
  for factor in FACTORS:
    _assert_close(ra.contrast(image, factor, mean='true'),
                  ImageEnhance.Contrast(Image.fromarray(image)).enhance(factor))


@photos
def test_contrast_official_blends_towards_pixel_count_over_256(photo):
  """Official mode: the gray level is H*W/256 clipped to 255 and truncated, whatever the
  content; numpy float32 blend with truncation and clipping. Exact."""
  image = PHOTOS[photo]
  h, w, _ = image.shape
  level = np.float32(int(min(h * w / 256, 255)))
  for factor in FACTORS:
    blended = level + np.float32(factor) * (image.astype(np.float32) - level)
    if not 0 < factor < 1:
      blended = np.clip(blended, 0, 255)
    _assert_close(ra.contrast(image, factor), blended.astype(np.uint8))
  # The official and true means really differ on these photos (the option is meaningful).
  assert _diff(ra.contrast(image, 1.9), ra.contrast(image, 1.9, mean='true')).mean() > 5
  with pytest.raises(ValueError):
    ra.contrast(image, 1.9, mean='median')


@photos
def test_brightness_matches_pil(photo):
  """Blend from black; float32 vs PIL's double: |d| <= 1 on <= 0.01% of values."""
  image, pil = PHOTOS[photo], Image.fromarray(PHOTOS[photo])
  for factor in FACTORS:
    _assert_close(ra.brightness(image, factor), ImageEnhance.Brightness(pil).enhance(factor),
                  max_diff=1, max_frac=1e-4)


@photos
def test_sharpness_matches_pil(photo):
  """PIL's SMOOTH filter rounds where the official code truncates, one level on some pixels,
  scaled by |1 - factor|. Tolerance: |d| <= 2, mean |d| <= 1; the border is exactly PIL's."""
  image, pil = PHOTOS[photo], Image.fromarray(PHOTOS[photo])
  for factor in FACTORS:
    ours = ra.sharpness(image, factor).numpy()
    theirs = np.asarray(ImageEnhance.Sharpness(pil).enhance(factor))
    _assert_close(ours, theirs, max_diff=2, max_frac=1.0, max_mean=1.0)
    for edge in (np.s_[0], np.s_[-1], np.s_[:, 0], np.s_[:, -1]):
      np.testing.assert_array_equal(ours[edge], theirs[edge])


# ---------------------------------------------------------------------------------------------
# Geometric ops against PIL. Conventions: TF maps output pixel *indices* and rounds; PIL maps
# pixel *centres* (index + 0.5) and floors. The two agree except at exact .5 ties (and float32
# vs double near them).


@photos
@pytest.mark.parametrize('degrees', [30.0, -30.0, 45.0, -45.0, 17.3])
def test_rotate_matches_pil(photo, degrees):
  """Positive degrees turn the content counter-clockwise about the centre, as PIL's rotate.
  Tolerance: at most 0.5% of values differ (rounding ties); the opposite direction would
  differ on far more."""
  image = PHOTOS[photo]
  pil = Image.fromarray(image)
  ours = ra.rotate(image, degrees)
  _assert_close(ours, pil.rotate(degrees, Image.NEAREST, fillcolor=GRAY), max_diff=255,
                max_frac=0.005)
  wrong_way = np.asarray(pil.rotate(-degrees, Image.NEAREST, fillcolor=GRAY))
  assert np.mean(_diff(ours, wrong_way) > 0) > 0.2


def _half_integer_ties(values):
  """Where a float32 product lands within 1e-4 of k + 0.5 (round vs floor(. + 0.5) ties)."""
  frac = np.abs(values.astype(np.float32)) % 1
  return np.abs(frac - 0.5) < 1e-4


@photos
@pytest.mark.parametrize('level', [0.3, -0.3, 0.45, -0.45])
def test_shear_matches_pil(photo, level):
  """ShearX: output (x, y) reads input (x + level y, y); ShearY: (x, y + level x), the same
  matrices as the PIL AutoAugment ops. PIL's centre convention adds level/2, removed by the
  offset -level/2 (without it ~10% of values differ). Tolerance: differences only in the
  rows (ShearX) / columns (ShearY) where level * index is a .5 tie."""
  image = PHOTOS[photo]
  h, w, _ = image.shape
  mismatch = _diff(ra.shear_x(image, level), _pil_affine(image, (1, level, -level / 2, 0, 1, 0)))
  bad_rows = mismatch.any(axis=(1, 2))
  tie_rows = _half_integer_ties(np.float32(level) * np.arange(h, dtype=np.float32))
  assert not np.any(bad_rows & ~tie_rows), np.flatnonzero(bad_rows & ~tie_rows)
  mismatch = _diff(ra.shear_y(image, level), _pil_affine(image, (1, 0, 0, level, 1, -level / 2)))
  bad_cols = mismatch.any(axis=(0, 2))
  tie_cols = _half_integer_ties(np.float32(level) * np.arange(w, dtype=np.float32))
  assert not np.any(bad_cols & ~tie_cols), np.flatnonzero(bad_cols & ~tie_cols)
  # The opposite shear direction is far off.
  wrong = _pil_affine(image, (1, -level, level / 2, 0, 1, 0))
  assert np.mean(_diff(ra.shear_x(image, level), wrong) > 0) > 0.2


@photos
@pytest.mark.parametrize('pixels', [100.0, -100.0, 37.0, -60.0])
def test_translate_matches_pil(photo, pixels):
  """Output (x, y) reads input (x + pixels, y) (positive moves content left / up), as the
  official translate(image, [-pixels, 0]) and PIL's AutoAugment op. Integer shifts: exact."""
  image = PHOTOS[photo]
  _assert_close(ra.translate_x(image, pixels), _pil_affine(image, (1, 0, pixels, 0, 1, 0)))
  _assert_close(ra.translate_y(image, pixels), _pil_affine(image, (1, 0, 0, 0, 1, pixels)))


def test_translate_is_in_pixels_and_fills_gray():
  """150 px (M=15) on a 256-wide image: exactly the last 150 columns are gray."""
  out = ra.translate_x(BIG, 150.0).numpy()
  np.testing.assert_array_equal(out[:, :106], BIG[:, 150:])
  assert np.all(out[:, 106:] == 128)


# ---------------------------------------------------------------------------------------------
# Cutout.


def _numpy_cutout(image, pad, ch, cw):
  out = image.copy()
  out[max(0, ch - pad):min(image.shape[0], ch + pad),
      max(0, cw - pad):min(image.shape[1], cw + pad)] = 128
  return out


@pytest.mark.parametrize('pad, ch, cw', [(40, 75, 112), (40, 0, 0), (40, 149, 224), (60, 10, 200),
                                         (0, 50, 50), (200, 75, 100)])
def test_cutout_matches_numpy(pad, ch, cw):
  """A 2pad x 2pad gray square, rows/cols [c - pad, c + pad), clipped at the border. Exact."""
  _assert_close(ra.cutout(CHELSEA, pad, ch, cw), _numpy_cutout(CHELSEA, pad, ch, cw))


@pytest.mark.parametrize('magnitude', [10, 15])
def test_cutout_op_draws_a_centre_inside_the_image(magnitude):
  """apply_op('Cutout') equals the numpy cutout at the centre implied by the gray box."""
  pad = ra.level_to_arg('Cutout', magnitude)
  h, w, _ = CHELSEA.shape
  for s in range(5):
    out = ra.apply_op(CHELSEA, 'Cutout', magnitude, tf.constant([s, 11], tf.int64)).numpy()
    rows = np.flatnonzero(np.any(out != CHELSEA, axis=(1, 2)))
    cols = np.flatnonzero(np.any(out != CHELSEA, axis=(0, 2)))
    # A box not touching the top/left edge starts at c - pad; otherwise it ends at c + pad.
    ch = rows[0] + pad if rows[0] > 0 else rows[-1] + 1 - pad
    cw = cols[0] + pad if cols[0] > 0 else cols[-1] + 1 - pad
    assert 0 <= ch < h and 0 <= cw < w
    _assert_close(out, _numpy_cutout(CHELSEA, pad, ch, cw))


# ---------------------------------------------------------------------------------------------
# apply_op's random signs and the policy.


@pytest.mark.parametrize('name, fn, arg', [('Rotate', ra.rotate, 30.0),
                                           ('ShearX', ra.shear_x, 0.3),
                                           ('TranslateY', ra.translate_y, 100.0)])
def test_apply_op_uses_both_signs(name, fn, arg):
  """Over 16 seeds the signed ops come out as fn(+arg) or fn(-arg), both of them. Exact."""
  plus, minus = fn(CHELSEA, arg).numpy(), fn(CHELSEA, -arg).numpy()
  signs = set()
  for s in range(16):
    out = ra.apply_op(CHELSEA, name, 10, tf.constant([s, 5], tf.int64)).numpy()
    assert np.array_equal(out, plus) or np.array_equal(out, minus)
    signs.add(np.array_equal(out, plus))
  assert signs == {True, False}


def test_op_choice_is_uniform():
  """16 ops x 1000 draws: each count within 8 standard deviations' worth, and all used."""
  counts = np.zeros(len(ra.OPS), int)
  for s in range(1000):
    for layer in range(2):
      choice_seed, _ = ra.layer_seeds(tf.constant([s, 0], tf.int64), layer)
      counts[int(ra.choose_op(choice_seed))] += 1
  expected = 2000 / 16
  assert np.all(np.abs(counts - expected) < 8 * np.sqrt(expected)), counts


def test_one_layer_is_the_chosen_op():
  seed = tf.constant([4, 2], tf.int64)
  choice_seed, op_seed = ra.layer_seeds(seed, 0)
  name = ra.OPS[int(ra.choose_op(choice_seed))]
  _assert_close(ra.distort(CHELSEA, 1, 10, seed), ra.apply_op(CHELSEA, name, 10, op_seed))


def test_distort_deterministic_per_seed_and_varies_across_seeds():
  outs = []
  for s in range(8):
    seed = tf.constant([s, 123], tf.int64)
    a = ra.distort(CHELSEA, 2, 10, seed)
    b = ra.distort(CHELSEA, 2, 10, seed)
    assert a.dtype == tf.uint8 and a.shape == CHELSEA.shape
    np.testing.assert_array_equal(a, b)
    outs.append(a.numpy())
  assert len({o.tobytes() for o in outs}) >= 6


def test_distort_zero_layers_is_identity():
  out = ra.distort(CHELSEA, 0, 10, tf.constant([1, 2], tf.int64))
  np.testing.assert_array_equal(out, CHELSEA)


def test_distort_in_tf_data_map_matches_eager():
  """Graph mode (Dataset.map): same result as eager for the same (image, seed); static shape
  kept; int32 seeds work too."""
  seeds = np.stack([np.arange(4), np.full(4, 9)], axis=1)
  images = np.stack([CHELSEA] * 4)
  ds = tf.data.Dataset.from_tensor_slices((images, seeds)).map(
      lambda image, seed: ra.distort(image, 2, 15, seed, contrast_mean='true'))
  assert ds.element_spec.shape == CHELSEA.shape
  for graph_out, seed in zip(ds, seeds):
    eager = ra.distort(CHELSEA, 2, 15, tf.constant(seed, tf.int64), contrast_mean='true')
    np.testing.assert_array_equal(graph_out, eager)
  ds32 = tf.data.Dataset.from_tensor_slices((images, seeds.astype(np.int32))).map(
      lambda image, seed: ra.distort(image, 1, 10, seed))
  assert next(iter(ds32)).shape == CHELSEA.shape


def test_distort_with_unknown_static_shape():
  """A traced function with (None, None, 3) input runs every branch's graph."""
  fn = tf.function(lambda image, seed: ra.distort(image, 2, 10, seed), input_signature=[
      tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([2], tf.int64)])
  for s in range(3):
    seed = tf.constant([s, 1], tf.int64)
    np.testing.assert_array_equal(fn(CHELSEA, seed), ra.distort(CHELSEA, 2, 10, seed))


def test_distort_rejects_unknown_contrast_mean():
  with pytest.raises(ValueError):
    ra.distort(CHELSEA, 2, 10, tf.constant([1, 2], tf.int64), contrast_mean='mean')
