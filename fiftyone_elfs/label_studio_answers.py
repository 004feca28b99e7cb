"""Which Label Studio answers a load takes, and what a reload may change in the label field.

A task's *answer* is its latest annotation (by when it last changed) that is not a skip and picks
one class in the run's Choices control. Skips are not answers: a skip by a second annotator does
not hide the first one's answer, and a task counts as skipped only when it has no answer.

`plan_load` compares the answers with what the previous load recorded (per sample: the answer's
id, when it last changed, and the label ELFS wrote) and with what the label field holds now:

- an answer that is new or changed since the last load (or not written yet) is written, unless
  the field holds a label ELFS did not write there (changed in FiftyOne since the last load,
  or, for a run sent without ``overwrite``, set before the first load): that label is kept and
  reported;
- an unchanged answer writes nothing, so an edit made in FiftyOne since the last load stays;
- a loaded label whose answer was withdrawn (deleted or turned into a skip) is removed if the
  field still holds what ELFS wrote, else kept and reported (on every load, until cleared);
- answers on samples deleted from the dataset are counted apart;
- a task submitted without a usable class (no class or several picked, or a choice that is not
  one of the run's classes, which Label Studio's API and an edited labeling config allow) is
  counted apart and reported: Label Studio counts it as completed and will not show it again,
  so "unanswered" would send the user waiting for it. Its answer is not loaded.

Pure Python on plain values (no FiftyOne, no server), so every rule is testable alone.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

_N_EXAMPLES = 3


@dataclass
class AnnotationSummary:
    """What came back from one annotation run: each sent task counts once, as labeled (the field
    holds its answer), kept (the field holds a label changed in FiftyOne instead), skipped,
    unanswered, unusable (submitted without one of the run's classes), deleted (its sample is
    no longer in the dataset) or gone (the task is no longer in the Label Studio project)."""

    anno_key: str
    label_field: str
    n_sent: int
    n_labeled: int
    n_skipped: int
    n_unanswered: int
    n_kept: int = 0
    n_deleted: int = 0
    n_unusable: int = 0
    n_gone: int = 0
    labeled_ids: list[str] = field(default_factory=list)
    kept_ids: list[str] = field(default_factory=list)
    project_url: str = ""
    notices: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The counts and ids as a plain dict (operator results, run records)."""
        return asdict(self)


@dataclass(frozen=True)
class Answer:
    """A task's latest human answer: its Label Studio id, when it last changed, its class."""

    answer_id: int
    updated_at: str
    label: str

    def version(self) -> list[Any]:
        """What identifies this state of the answer in a run's record (id, last change)."""
        return [self.answer_id, self.updated_at]


@dataclass(frozen=True)
class TaskState:
    """A task's latest answer (None if it has none), whether anyone skipped it, whether it
    was submitted without picking exactly one choice (`unclear`; only when it has no answer),
    and whether it is gone from the project."""

    answer: Answer | None = None
    skipped: bool = False
    unclear: bool = False
    gone: bool = False  # no longer in the project (deleted in Label Studio)


