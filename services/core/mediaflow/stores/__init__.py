from mediaflow.stores.artifacts import ArtifactStore
from mediaflow.stores.vector import VectorIndex

__all__ = ["ArtifactStore", "VectorIndex"]
