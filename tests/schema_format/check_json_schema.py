#!/usr/bin/env python3
"""Keeps schemas/*.schema.json honest: the shipped examples must validate against the JSON Schemas,
and documents the plugin's loader rejects must be rejected by the JSON Schemas too (the loader's own
rejections are covered by tests/unit/schema_loader_test.cpp). Exit status 0 when all checks pass."""
import copy
import glob
import json
import os
import sys

from jsonschema import Draft202012Validator

schemas_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "schemas")
os.chdir(schemas_dir)
failures = []


def check(name, ok):
    print(("ok    " if ok else "FAIL  ") + name)
    if not ok:
        failures.append(name)


schema_format = json.load(open("gdpr-schema.schema.json"))
purposes_format = json.load(open("purposes.schema.json"))
for s in (schema_format, purposes_format):
    Draft202012Validator.check_schema(s)
vs = Draft202012Validator(schema_format)
vp = Draft202012Validator(purposes_format)

purposes = json.load(open("purposes.json"))
check("purposes.json matches purposes.schema.json", vp.is_valid(purposes))
examples = [f for f in sorted(glob.glob("*.json")) if f != "purposes.json" and not f.endswith(".schema.json")]
check("at least three example schemas", len(examples) >= 3)
for f in examples:
    doc = json.load(open(f))
    errors = [e.message for e in vs.iter_errors(doc)]
    check(f"{f} matches gdpr-schema.schema.json {errors if errors else ''}", not errors)
    undeclared = [r["purpose"] for r in doc["fields"].values() if "purpose" in r and r["purpose"] not in purposes["purposes"]]
    check(f"{f} uses only declared purposes {undeclared if undeclared else ''}", not undeclared)

base = json.load(open("vehicle-telemetry.json"))


def rejects(name, mutate, validator=vs, doc=base):
    d = copy.deepcopy(doc)
    mutate(d)
    check("rejects " + name, not validator.is_valid(d))


def field(key):
    return lambda d: d["fields"][key]


rejects("an unknown top-level key", lambda d: d.update(x=1))
rejects("an id with capitals", lambda d: d.update(id="Vehicle"))
rejects("version 0", lambda d: d.update(version=0))
rejects("no topics", lambda d: d.update(topics=[]))
rejects("a topic listed twice", lambda d: d.update(topics=["a", "a"]))
rejects("'#' before the last level", lambda d: d.update(topics=["a/#/b"]))
rejects("'+' inside a level", lambda d: d.update(topics=["a/b+"]))
rejects("a subject with two sources", lambda d: d.update(subject={"field": "/a", "topicLevel": 1}))
rejects("a subject binding other than client", lambda d: d.update(subject={"binding": "user"}))
rejects("a residency in capitals", lambda d: d.update(residency="EU"))
rejects("retentionDays 0", lambda d: d.update(retentionDays=0))
rejects("unclassified 'mask'", lambda d: d.update(unclassified="mask"))
rejects("a field key without '/'", lambda d: d["fields"].update({"speed": {"category": "x", "personal": False}}))
rejects("a personal field without purpose", lambda d: field("/driver_id")(d).pop("purpose"))
rejects("a personal field without action", lambda d: field("/driver_id")(d).pop("action"))
rejects("a field without category", lambda d: field("/speed")(d).pop("category"))
rejects("an unknown rule key", lambda d: field("/speed")(d).update(foo=1))
rejects("mask with action keep", lambda d: field("/speed")(d).update(mask="x"))
rejects("decimals with action keep", lambda d: field("/speed")(d).update(decimals=1))
rejects("epoch without truncate", lambda d: field("/gps/lat")(d).update(epoch="ms"))
rejects("generalise with neither decimals nor truncate", lambda d: field("/gps/lat")(d).pop("decimals"))
rejects("generalise with both decimals and truncate", lambda d: field("/ts")(d).update(decimals=1))
rejects("decimals 16", lambda d: field("/gps/lat")(d).update(decimals=16))
rejects("truncate 'week'", lambda d: field("/ts")(d).update(truncate="week"))
rejects("an unknown action", lambda d: field("/speed")(d).update(action="hash"))
rejects("a purpose without lawful basis", lambda d: d["purposes"].update(x={}), vp, purposes)
rejects("a lawful basis outside Art. 6(1)", lambda d: d["purposes"].update(x={"lawfulBasis": "interest"}), vp, purposes)

def shipped_example(format_file, example_file):
    """The validator of a file format, after checking the shipped example against it."""
    document_format = json.load(open(format_file))
    Draft202012Validator.check_schema(document_format)
    validator = Draft202012Validator(document_format)
    example = json.load(open(os.path.join("..", "examples", example_file)))
    errors = [e.message for e in validator.iter_errors(example)]
    check(f"examples/{example_file} matches {format_file} {errors if errors else ''}", not errors)
    return validator, example


vr, residency = shipped_example("residency.schema.json", "residency.json")
rejects("residency: no defaultRegion", lambda d: d.pop("defaultRegion"), vr, residency)
rejects("residency: a region in capitals", lambda d: d.update(regions=["EU"]), vr, residency)
rejects("residency: a default region that is no region name", lambda d: d.update(defaultRegion=""), vr, residency)
unplaced_nowhere = dict(residency, defaultRegion=None)
check("residency: a null defaultRegion (unplaced clients in no region) is accepted",
      not list(vr.iter_errors(unplaced_nowhere)))
rejects("residency: a placement rule with only a region", lambda d: d["clients"].append({"region": "eu"}), vr, residency)
rejects("residency: placement by listener", lambda d: d["clients"].append({"listener": 1884, "region": "eu"}), vr, residency)
rejects("residency: a bridge without region", lambda d: d["bridges"][0].pop("region"), vr, residency)
rejects("residency: a bridge topic with '#' inside", lambda d: d["bridges"][0].update(topics=["a/#/b"]), vr, residency)

vd, details = shipped_example("processing-details.schema.json", "processing-details.json")
shipped_ids = {json.load(open(f))["id"] for f in glob.glob("*.json") if f != "purposes.json" and not f.endswith(".schema.json")}
named_ids = (set(details["dataSubjects"]) | set(details["recipients"])) - {"*"}
check(f"examples/processing-details.json names only shipped schemas {sorted(named_ids - shipped_ids)}", named_ids <= shipped_ids)
rejects("processing details: no controller", lambda d: d.pop("controller"), vd, details)
rejects("processing details: a controller without a name", lambda d: d["controller"].pop("name"), vd, details)
rejects("processing details: an unknown key", lambda d: d.update(recipient={}), vd, details)
rejects("processing details: a blank category of data subjects", lambda d: d["dataSubjects"].update({"*": " "}), vd, details)
rejects("processing details: recipients as a string", lambda d: d["recipients"].update({"*": "staff"}), vd, details)
rejects("processing details: a key that is no schema id", lambda d: d["recipients"].update({"Fleet@1": ["staff"]}), vd, details)
rejects("processing details: a description that is no string", lambda d: d.update(description=5), vd, details)

print(f"{len(failures)} failed")
sys.exit(1 if failures else 0)