def _sort_key(annotation: Mapping[str, Any]) -> tuple[float, int]:
    """Orders annotations by when they last changed (Label Studio's ISO time), then by id."""
    stamp = str(annotation.get("updated_at") or annotation.get("created_at") or "")
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        seconds = (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()
    except ValueError:
        seconds = float("-inf")
    return seconds, int(annotation.get("id") or 0)


def choice_of(annotation: Mapping[str, Any], from_name: str) -> str | None:
    """The one class an annotation picks in the Choices control `from_name` (None: no pick)."""
    for result in annotation.get("result") or []:
        if result.get("type") != "choices" or result.get("from_name") != from_name:
            continue
        choices = (result.get("value") or {}).get("choices") or []
        if len(choices) == 1:
            return str(choices[0])
    return None


def task_state(task: Mapping[str, Any], from_name: str) -> TaskState:
    """A task's latest answer and skip flag, from the task as Label Studio's API returns it."""
    annotations = task.get("annotations") or []
    answers = [
        a for a in annotations if not a.get("was_cancelled") and choice_of(a, from_name) is not None
    ]
    skipped = any(a.get("was_cancelled") for a in annotations)
    if not answers:
        submitted = any(not a.get("was_cancelled") for a in annotations)
        return TaskState(None, skipped, unclear=submitted)
    latest = max(answers, key=_sort_key)
    label = choice_of(latest, from_name)
    assert label is not None  # answers were filtered on having a choice
    answer = Answer(int(latest["id"]), str(latest.get("updated_at") or ""), label)
    return TaskState(answer, skipped)


@dataclass
class LoadPlan:
    """What one load writes and removes, the record it leaves, and how each task counts.

    `kept` holds (sample id, the label kept, the answer's label or None if withdrawn).
    """

    writes: dict[str, str] = field(default_factory=dict)
    removals: list[str] = field(default_factory=list)
    loaded: dict[str, list[Any]] = field(default_factory=dict)
    labeled: list[str] = field(default_factory=list)
    kept: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    n_deleted_answered: int = 0
    # (sample id, the choice it picked, or None when none or several were picked)
    unusable: list[tuple[str, str | None]] = field(default_factory=list)

    def summary(self, anno_key: str, label_field: str, project_url: str) -> AnnotationSummary:
        """The counts, ids and notices of this load (each sent task counted once)."""
        return AnnotationSummary(
            anno_key=anno_key,
            label_field=label_field,
            n_sent=sum(
                map(
                    len,
                    (
                        self.labeled,
                        self.kept,
                        self.skipped,
                        self.unanswered,
                        self.unusable,
                        self.deleted,
                        self.gone,
                    ),
                )
            ),
            n_labeled=len(self.labeled),
            n_skipped=len(self.skipped),
            n_unanswered=len(self.unanswered),
            n_kept=len(self.kept),
            n_deleted=len(self.deleted),
            n_unusable=len(self.unusable),
            n_gone=len(self.gone),
            labeled_ids=list(self.labeled),
            kept_ids=[s for s, _, _ in self.kept],
            project_url=project_url,
            notices=self.notices(label_field),
        )

    def notices(self, label_field: str) -> list[str]:
        """What the user should know about this load beyond the counts."""
        out = []
        if self.kept:
            examples = ", ".join(
                f"{s} (kept {'no label' if k is None else repr(k)}, answer "
                f"{'withdrawn' if a is None else repr(a)})"
                for s, k, a in self.kept[:_N_EXAMPLES]
            )
            more = ", ..." if len(self.kept) > _N_EXAMPLES else ""
            out.append(
                f"{len(self.kept)} label(s) in '{label_field}' were changed in FiftyOne after "
                "ELFS loaded them (or set there before) and differ from the annotators' "
                f"answers; ELFS kept them: {examples}{more}. Fix: set those labels yourself if "
                "the annotators' answers should win."
            )
        if self.removals:
            out.append(
                f"{len(self.removals)} label(s) loaded earlier were removed from '{label_field}' "
                "because their answer was deleted or skipped in Label Studio since."
            )
        if self.unusable:
            picked = sorted({c for _, c in self.unusable if c is not None})
            n_blank = sum(c is None for _, c in self.unusable)
            parts = [f"{n_blank} without exactly one class picked"] if n_blank else []
            if picked:
                n_other = len(self.unusable) - n_blank
                parts.append(f"{n_other} picking a choice that is not a class of the run {picked}")
            examples = ", ".join(s for s, _ in self.unusable[:_N_EXAMPLES])
            more = ", ..." if len(self.unusable) > _N_EXAMPLES else ""
            out.append(
                f"{len(self.unusable)} task(s) were submitted in Label Studio without a usable "
                f"answer ({'; '.join(parts)}); their answers were not loaded, and Label Studio "
                f"counts them as completed, so annotators will not see them again: {examples}"
                f"{more}. Fix: open them in Label Studio, pick one of the run's classes, and load "
                "again."
            )
        if self.gone:
            examples = ", ".join(self.gone[:_N_EXAMPLES])
            more = ", ..." if len(self.gone) > _N_EXAMPLES else ""
            out.append(
                f"{len(self.gone)} sent task(s) are no longer in the Label Studio project "
                "(deleted there), so they cannot be answered; they do not count as unanswered. "
                f"Samples: {examples}{more}. Fix: to have them labeled, send them again under "
                "a new annotation key (elfs.send_to_label_studio(dataset.select(ids), ...))."
            )
        if self.deleted:
            out.append(
                f"{len(self.deleted)} sent sample(s) are no longer in the dataset "
                f"({self.n_deleted_answered} of them answered in Label Studio); their answers "
                "were not loaded."
            )
        return out


def _plan_answer(
    plan: LoadPlan,
    sample_id: str,
    answer: Answer,
    previous: Sequence[Any] | None,
    current: str | None,
    overwrite: bool,
    touched: bool = False,
) -> None:
    """A task with an answer: write it if it is new, changed or not written yet, and the field
    holds what ELFS wrote there (before any load: nothing, or anything for a run sent with
    overwrite) and, if ELFS loaded it, the label carries no tag or attribute of the user's
    (`touched`; a first answer of an overwrite run replaces model predictions with their
    confidence, as it replaces any label); else keep the field's label and report it."""
    base = previous[2] if previous else (current if overwrite else None)
    pending = previous is None or list(previous) != [*answer.version(), answer.label]
    if current == answer.label:
        plan.loaded[sample_id] = [*answer.version(), answer.label]
        plan.labeled.append(sample_id)
    elif pending and current == base and not (touched and previous):
        plan.writes[sample_id] = answer.label
        plan.loaded[sample_id] = [*answer.version(), answer.label]
        plan.labeled.append(sample_id)
    else:
        plan.loaded[sample_id] = [*answer.version(), base]
        plan.kept.append((sample_id, current, answer.label))


def _plan_no_answer(
    plan: LoadPlan,
    sample_id: str,
    state: TaskState,
    previous: Sequence[Any] | None,
    current: str | None,
    touched: bool = False,
) -> None:
    """A task without a usable answer: a label ELFS loaded for a withdrawn answer goes if
    unchanged (its class, and no tag or attribute of the user's), else it is kept (and so is the
    record, so it stays kept until it is cleared). A task gone from the project is no
    withdrawal: its loaded label stays."""
    if state.gone:  # a label loaded from it earlier stays: the task was deleted, not undone
        if previous and previous[2] is not None and current == previous[2]:
            plan.loaded[sample_id] = list(previous)
            plan.labeled.append(sample_id)
        else:
            plan.gone.append(sample_id)
        return
    if previous and previous[2] is not None and current is not None:
        if current != previous[2] or touched:
            plan.loaded[sample_id] = list(previous)
            plan.kept.append((sample_id, current, None))
            return
        plan.removals.append(sample_id)
    if state.answer is not None:  # an answer that is not one of `classes`
        plan.unusable.append((sample_id, state.answer.label))
    elif state.unclear:
        plan.unusable.append((sample_id, None))
    else:
        (plan.skipped if state.skipped else plan.unanswered).append(sample_id)


def plan_load(
    states: Mapping[str, TaskState],
    previous: Mapping[str, Sequence[Any]],
    current: Mapping[str, str | None],
    overwrite: bool,
    classes: Sequence[str] | None = None,
    touched: Collection[str] = (),
) -> LoadPlan:
    """Plans a load from each sent sample's task state (`states`), the previous load's record
    (`previous`) and the label each sample still in the dataset holds now (`current`).
    `touched`: samples whose label carries tags or attributes set in FiftyOne (the label is
    then the user's, kept, as a label whose class they changed).

    `overwrite` (the run was sent allowing answers to replace existing labels) lets a first
    answer replace a label that ELFS did not write. `classes` (the run's): an answer outside
    them is not loaded but counted as unusable. One pass, no I/O.
    """
    known = None if classes is None else set(classes)
    plan = LoadPlan()
    for sample_id, state in states.items():
        if sample_id not in current:
            plan.deleted.append(sample_id)
            plan.n_deleted_answered += state.answer is not None
        elif state.answer is not None and (known is None or state.answer.label in known):
            _plan_answer(
                plan,
                sample_id,
                state.answer,
                previous.get(sample_id),
                current[sample_id],
                overwrite,
                sample_id in touched,
            )
        else:
            _plan_no_answer(
                plan,
                sample_id,
                state,
                previous.get(sample_id),
                current[sample_id],
                sample_id in touched,
            )
    return plan
