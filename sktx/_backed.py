# Transitional re-exports while the data layer moves to sktx.data (removed at the end).
from sktx.data._backed import *  # noqa: F403
from sktx.data._backed import _open_x, _positions  # noqa: F401
from sktx.data._checks import backed_rows  # noqa: F401
