"""weights.untrained_vgg19: the ImageNet network's shapes with seeded He-normal values."""
import numpy as np

import weights
from minivgg.architecture import CONV_SHAPES


def test_untrained_weights_have_the_table_shapes_he_scale_and_are_seeded():
    params = weights.untrained_vgg19(seed=3)
    assert list(params) == list(CONV_SHAPES)
    for name, (w, b) in params.items():
        cout, cin, kh, kw = CONV_SHAPES[name]
        assert w.shape == (cout, cin, kh, kw) and b.shape == (cout,) and w.dtype == np.float32
        assert not b.any()
        std = np.sqrt(2.0 / (cin * kh * kw))                          # He et al. 2015
        # the sample standard deviation of n normal draws has relative spread ~ 1 / sqrt(2n): >= 1728 draws
        assert abs(w.std() / std - 1) < 4 / np.sqrt(2 * w.size), (name, w.std(), std)
        assert abs(w.mean()) < 4 * std / np.sqrt(w.size), name
    again = weights.untrained_vgg19(seed=3)
    other = weights.untrained_vgg19(seed=4)
    assert all(np.array_equal(params[n][0], again[n][0]) for n in params)
    assert not np.array_equal(params["conv1_1"][0], other["conv1_1"][0])
