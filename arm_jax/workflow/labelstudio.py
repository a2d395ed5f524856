"""The round trip through Label Studio: the tasks ``select`` writes, the labelling config that
shows them, and the JSON export that comes back as labels.

Tasks (``select --format label-studio``): a JSON list Label Studio imports as it is, one task
per pair, ``{"data": {"a": ID, "b": ID, "text_a": ..., "text_b": ..., "rank": 1, ...}}``;
``text_a``/``text_b`` are what the annotator reads (the pool's prompt and response when it has
them, else the item id itself). The labelling config (:data:`LABEL_CONFIG`, written beside the tasks
as ``<out>.label_config.xml``) shows both texts and one single choice of
:data:`CHOICES`: "A", "B" or "Tie".

Export (``--labels export.json``, detected by its first character ``[``, or ``{"tasks": [...]}``):
Label Studio's JSON export of those tasks. Every annotation that was not cancelled (skipped) gives one label line
(:mod:`arm_jax.workflow.labels`): "A" a win of a, "B" a win of b, "Tie" a tie, with the annotation's
``completed_by`` (a user id, or an object with an email or id) as its rater. A task without
annotations is not labelled yet and is left out; an export in which no task is annotated is
refused unless the caller allows it (it is most likely the tasks file). Every problem is an
:class:`~arm_jax.errors.InputError` naming the file, the task and the annotation.
"""
from __future__ import annotations

import json

from arm_jax.errors import InputError

#: The choice an annotator clicks -> what it says of the pair (a, b).
CHOICES = {"A": "a", "B": "b", "Tie": "tie"}
#: The name of the choices control in :data:`LABEL_CONFIG` (an export's ``from_name``).
CONTROL = "preference"

LABEL_CONFIG = """<View>
  <Header value="Which response is better?"/>
  <View style="display: grid; grid-template-columns: 1fr 1fr; column-gap: 1em">
    <View>
      <Header value="A" size="4"/>
      <Text name="text_a" value="$text_a"/>
    </View>
    <View>
      <Header value="B" size="4"/>
      <Text name="text_b" value="$text_b"/>
    </View>
  </View>
  <Choices name="preference" toName="text_a" choice="single-radio" required="true" showInline="true">
    <Choice value="A"/>
    <Choice value="B"/>
    <Choice value="Tie"/>
  </Choices>
</View>
"""


def _text(row: dict, side: str) -> str:
    prompt, response = row.get(f"prompt_{side}"), row.get(f"response_{side}")
    if prompt is None and response is None:
        return str(row[side])  # no texts in the pool: the annotator sees the id
    return "\n\n".join(t for t in (prompt, response) if t is not None)


def tasks(rows: list[dict]) -> list[dict]:
    """Label Studio tasks of ``select``'s rows (each ``{"a", "b", "p_a_wins", "score", "rank"}``
    and the texts the pool has)."""
    return [{"data": {**row, "text_a": _text(row, "a"), "text_b": _text(row, "b")}} for row in rows]


def looks_like_export(text: str) -> bool:
    """A Label Studio JSON export is a JSON list, or the list wrapped as ``{"tasks": [...]}``
    (the whole text one JSON object with a list under "tasks"); label lines are JSON objects,
    one a line."""
    start = text.lstrip("\ufeff \t\r\n")
    if start.startswith("["):
        return True
    if not start.startswith("{") or '"tasks"' not in start:
        return False
    try:
        whole = json.loads(start)
    except json.JSONDecodeError:
        return False  # several lines of JSON objects: label lines
    return isinstance(whole, dict) and isinstance(whole.get("tasks"), list)


def _rater(annotation: dict):
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    if isinstance(who, bool) or not isinstance(who, (str, int)):
        return None
    return f"label-studio:{who}"


def export_rows(path, text: str, allow_unannotated: bool | None = None) -> list[tuple[str, dict]]:
    """``(where, label line)`` for every completed annotation of a Label Studio JSON export,
    ``where`` naming the task and the annotation for messages. An export whose tasks have no
    completed annotation (e.g. the tasks file ``select`` wrote) is an InputError unless
    ``allow_unannotated`` (None: the caller has no flag for it, and the message names none)."""
    try:
        export = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if isinstance(export, dict) and isinstance(export.get("tasks"), list):
        export = export["tasks"]  # {"tasks": [...]}: the export wrapped in an object
    if not isinstance(export, list):
        raise InputError(f"{path}: expected Label Studio's export, a JSON array of tasks (or an object with 'tasks')")
    out = _annotated_rows(path, export)
    if export and not out and not allow_unannotated:
        skipped = sum(1 for t in export for a in t.get("annotations") or [] if isinstance(a, dict))
        what = (f"every one of its {skipped} annotations was skipped" if skipped
                else "none annotated — is this the tasks file select wrote rather than the export?")
        hint = " (--allow-unannotated starts cold from it)" if allow_unannotated is False else ""
        raise InputError(f"{path}: {len(export)} Label Studio tasks, {what}{hint}")
    return out


def _annotated_rows(path, export: list) -> list[tuple[str, dict]]:
    out = []
    for t, task in enumerate(export, start=1):
        where = f"task {t}" + (f" (id {task['id']})" if isinstance(task, dict) and "id" in task else "")
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise InputError(f"{path}: {where}: no 'data' object (is this Label Studio's JSON export?)")
        data = task["data"]
        for field in ("a", "b"):
            if field not in data:
                raise InputError(f"{path}: {where}: data has no '{field}' (not a task written by arm-jax select)")
        annotations = task.get("annotations", [])
        if not isinstance(annotations, list):
            raise InputError(f"{path}: {where}: 'annotations' is not a list")
        for n, ann in enumerate(annotations, start=1):
            at = f"{where}, annotation {n}"
            if not isinstance(ann, dict):
                raise InputError(f"{path}: {at}: not an object")
            if ann.get("was_cancelled"):
                continue  # skipped by the annotator
            result = ann.get("result")
            if not isinstance(result, list):
                raise InputError(f"{path}: {at}: 'result' is not a list (got {json.dumps(result)})")
            choices = [r for r in result if isinstance(r, dict) and r.get("from_name") == CONTROL]
            if not choices:
                raise InputError(f"{path}: {at}: no '{CONTROL}' choice in its result")
            picked = choices[0].get("value", {}).get("choices") if isinstance(choices[0].get("value"), dict) else None
            if not isinstance(picked, list) or len(picked) != 1:
                raise InputError(f"{path}: {at}: expected one choice, got {json.dumps(picked)}")
            choice = picked[0]
            if choice not in CHOICES:
                raise InputError(
                    f"{path}: {at}: choice {json.dumps(choice)} is not in the labelling config "
                    f"({', '.join(CHOICES)})"
                )
            line = {"a": data["a"], "b": data["b"]}
            if CHOICES[choice] == "tie":
                line["tie"] = True
            else:
                line["winner"] = data[CHOICES[choice]]
            rater = _rater(ann)
            if rater is not None:
                line["annotator"] = rater
            out.append((at, line))
    return out
