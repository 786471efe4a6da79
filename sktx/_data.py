# Transitional re-exports while the data layer moves to sktx.data (removed at the end).
from sktx.data._sets import *  # noqa: F403
