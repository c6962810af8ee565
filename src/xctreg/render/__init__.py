"""DRR rendering: rays from the xctreg pinhole camera (source at the origin, +z along the beam; docs/geometry.md),
compiled/torch ray marching, Siddon reference."""

from xctreg.render.drr import RenderConfig, Renderer
from xctreg.render.rays import IndexRays, make_rays

__all__ = ["IndexRays", "RenderConfig", "Renderer", "make_rays"]
