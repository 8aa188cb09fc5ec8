"""junit.xml: one test case per criterion, so any CI system shows the verdict natively."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from audit.text import describe
from audit.verdict import Verdict


def write_junit(verdict: Verdict, path: Path, *, suite: str = "model-audit") -> None:
    failures = len(verdict.failed)
    skipped = len(verdict.criteria) - len(verdict.judged)
    root = ET.Element("testsuites", name=suite, tests=str(len(verdict.criteria)), failures=str(failures))
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(verdict.criteria)), failures=str(failures),
                       errors="0", skipped=str(skipped))
    for c in verdict.criteria:
        case = ET.SubElement(ts, "testcase", classname=suite, name=c.id)
        ET.SubElement(case, "system-out").text = describe(c)
        if not c.judged:
            ET.SubElement(case, "skipped", message="reported, not judged: " + describe(c))
        elif not c.passed:
            ET.SubElement(case, "failure", message=describe(c)).text = c.detail or describe(c)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
