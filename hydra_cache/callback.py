"""``ManifestCallback``: records each job's cache dirs and explains every miss at job start.

Select it with ``hydra/callbacks=cache_manifest`` (or ``_target_: hydra_cache.ManifestCallback``).

Hydra turns exceptions raised in callbacks into warnings, so an ordinary failure here is also
logged at ERROR where a user sees it. ``on_miss: error`` must stop the job before its task, so it
raises ``SystemExit(1)``, which Hydra does not swallow. The callback is created in the launching
process and pickled into sweep workers, so it keeps no state but plain data.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from hydra_cache import manifest, registry
from hydra_cache.errors import ConfigError
from hydra_cache.explain import explain
from hydra_cache.key import shown_overrides
from hydra_cache.resolver import ResolvedCacheDir, resolve_all
from hydra_cache.store.entry import CacheEntry, warn_if_under_keyed
from hydra_cache.store.liveness import iso_time
from hydra_cache.units import plural

log = logging.getLogger(__name__)

_LEVELS = {"build": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}


class ManifestCallback(Callback):
    """Writes ``<job output dir>/.hydra/cache.yaml`` and a sweep's ``cache_summary.yaml``."""

    def __init__(self, **_options: Any) -> None:
        self._manifest: dict[str, Any] | None = None
        self._path: Path | None = None

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._job_start(config)
        except SystemExit:
            raise
        except ConfigError as error:
            # The task raises the same one-line error as soon as it reads the cache dir, and
            # Hydra prints that one; logging it here, and raising it as a warning, said it
            # three times. The manifest keeps it for the record.
            log.debug("hydra-cache: this job's config cannot give a cache dir: %s", error)
            self._record_error(config, error)
        except Exception as error:
            log.error("hydra-cache could not record this job's cache dirs: %s", error)
            raise

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        try:
            self._job_end(job_return)
        except Exception as error:
            log.error("hydra-cache could not finish this job's cache manifest: %s", error)
            raise

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            sweep_dir = Path(str(config.hydra.sweep.dir))
            found = [manifest.read_yaml(p) for p in manifest.find_manifests(sweep_dir)]
            summary = manifest.summarize(found, str(sweep_dir))
            manifest.write_yaml(sweep_dir / manifest.SUMMARY_NAME, summary)
            log.info(
                "hydra-cache: %s shared %s and built %d of them (%s)",
                plural(summary["jobs"], "job"),
                plural(len(summary["entries"]), "cache entry", "cache entries"),
                summary["builds"],
                sweep_dir / manifest.SUMMARY_NAME,
            )
        except Exception as error:
            log.error("hydra-cache could not write the sweep's cache summary: %s", error)
            raise

    def _job_start(self, config: DictConfig) -> None:
        registry.forget_outcomes()
        hydra = config.hydra
        output_dir = str(hydra.runtime.output_dir)
        self._path = manifest.manifest_path(output_dir, hydra.output_subdir)
        resolved = resolve_all(config)
        records = [self._record(item) for item in resolved]
        self._manifest = {
            "format": manifest.FORMAT,
            "job": {
                "name": str(hydra.job.name),
                "num": OmegaConf.select(hydra, "job.num"),
                "overrides": shown_overrides(OmegaConf.select(hydra, "overrides.task") or []),
                "output_dir": output_dir,
            },
            "started": iso_time(time.time()),
            "entries": records,
        }
        manifest.write_yaml(self._path, self._manifest)
        on_miss = resolved[0].settings.on_miss if resolved else "build"
        missing = [r for r in records if r["status_at_start"] in ("miss", "torn")]
        for record in records:
            if record["status_at_start"] == "hit":
                _warn_if_under_keyed(record)
                continue
            level = _LEVELS[on_miss] if record in missing else logging.INFO
            text = record["explanation"]
            log.log(
                level,
                "cache miss for %s: %s\n%s",
                record["config_key"],
                text["summary"],
                "\n".join(f"    {line}" for line in text["details"]),
            )
        if on_miss == "error" and missing:
            log.error(
                "hydra_cache.on_miss=error: stopping before the task; %d cache dir(s) "
                "not ready: %s",
                len(missing),
                ", ".join(r["config_key"] for r in missing),
            )
            raise SystemExit(1)

    def _record_error(self, config: DictConfig, error: ConfigError) -> None:
        try:
            hydra = config.hydra
            self._path = manifest.manifest_path(str(hydra.runtime.output_dir), hydra.output_subdir)
            self._manifest = {
                "format": manifest.FORMAT,
                "job": {"name": str(hydra.job.name), "num": OmegaConf.select(hydra, "job.num")},
                "started": iso_time(time.time()),
                "error": str(error),
                "entries": [],
            }
            manifest.write_yaml(self._path, self._manifest)
        except Exception as failure:  # the record is a convenience; the task reports the error
            log.debug("hydra-cache could not record the config error: %s", failure)

    def _record(self, item: ResolvedCacheDir) -> dict[str, Any]:
        info = registry.lookup(item.path)
        explanation = explain(item.path, info)
        status = explanation.evidence["status"]  # explain read the entry's state already
        return {
            "config_key": item.config_key,
            "namespace": item.namespace,
            "key": item.derived.key,
            "digest": item.derived.digest,
            "root": str(item.root.path),
            "root_source": item.root.source,
            "path": item.path,
            "payload": item.derived.redacted_payload(),
            "upstreams": [
                {"config_key": up["config_key"], "namespace": up["namespace"], "key": up["key"]}
                for up in (info.upstreams if info else ())
                if up["digest"] in {direct.digest for direct in item.derived.upstreams}
            ],
            "status_at_start": status,
            "explanation": {
                "kind": explanation.kind,
                "summary": explanation.summary,
                "details": list(explanation.details),
            },
        }

    def _job_end(self, job_return: JobReturn) -> None:
        if self._manifest is None or self._path is None:
            return
        for record in self._manifest["entries"]:
            outcome = registry.outcome(record["path"])
            entry = CacheEntry(record["path"])
            if outcome is not None:
                record["status_at_end"] = outcome.action
            else:
                record["status_at_end"] = "ready" if entry.ready else "missing"
            meta = entry.metadata() or {}
            record["build_seconds"] = (
                outcome.build_seconds
                if outcome and outcome.build_seconds is not None
                else meta.get("build_seconds")
            )
            record["size_bytes"] = meta.get("size_bytes")
            uncovered = (meta.get("audit") or {}).get("uncovered")
            if uncovered:
                record["audit_uncovered"] = uncovered
        self._manifest["finished"] = iso_time(time.time())
        self._manifest["job_status"] = getattr(job_return.status, "name", str(job_return.status))
        manifest.write_yaml(self._path, self._manifest)


def _warn_if_under_keyed(record: dict[str, Any]) -> None:
    """A hit at job start on an entry whose build read values outside its key."""
    warn_if_under_keyed(Path(record["path"]), record["config_key"])
