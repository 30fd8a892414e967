"""Drawing only: masks and overlays, score plots, learning curves, notebook-sized copies of saved figures, animations."""

from segkit.viz.masks import *  # noqa: F401,F403
from segkit.viz.scores import *  # noqa: F401,F403
from segkit.viz.curves import *  # noqa: F401,F403
from segkit.viz.pyramid import *  # noqa: F401,F403
from segkit.viz.thumbnails import *  # noqa: F401,F403
from segkit.viz.animation import *  # noqa: F401,F403
