"""Write orchestrator task plugins in Python: protocol version 1 (docs/plugins.md).

One file, standard library only. A plugin is an executable script:

    #!/usr/bin/env python3
    import orchestrator_plugin as op

    def run(fields, ctx):
        op.log("hello " + fields["name"])
        op.output("greeted", fields["name"])

    op.serve(kind="hello", description="Says hello.", run=run,
             fields={"type": "object", "additionalProperties": False,
                     "required": ["name"],
                     "properties": {"name": {"type": "string", "description": "Who."}}},
             outputs={"greeted": "who was greeted"})

`run` returns normally for success; it raises `Failed` (no retry), `Retryable` (the
task's `retries:` apply) or `ShortCircuit` (nothing to do: downstream tasks are
skipped). Any other exception fails the attempt as retryable, with its message.
"""

import json
import sys
import traceback

PROTOCOL = 1


class Failed(Exception):
    """The attempt failed, and another attempt would fail the same way."""


class Retryable(Exception):
    """The attempt failed for a reason that may pass (the task's `retries:` apply)."""


class ShortCircuit(Exception):
    """Nothing to do: with `short_circuit: true`, downstream tasks are skipped."""


def _send(message):
    # allow_nan=False: NaN and Infinity are not JSON; fail here, in the plugin, with a
    # Python traceback, rather than in the engine.
    sys.stdout.write(json.dumps(message, allow_nan=False) + "\n")
    sys.stdout.flush()


def log(message):
    """A line of the task's log (stderr works too)."""
    _send({"type": "log", "message": str(message)})


def progress(fraction, message=""):
    """How far the attempt is, 0.0 to 1.0, shown by the CLI and the web UI."""
    _send({"type": "progress", "fraction": float(fraction), "message": str(message)})


def output(key, value):
    """An output downstream tasks read as {{ tasks.ID.outputs.KEY }} (any JSON value)."""
    _send({"type": "output", "key": key, "value": value})


class Context:
    """The run's context: run_id, task_id, workflow, logical_date, attempt,
    workflow_dir, backend, short_circuit; and `secrets`, by environment variable name."""

    def __init__(self, context, secrets):
        self.__dict__.update(context)
        self.secrets = secrets


def serve(kind, run, fields, description="", outputs=None, short_circuit=False):
    """Answers the engine's one request (describe or run) and exits."""
    line = sys.stdin.readline()
    try:
        request = json.loads(line)
    except ValueError:
        sys.stderr.write("this is an orchestrator plugin; it reads one JSON request on stdin\n")
        sys.exit(2)
    if request.get("type") == "describe":
        _send({
            "type": "describe",
            "protocol": PROTOCOL,
            "kind": kind,
            "description": description,
            "fields": fields,
            "outputs": outputs or {},
            "short_circuit": short_circuit,
        })
        return
    if request.get("type") != "run":
        sys.stderr.write("unknown request %r\n" % request.get("type"))
        sys.exit(2)
    ctx = Context(request.get("context", {}), request.get("secrets", {}))
    try:
        run(request.get("fields", {}), ctx)
    except Failed as e:
        _send({"type": "result", "status": "failed", "message": str(e)})
    except Retryable as e:
        _send({"type": "result", "status": "retryable", "message": str(e)})
    except ShortCircuit as e:
        _send({"type": "result", "status": "short_circuit", "reason": str(e)})
    except Exception as e:  # a bug or an outage: say what, and let retries apply
        traceback.print_exc(file=sys.stderr)
        _send({"type": "result", "status": "retryable",
               "message": "%s: %s" % (type(e).__name__, e)})
    else:
        _send({"type": "result", "status": "succeeded"})
