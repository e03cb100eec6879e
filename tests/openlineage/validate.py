"""Validates OpenLineage events (JSON lines) against the vendored schemas.

    python validate.py EVENTS.jsonl

Each event must be a valid RunEvent of OpenLineage.json (formats checked: uuid,
date-time, uri), and each facet must be valid against the schema its `_schemaURL` names,
which must be one of the files beside this script. Prints the number of events checked;
exits 1 with every problem otherwise.
"""

import json
import pathlib
import sys

import jsonschema
from referencing import Registry, Resource

HERE = pathlib.Path(__file__).parent


def registry():
    resources = []
    for path in HERE.glob("*.json"):
        schema = json.loads(path.read_text())
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


def facets(event):
    """Every facet of the event, with where it is."""
    for key, facet in event.get("run", {}).get("facets", {}).items():
        yield f"run.facets.{key}", facet
    for key, facet in event.get("job", {}).get("facets", {}).items():
        yield f"job.facets.{key}", facet
    for side, io_key in (("inputs", "inputFacets"), ("outputs", "outputFacets")):
        for i, dataset in enumerate(event.get(side, [])):
            for group in ("facets", io_key):
                for key, facet in dataset.get(group, {}).items():
                    yield f"{side}[{i}].{group}.{key}", facet


def main(path):
    reg = registry()
    known = {uri for uri in (json.loads(p.read_text())["$id"] for p in HERE.glob("*.json"))}
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    run_event = jsonschema.Draft202012Validator(
        {"$ref": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"},
        registry=reg,
        format_checker=checker,
    )
    problems = []
    lines = [l for l in pathlib.Path(path).read_text().splitlines() if l.strip()]
    for n, line in enumerate(lines, 1):
        event = json.loads(line)
        for e in run_event.iter_errors(event):
            problems.append(f"event {n}: {'/'.join(map(str, e.absolute_path))}: {e.message}")
        for where, facet in facets(event):
            url = facet.get("_schemaURL", "")
            if url.split("#")[0] not in known:
                problems.append(f"event {n}: {where}: schema {url!r} is not vendored")
                continue
            v = jsonschema.Draft202012Validator(
                {"$ref": url}, registry=reg, format_checker=checker
            )
            for e in v.iter_errors(facet):
                problems.append(f"event {n}: {where}: {e.message}")
    if not lines:
        problems.append("no events")
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print(f"{len(lines)} events valid")


if __name__ == "__main__":
    main(sys.argv[1])
