"""Apply a sharing plan through a backend, one action at a time, and say exactly what was applied.

``reconcile(pack, backend, apply=...)`` reads the live state, computes the plan and (when asked, and
when the plan is not blocked) applies it. Every action ends with one ``ActionResult``:

- ``applied``: the server accepted the write;
- ``converged``: the server answered "already exists" / "does not exist" for a resource that is
  already in the wanted state (e.g. a rerun after a lost response, or a delete of something gone);
- ``failed``: the server refused; the message carries its error code and what to do;
- ``skipped``: not attempted because an action it depends on failed (a share that was not created
  gets no objects or grants) or because the run was a dry run.

A partial failure leaves the workspace in a state the next plan starts from, so a rerun converges.

Secrets: a TOKEN recipient's credential (a Unity Catalog activation link, or the local server's
profile file with its bearer token) is written by ``ActivationLinkStore`` to a file only the user
can read; results carry only the file's path. The credential is never logged or returned.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from guidewire_pipeline.sharing.backends import SharingApiError, SharingBackend
from guidewire_pipeline.sharing.plan import Action, ActionKind, Locate, Plan, compute_plan, managing_pack
from guidewire_pipeline.sharing.sharepack import SharePack

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    APPLIED = "applied"
    CONVERGED = "converged"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class ActionResult:
    action: Action
    outcome: Outcome
    message: str = ""


CREDENTIAL_SUFFIXES = {"activation link": ".activation-link", "profile file": ".share"}


class ActivationLinkStore:
    """Writes token recipients' credentials to ``<directory>/<recipient><suffix>``, mode 0600, in a 0700
    folder: ``.activation-link`` for Unity Catalog's activation links, ``.share`` for the local server's
    profile files (the file a partner passes to the Delta Sharing client)."""

    def __init__(self, directory: str | Path, kind: str = "activation link") -> None:
        self.directory = Path(directory).expanduser()
        self.kind = kind
        self.suffix = CREDENTIAL_SUFFIXES[kind]

    def save(self, recipient: str, link: str) -> Path:
        """Write the credential (replacing an older one) and return the file's path. Never logs it."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)
        path = self.directory / f"{recipient}{self.suffix}"
        # O_CREAT with 0600 so the file is never readable by others, not even for a moment.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, (link + "\n").encode())
        finally:
            os.close(fd)
        return path


@dataclass
class SharingResult:
    """A plan and what became of each of its actions."""

    plan: Plan
    results: list[ActionResult] = field(default_factory=list)
    dry_run: bool = True
    mode: str = ""
    """Why it was (not) applied, e.g. "dry run: no Databricks workspace configured"."""
    activation_links: dict[str, Path] = field(default_factory=dict)
    """Recipient name → file holding its credential (the path only; the file is the secret)."""
    audit_rows: int = 0

    def with_outcome(self, outcome: Outcome) -> list[ActionResult]:
        return [r for r in self.results if r.outcome == outcome]

    @property
    def applied(self) -> list[ActionResult]:
        return [r for r in self.results if r.outcome in (Outcome.APPLIED, Outcome.CONVERGED)]

    @property
    def failed(self) -> list[ActionResult]:
        return self.with_outcome(Outcome.FAILED)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.plan.blocked

    def summary(self) -> str:
        counts = {o.value: len(self.with_outcome(o)) for o in Outcome}
        return (
            f"{self.mode}: {len(self.plan.actions)} planned, "
            + ", ".join(f"{n} {o}" for o, n in counts.items())
            + (f", {len(self.plan.refusals)} refused" if self.plan.refusals else "")
            + (f", {len(self.plan.orphans)} orphaned" if self.plan.orphans else "")
        )

    def results_markdown(self) -> str:
        if not self.results:
            return "Nothing applied."
        lines = ["| # | outcome | action | message |", "|---|---|---|---|"]
        for i, r in enumerate(self.results, 1):
            lines.append(
                f"| {i} | {r.outcome.value} | {r.action.describe().replace('|', '/')} | "
                f"{r.message.replace('|', '/')} |"
            )
        return "\n".join(lines)


def reconcile(
    pack: SharePack,
    backend: SharingBackend,
    links: ActivationLinkStore,
    *,
    apply: bool,
    rotate: tuple[str, ...] = (),
    locate: Locate | None = None,
) -> SharingResult:
    """Read, plan and, if ``apply`` and the backend can write and nothing is refused, apply.

    The plan refuses data objects the backend does not know (``known_tables``), named at ``locate``'s
    location, and renews the credentials of the recipients in ``rotate`` (``*``: all token recipients).
    """
    names = {obj.name for share in pack.share for obj in share.data_objects}
    plan = compute_plan(pack, backend.read_state(pack), rotate=rotate,
                        known_tables=backend.known_tables(names), locate=locate)
    if not apply or not backend.can_write:
        mode = "dry run: plan only" if backend.can_write else backend.description
        return SharingResult(
            plan, [ActionResult(a, Outcome.SKIPPED, "dry run") for a in plan.actions], True, mode
        )
    return apply_plan(plan, backend, links)


