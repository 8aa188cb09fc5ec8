"""junit.xml: one test case per criterion, so any CI system shows the verdict natively.

A failed criterion is a failure; an inconclusive one is a skipped case whose message says why
and about how many images would decide it (a failure when ``on_inconclusive = "fail"``), never
a pass; a criterion reported but not judged is skipped as such.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from audit.text import describe, evidence
from audit.verdict import Verdict


def write_junit(verdict: Verdict, path: Path, *, suite: str = "model-audit") -> None:
    as_failure = verdict.on_inconclusive == "fail"
    failures = len(verdict.failed) + (len(verdict.undecided) if as_failure else 0)
    skipped = len(verdict.criteria) - len(verdict.judged) + (0 if as_failure else len(verdict.undecided))
    root = ET.Element("testsuites", name=suite, tests=str(len(verdict.criteria)), failures=str(failures))
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(verdict.criteria)), failures=str(failures),
                       errors="0", skipped=str(skipped))
    for c in verdict.criteria:
        case = ET.SubElement(ts, "testcase", classname=suite, name=c.id)
        ET.SubElement(case, "system-out").text = describe(c)
        if not c.judged:
            ET.SubElement(case, "skipped", message="reported, not judged: " + describe(c))
        elif c.inconclusive:
            why = f"inconclusive: the threshold lies inside the 95% CI; {evidence(c) or describe(c)}"
            if as_failure:
                ET.SubElement(case, "failure", message=why + " (counted as a failure: on_inconclusive = fail)")
            else:
                ET.SubElement(case, "skipped", message=why)
        elif not c.passed:
            ET.SubElement(case, "failure", message=describe(c)).text = c.detail or describe(c)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
