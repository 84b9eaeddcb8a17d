"""sei: Scale-Equivariant Imaging.

Self-supervised training of deblurring and super-resolution networks from blurry or
low-resolution measurements alone (Scanvic, Davies, Abry, Tachella, IEEE TCI 2026).
"""

__version__ = "0.1.0"
