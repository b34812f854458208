"""The remote tier: one cache for a whole team, on object storage (S3, GCS, Azure) or a
shared folder (``file://``).

``url`` parses and redacts remote URLs; ``config`` is the checked ``hydra_cache.remote``
setting; ``layout`` names every object; ``backend`` is the small storage interface with the one
commit primitive, a conditional create; ``manifest`` builds, signs and checks the record an
entry is committed by; ``transfer`` moves blobs; ``lease`` guards against duplicate work;
``tier`` is the policy :class:`~hydra_cache.store.entry.CacheEntry` calls on a local miss.

Like the rest of the store, nothing here imports OmegaConf or Hydra; fsspec (and its s3fs,
gcsfs and adlfs backends) are imported only when a remote is first used.
"""

from __future__ import annotations

from hydra_cache.store.remote.config import MODES, RemoteSpec, parse_remote
from hydra_cache.store.remote.url import RemoteURL, parse_url, scrub

__all__ = ["MODES", "RemoteSpec", "RemoteURL", "parse_remote", "parse_url", "scrub"]