def apply_plan(plan: Plan, backend: SharingBackend, links: ActivationLinkStore) -> SharingResult:
    """Apply a computed plan. A blocked plan applies nothing (every action ``skipped``)."""
    if plan.blocked:
        return SharingResult(
            plan,
            [ActionResult(a, Outcome.SKIPPED, "plan refused: see refusals") for a in plan.actions],
            False,
            "refused: nothing applied",
        )
    result = SharingResult(plan, dry_run=False, mode=f"applied to {backend.description}")
    result.results = _apply(plan, backend, links, result.activation_links)
    return result


def _apply(
    plan: Plan, backend: SharingBackend, links: ActivationLinkStore, link_files: dict[str, Path]
) -> list[ActionResult]:
    results: dict[int, ActionResult] = {}
    failed_recipients: set[str] = set()
    failed_shares: set[str] = set()
    indexed = [(i, a) for i, a in enumerate(plan.actions)]

    def run(
        indices: list[int], write: Callable[[], str | None], handled: Callable[[SharingApiError], str | None]
    ) -> bool:
        """Run one write covering ``indices``; record one result per action. True when it succeeded.

        An error that is not an API answer (network, local I/O) fails these actions and stops the
        apply: the rest is recorded as skipped, so the result still says exactly what was applied."""
        try:
            note = write()
        except SharingApiError as exc:
            converged = handled(exc)
            for i in indices:
                if converged is not None:
                    results[i] = ActionResult(plan.actions[i], Outcome.CONVERGED, converged)
                else:
                    results[i] = ActionResult(
                        plan.actions[i], Outcome.FAILED, _failure_message(plan.actions[i], exc)
                    )
            return converged is not None
        except Exception as exc:
            for i in indices:
                results[i] = ActionResult(
                    plan.actions[i],
                    Outcome.FAILED,
                    f"{type(exc).__name__}: {exc} — check connectivity and rerun",
                )
            raise _Stop from exc
        for i in indices:
            results[i] = ActionResult(plan.actions[i], Outcome.APPLIED, note or "")
        return True

    def never(exc: SharingApiError) -> str | None:
        return None

    def gone(exc: SharingApiError) -> str | None:
        return "already deleted" if exc.does_not_exist else None

    def skip(i: int, why: str) -> None:
        results[i] = ActionResult(plan.actions[i], Outcome.SKIPPED, why)

    try:
        # recipients
        for i, a in indexed:
            if a.kind == ActionKind.REPLACE_RECIPIENT:
                ok = run([i], lambda a=a: _replace_recipient(backend, links, link_files, a), never)
            elif a.kind == ActionKind.CREATE_RECIPIENT:
                ok = run(
                    [i],
                    lambda a=a: _create_recipient(backend, links, link_files, a),
                    lambda exc, a=a: _created_already(backend, plan, a, exc),
                )
            elif a.kind == ActionKind.UPDATE_RECIPIENT:
                ok = run([i], lambda a=a: backend.update_recipient(a.name, a.attributes), never)
            elif a.kind == ActionKind.ROTATE_TOKEN:
                ok = run([i], lambda a=a: _save_credential(links, link_files, a.name,
                                                           backend.rotate_token(a.name)), never)
            else:
                continue
            if not ok and a.kind in (ActionKind.REPLACE_RECIPIENT, ActionKind.CREATE_RECIPIENT):
                failed_recipients.add(a.name)

        # shares
        for i, a in indexed:
            if a.kind == ActionKind.CREATE_SHARE:
                if not run(
                    [i],
                    lambda a=a: backend.create_share(a.name, a.attributes["comment"]),
                    lambda exc, a=a: _created_already(backend, plan, a, exc),
                ):
                    failed_shares.add(a.name)
            elif a.kind == ActionKind.UPDATE_SHARE:
                run([i], lambda a=a: backend.update_share_comment(a.name, a.attributes["comment"]), never)

        # objects, one atomic request per share
        object_kinds = {
            ActionKind.ADD_OBJECT: "ADD",
            ActionKind.UPDATE_OBJECT: "UPDATE",
            ActionKind.REMOVE_OBJECT: "REMOVE",
        }
        grant_kinds = (ActionKind.GRANT, ActionKind.REVOKE)
        for share in _ordered_unique(a.share for a in plan.actions if a.kind in object_kinds):
            indices = [i for i, a in indexed if a.share == share and a.kind in object_kinds]
            if share in failed_shares:
                for i in indices:
                    skip(i, f"share {share!r} was not created")
                continue
            updates = [
                (object_kinds[plan.actions[i].kind], plan.actions[i].name, plan.actions[i].attributes)
                for i in indices
            ]
            run(
                indices,
                lambda share=share, updates=updates: backend.update_share_objects(share, updates),
                never,
            )

        # grants and revokes, one atomic request per share
        for share in _ordered_unique(a.share for a in plan.actions if a.kind in grant_kinds):
            indices = []
            for i, a in indexed:
                if a.share != share or a.kind not in grant_kinds:
                    continue
                if share in failed_shares:
                    skip(i, f"share {share!r} was not created")
                elif a.kind == ActionKind.GRANT and a.name in failed_recipients:
                    skip(i, f"recipient {a.name!r} was not created")
                else:
                    indices.append(i)
            if not indices:
                continue
            grant = [plan.actions[i].name for i in indices if plan.actions[i].kind == ActionKind.GRANT]
            revoke = [plan.actions[i].name for i in indices if plan.actions[i].kind == ActionKind.REVOKE]
            run(
                indices,
                lambda share=share, g=grant, r=revoke: backend.update_share_permissions(share, g, r),
                never,
            )

        # deletions (prune)
        for i, a in indexed:
            if a.kind == ActionKind.DELETE_SHARE:
                run([i], lambda a=a: backend.delete_share(a.name), gone)
            elif a.kind == ActionKind.DELETE_RECIPIENT:
                run([i], lambda a=a: backend.delete_recipient(a.name), gone)

    except _Stop:
        for i in range(len(plan.actions)):
            results.setdefault(
                i, ActionResult(plan.actions[i], Outcome.SKIPPED, "not attempted: the apply stopped")
            )
    return [results[i] for i in sorted(results)]


