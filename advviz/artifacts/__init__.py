"""One registry of every network advviz downloads or trains, with its provenance.

``get(name) -> (module, Record)`` is the one path (weight folders, cache, sha256-checked
download, training with checkpoint and resume); see :mod:`advviz.artifacts._core` for the rules
of identity, records, seals and memoising, :mod:`advviz.artifacts.recipes` for the typed recipes
and :mod:`advviz.zoo` (a higher layer, found through the store's provider hook) for the entries.
``advviz artifacts list|build`` is its CLI.
"""

from advviz.artifacts._core import (
    META_KEY,
    PROVIDERS,
    SEAL_KEY,
    ArtifactError,
    ArtifactSpec,
    BuildContext,
    Built,
    Recipe,
    Record,
    add_provider,
    forget,
    fresh,
    get,
    get_spec,
    identity,
    list_artifacts,
    load_providers,
    record,
    register,
    register_builder,
    resolve,
    seal,
    sha256_file,
    status,
    track,
    write,
)
from advviz.artifacts._provenance import provenance, provenance_lines, records
from advviz.artifacts._tools import build, listing, ship, weights_readme, write_weights_readme

__all__ = ["META_KEY", "PROVIDERS", "SEAL_KEY", "add_provider", "load_providers", "register_builder", "seal",
           "sha256_file", "ArtifactError", "ArtifactSpec", "BuildContext", "Built", "Recipe", "Record", "build", "forget",
           "fresh", "get", "get_spec", "identity", "list_artifacts", "provenance", "provenance_lines", "record",
           "records", "register", "resolve", "ship", "status",
           "track", "weights_readme", "write", "write_weights_readme", "listing"]
