# Transitional re-exports while the data layer moves to sktx.data (removed at the end).
from sktx.data._pseudobulk import *  # noqa: F403
from sktx.data._pseudobulk import _nonzero_sums_by_chunks, nonzero_level  # noqa: F401