class _Stop(Exception):
    """Raised inside ``_apply`` to stop after an unexpected (non-API) error."""


def _ordered_unique(values: object) -> list[str]:
    seen: dict[str, None] = {}
    for value in values:  # type: ignore[attr-defined]
        if value is not None:
            seen.setdefault(value, None)
    return list(seen)


def _create_recipient(
    backend: SharingBackend, links: ActivationLinkStore, link_files: dict[str, Path], action: Action
) -> str | None:
    """Create the recipient and store its credential (activation link or profile file)."""
    return _save_credential(links, link_files, action.name, backend.create_recipient(action.name, action.attributes))


def _save_credential(
    links: ActivationLinkStore, link_files: dict[str, Path], recipient: str, credential: str | None
) -> str | None:
    """Store a credential the server just issued. The server shows it once, so one that cannot be
    stored does not undo the write: the note says how to get a new one."""
    if not credential:
        return None
    try:
        link_files[recipient] = links.save(recipient, credential)
    except OSError as exc:
        return (
            f"done, but its {links.kind} could not be written to {links.directory} ({exc.strerror}): "
            f"fix GW_ACTIVATION_LINK_DIR and rotate the recipient's token (rotate: [{recipient}]) to get a new one"
        )
    log.info("%s of recipient %s written to %s (mode 0600)", links.kind.capitalize(), recipient, link_files[recipient])
    return f"{links.kind} written to {link_files[recipient]}"


def _replace_recipient(
    backend: SharingBackend, links: ActivationLinkStore, link_files: dict[str, Path], action: Action
) -> str | None:
    try:
        backend.delete_recipient(action.name)
    except SharingApiError as exc:
        if not exc.does_not_exist:
            raise
    return _create_recipient(backend, links, link_files, action)


def _created_already(backend: SharingBackend, plan: Plan, action: Action, exc: SharingApiError) -> str | None:
    """A create answered "already exists": converged if it is ours (e.g. a lost response), else a failure."""
    if not exc.already_exists:
        return None
    read = backend.get_share if action.kind == ActionKind.CREATE_SHARE else backend.get_recipient
    try:
        live = read(action.name)
    except SharingApiError:
        return None  # cannot tell whose it is: report the original "already exists" failure
    if live is not None and managing_pack(live.comment) == plan.pack_id:
        return f"already existed, managed by this pack ({exc.error_code}): the next plan reconciles its attributes"
    return None


def _failure_message(action: Action, exc: SharingApiError) -> str:
    hint = "fix the cause and run delta_sharing_job again; the next plan starts from what was applied"
    if exc.already_exists:
        hint = (
            f"{action.resource_type} {action.name!r} was created by someone else after the plan: set "
            "`adopt: true` to take it over, or rename it in the pack"
        )
    elif exc.does_not_exist:
        hint = (
            "something it refers to does not exist (deleted after the plan?): run delta_sharing_job "
            "again to re-plan"
        )
    return f"{exc.error_code} ({exc.status}): {exc.message} — {hint}"
