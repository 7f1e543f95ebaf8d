"""``push``: a push plan into one or more repositories, blobs first, tags last.

Order, per reference: every blob is checked (``HEAD``) and, when missing, mounted from
another repository of the same registry known to hold it, else uploaded; only when every
blob is confirmed do manifests go up: the platform manifests and the SBOM artifacts by
digest (with the referrers tag ``sha256-<hex>`` where the registry has no referrers API),
and the image last, by tag. So a tag never names an image whose parts are missing, and a
push that fails half-way leaves only unreferenced blobs behind. Manifests the registry
already has under the same digest (and a tag that already names the image) are not sent
again: a second push sends nothing but ``HEAD`` requests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from composer.errors import UsageError
from composer.jsonsafe import load_json
from composer.publish.blobs import BlobMover, Progress, RegistryDigestError, expect_status
from composer.publish.layout import INDEX_TYPES, MANIFEST_TYPES, MAX_MANIFEST, Blob, Manifest, PushPlan
from composer.publish.locations import BlobLocations
from composer.publish.reference import ImageReference
from composer.publish.session import RegistrySession, RegistrySettings, read_bounded, small_body
from composer.publish.wire import RegistryError, parse_digest
from composer.sources.fetch import with_retries
from composer.writers.oci import MEDIA_INDEX, canonical_json

ACCEPT = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))


@dataclass(frozen=True)
class PushResult:
    """What one reference got: the digest to pin and what had to move."""

    reference: ImageReference
    digest: str
    uploaded: int
    mounted: int
    present: int
    bytes_sent: int
    manifests_sent: int
    referrers: str

    def summary(self) -> str:
        blobs = self.uploaded + self.mounted + self.present
        if self.uploaded == 0 and self.mounted == 0 and self.manifests_sent == 0:
            return (f"{self.reference.name}: nothing to upload: all {blobs} blobs and every "
                    "manifest are already there")
        parts = [f"{self.uploaded} of {blobs} blobs uploaded ({_size(self.bytes_sent)})"]
        if self.mounted:
            parts.append(f"{self.mounted} mounted from other repositories")
        if self.present:
            parts.append(f"{self.present} already there")
        parts.append(f"{self.manifests_sent} manifest(s) sent")
        return f"{self.reference.name}: " + ", ".join(parts)


def push_plan(plan: PushPlan, refs: Sequence[ImageReference], settings: RegistrySettings, *,
              locations: BlobLocations | None = None) -> list[PushResult]:
    """Push ``plan`` to every reference, in order; the blob-location hints are saved after."""
    for ref in refs:
        if ref.digest and ref.digest != plan.digest:
            raise UsageError(f"{ref.text}: pins {ref.digest}, but the image in {plan.source} is "
                             f"{plan.digest}")
    places = locations or BlobLocations(None)
    sessions: dict[tuple[str, str], RegistrySession] = {}
    results = []
    try:
        for ref in refs:
            key = (ref.registry, ref.repository)
            if key not in sessions:
                sessions[key] = RegistrySession(ref, settings)
            results.append(_Pusher(sessions[key], plan, places).push(ref))
    finally:
        places.save()
    return results


class _Pusher:
    def __init__(self, session: RegistrySession, plan: PushPlan, places: BlobLocations) -> None:
        self.session = session
        self.plan = plan
        self.places = places
        self.mover = BlobMover(session)
        self.settings = session.settings
        self.manifests_sent = 0

    def push(self, ref: ImageReference) -> PushResult:
        log = self.settings.log
        log(f"==> pushing {self.plan.digest} to {ref.name}")
        uploaded = mounted = present = sent = 0
        for blob in self.plan.blobs:
            if self.mover.exists(blob):
                present += 1
            elif self._mount(blob):
                mounted += 1
            else:
                with self._bar(blob) as progress:
                    self.mover.upload(blob, progress)
                uploaded += 1
                sent += blob.size
            self.places.add(self.session.registry, self.session.repository, [blob.digest])
        for child in self.plan.children:
            self._put_manifest(child, child.digest)
        referrers = self._artifacts()
        target = ref.tag or self.plan.digest
        self._put_manifest(self.plan.image, target)
        result = PushResult(ref, self.plan.digest, uploaded, mounted, present, sent,
                            self.manifests_sent, referrers)
        log(f"==> {result.summary()}")
        return result

    def _mount(self, blob: Blob) -> bool:
        for source in self.places.repositories(self.session.registry, blob.digest):
            if source != self.session.repository and self.mover.mount(blob, source):
                return True
        return False

    # -- manifests -----------------------------------------------------------

    def _remote_digest(self, reference: str, step: str) -> str | None:
        """The digest the repository has under ``reference`` (a tag or digest), or None."""
        url = self.session.url(f"manifests/{reference}")
        where = self.session.where(step)

        def attempt() -> str | None:
            with self.session.send("HEAD", url, where=where, headers={"Accept": ACCEPT}) as response:
                if response.status_code == 404:
                    return None
                expect_status(response, (200,), where)
                return parse_digest(response.headers.get("Docker-Content-Digest"))

        result: str | None = with_retries(self.settings.network, attempt, what=where, url=url)
        return result

    def _put_manifest(self, manifest: Manifest, reference: str) -> bool:
        """PUT the exact bytes under ``reference`` unless it already names them; True when the
        registry answered with an ``OCI-Subject`` header (it has the referrers API)."""
        step = f"sending {manifest.role} {manifest.digest[:19]} as {reference[:40]}"
        if self._remote_digest(reference, f"checking {manifest.role} {reference[:40]}") \
                == manifest.digest:
            return False
        url = self.session.url(f"manifests/{reference}")
        where = self.session.where(step)

        def attempt() -> bool:
            headers = {"Content-Type": manifest.media_type}
            with self.session.send("PUT", url, where=where, headers=headers,
                                   body=manifest.data) as response:
                if response.status_code == 400:
                    body = small_body(response)
                    if b"DIGEST_INVALID" in body:
                        raise RegistryDigestError(f"{where}: the registry reports a digest "
                                                  f"mismatch for {manifest.digest}")
                    expect_status(response, (201,), where, body=body)
                expect_status(response, (201, 200, 204), where)
                stored = parse_digest(response.headers.get("Docker-Content-Digest"))
                if stored is not None and stored != manifest.digest:
                    raise RegistryDigestError(
                        f"{where}: the registry stored it as {stored}, not {manifest.digest} "
                        "(it rewrote the bytes; the digest you pin would not be the one built)")
                return "OCI-Subject" in response.headers

        subject_header = bool(with_retries(self.settings.network, attempt, what=where, url=url))
        self.manifests_sent += 1
        return subject_header

    # -- referrers -----------------------------------------------------------

    def _artifacts(self) -> str:
        """Push the SBOM artifacts; where the registry has no referrers API, keep the
        ``sha256-<hex>`` tag of each subject listing its artifacts (the spec's fallback)."""
        if not self.plan.artifacts:
            return "none"
        api = False
        for artifact in self.plan.artifacts:
            api = self._put_manifest(artifact, artifact.digest) or api
        if api:
            return "referrers API"
        by_subject: dict[str, list[Manifest]] = {}
        for artifact in self.plan.artifacts:
            if artifact.subject is not None:
                by_subject.setdefault(artifact.subject, []).append(artifact)
        modes = set()
        for subject, artifacts in sorted(by_subject.items()):
            modes.add(self._referrers_fallback(subject, artifacts))
        return " and ".join(sorted(modes))

    def _referrers_fallback(self, subject: str, artifacts: list[Manifest]) -> str:
        url = self.session.url(f"referrers/{subject}")
        where = self.session.where(f"asking for the referrers of {subject[:19]}")

        def supported() -> bool:
            with self.session.send("GET", url, where=where,
                                   headers={"Accept": MEDIA_INDEX}) as response:
                return response.status_code == 200

        if with_retries(self.settings.network, supported, what=where, url=url):
            return "referrers API"
        tag = subject.replace(":", "-")
        existing = self._fetch_index(tag)
        entries: list[Any] = list(existing)
        have = {e.get("digest") for e in entries if isinstance(e, dict)}
        added = False
        for artifact in artifacts:
            if artifact.digest in have:
                continue
            desc: dict[str, Any] = {**artifact.descriptor.as_json()}
            if artifact.artifact_type:
                desc["artifactType"] = artifact.artifact_type
            if artifact.annotations:
                desc["annotations"] = artifact.annotations
            entries.append(desc)
            added = True
        if added:
            data = canonical_json({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": entries})
            index = Manifest("sha256:" + hashlib.sha256(data).hexdigest(), MEDIA_INDEX, data,
                             "referrers index")
            self._put_manifest(index, tag)
        return f"tag {tag}"

    def _fetch_index(self, tag: str) -> list[Any]:
        """The ``manifests`` of the referrers index under ``tag`` (empty when there is none)."""
        url = self.session.url(f"manifests/{tag}")
        where = self.session.where(f"reading the referrers tag {tag[:20]}…")

        def attempt() -> list[Any]:
            with self.session.send("GET", url, where=where,
                                   headers={"Accept": MEDIA_INDEX}) as response:
                if response.status_code == 404:
                    return []
                expect_status(response, (200,), where)
                body = read_bounded(response, MAX_MANIFEST, where=where)
            doc = load_json(body, what=where, error=RegistryError, max_bytes=MAX_MANIFEST)
            manifests = doc.optional("manifests")
            if manifests is None:
                return []
            return [item.raw() for item in manifests.items(max_items=10_000)
                    if isinstance(item.raw(), dict)]

        result: list[Any] = with_retries(self.settings.network, attempt, what=where, url=url)
        return result

    # -- terminal ------------------------------------------------------------

    @contextmanager
    def _bar(self, blob: Blob) -> Iterator[Progress | None]:
        if not self.settings.network.progress:
            yield None
            return
        import sys

        from tqdm import tqdm

        with tqdm(total=blob.size, unit="B", unit_scale=True, leave=False, file=sys.stderr,
                  desc=f"{blob.role} {blob.digest[7:19]}") as bar:
            update: Callable[[int], Any] = bar.update
            yield Progress(on_bytes=update)


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"
