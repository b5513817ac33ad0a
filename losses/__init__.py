"""The losses of Gatys et al. as forward/backward pairs on feature maps.

Shape legend: F, P (N, C, H, W) features of the generated and the content
image at one layer; N_l = C filters, M_l = H * W positions; G, A (N, C, C) Gram
matrices; t (H, W) a region's guide at that layer (``losses.guided``). Every
loss returns a 0-d array (no device sync) and a named cache.
"""
from losses.content import content_loss_backward, content_loss_forward
from losses.guided import (guided_gram, guided_gram_backward, guided_style_loss_backward,
                           guided_style_loss_forward, region_mass)
from losses.style import gram_backward, gram_matrix, style_loss_backward, style_loss_forward
from losses.tv import tv_loss_backward, tv_loss_forward

__all__ = ["content_loss_forward", "content_loss_backward", "gram_matrix", "gram_backward",
           "style_loss_forward", "style_loss_backward", "guided_gram", "guided_gram_backward",
           "guided_style_loss_forward", "guided_style_loss_backward", "region_mass",
           "tv_loss_forward", "tv_loss_backward"]
