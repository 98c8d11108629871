#!/usr/bin/env python3
"""Checks that the GitHub workflows reference only things that exist in this repository.

actionlint checks the workflow language (and `needs:`); this checks the repository side:
- `make [-C DIR] TARGET` in a `run:` names a target of that Makefile;
- files named in `run:` (scripts/…, .github/scripts/…, --manifest-path, …), in `hashFiles(...)`
  and in action inputs (`context`, `file`, `manifest_file`) exist;
- `cargo … --features F` names features of the crate, `--target T` a target in rust-toolchain.toml;
- `workflow_run.workflows` names an existing workflow; `needs:` names a job of the same workflow;
- every action is pinned to a version (no @main/@master);
- every `secrets.X` / `vars.X` is documented in DEPLOY.md;
- every deploy workflow (started by `workflow_run`) runs `make smoke` and ends with an
  `if: failure()` step that says how to roll back.

Usage: check_workflows.py [REPO_ROOT]. Prints one line per problem; exit 1 when there is one.
"""

import re
import sys
from pathlib import Path

import yaml

# Paths under these roots named in a `run:` must exist (build outputs are made during the job).
CHECKED_ROOTS = (".github/", "scripts/", "ollama-proxy/", "smoke/", "spin-host/", "d1-migrations/", "bench/")
PATH_RE = re.compile(r"(?<![\w./$-])((?:\.github|scripts|ollama-proxy|smoke|spin-host|d1-migrations|bench)/[\w./-]*\w)")
MAKE_RE = re.compile(r"(?:^|[;&|(]\s*|\s)make((?:\s+[^\s;&|)]+)*)")
SECRET_RE = re.compile(r"\b(secrets|vars)\.([A-Za-z_][A-Za-z0-9_]*)")
HASHFILES_RE = re.compile(r"hashFiles\(([^)]*)\)")
# Paths that a job creates before it reads them.
GENERATED = ("ollama-proxy/target/", "smoke/target/")


def make_targets(makefile):
    """Targets defined in a Makefile (`name:` at the start of a line, not `:=`)."""
    targets = set()
    for line in makefile.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9_.%/$() -]+?)\s*:(?!=)", line)
        if match and not line.startswith("\t"):
            targets.update(match.group(1).split())
    return targets


def make_calls(script):
    """(directory or None, [targets]) for each `make` command line in a shell script."""
    calls = []
    for line in script.splitlines():
        line = line.split("#", 1)[0]
        for match in MAKE_RE.finditer(line):
            words = match.group(1).split()
            directory, targets, i = None, [], 0
            while i < len(words):
                word = words[i]
                if word == "-C" and i + 1 < len(words):
                    directory, i = words[i + 1], i + 2
                    continue
                if word.startswith("-") or "=" in word or word.startswith(('"', "'", "$")):
                    # A flag, a VAR=value (possibly quoted across words): skip to the next word.
                    i += 1
                    continue
                if re.fullmatch(r"[a-z][a-z0-9_-]*", word):
                    targets.append(word)
                i += 1
            calls.append((directory, targets))
    return calls


def cargo_features(cargo_toml):
    text = cargo_toml.read_text(encoding="utf-8")
    section = re.search(r"^\[features\]\n(.*?)(?:^\[|\Z)", text, re.S | re.M)
    if not section:
        return set()
    return set(re.findall(r"^([A-Za-z0-9_-]+)\s*=", section.group(1), re.M))


def toolchain_targets(root):
    path = root / "rust-toolchain.toml"
    if not path.exists():
        return set()
    match = re.search(r"targets\s*=\s*\[([^\]]*)\]", path.read_text(encoding="utf-8"))
    return set(re.findall(r'"([^"]+)"', match.group(1))) if match else set()


def triggers(workflow):
    # PyYAML reads the bare key `on` as the boolean True.
    on = workflow.get("on", workflow.get(True, {}))
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return {name: None for name in on}
    return on or {}


def check_run(root, where, script, problems):
    for directory, targets in make_calls(script):
        makefile = root / (directory or ".") / "Makefile"
        if not makefile.exists():
            problems.append(f"{where}: `make -C {directory}`: {makefile.relative_to(root)} does not exist")
            continue
        known = make_targets(makefile)
        for target in targets:
            if target not in known:
                problems.append(f"{where}: make target `{target}` is not in {makefile.relative_to(root)}")
    for path in PATH_RE.findall(script):
        if path.startswith(GENERATED) or any(c in path for c in "*$"):
            continue
        if not (root / path).exists():
            problems.append(f"{where}: {path} does not exist")
    for manifest in re.findall(r"--manifest-path\s+(\S+)", script):
        if not (root / manifest).exists():
            problems.append(f"{where}: --manifest-path {manifest} does not exist")
    if "cargo" in script:
        features = cargo_features(root / "Cargo.toml")
        for feature_list in re.findall(r"--features[ =](\S+)", script):
            for feature in feature_list.strip("\"'").split(","):
                if feature and feature not in features:
                    problems.append(f"{where}: cargo feature `{feature}` is not in Cargo.toml")
        targets = toolchain_targets(root)
        for target in re.findall(r"--target[ =](wasm32-[\w-]+)", script):
            if targets and target not in targets:
                problems.append(f"{where}: target {target} is not in rust-toolchain.toml")


def strings_in(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def check_workflow(root, path, workflow, names, deploy_doc, problems):
    name = path.name
    jobs = workflow.get("jobs") or {}
    on = triggers(workflow)
    if "workflow_run" in on:
        for upstream in (on["workflow_run"] or {}).get("workflows", []):
            if upstream not in names:
                problems.append(f"{name}: workflow_run names `{upstream}`, which no workflow is called")
    for text in strings_in(workflow):
        for kind, key in SECRET_RE.findall(text):
            if key != "GITHUB_TOKEN" and key not in deploy_doc:
                problems.append(f"{name}: {kind}.{key} is not documented in DEPLOY.md")
        for args in HASHFILES_RE.findall(text):
            for pattern in re.findall(r"'([^']+)'", args):
                if not any(c in pattern for c in "*?[") and not (root / pattern).exists():
                    problems.append(f"{name}: hashFiles('{pattern}'): no such file")
    for job_id, job in jobs.items():
        needs = job.get("needs", [])
        for need in [needs] if isinstance(needs, str) else needs:
            if need not in jobs:
                problems.append(f"{name}: job {job_id} needs `{need}`, which is not a job here")
        steps = job.get("steps", [])
        for index, step in enumerate(steps):
            where = f"{name}: {job_id} step {index + 1} ({step.get('name') or step.get('uses') or 'run'})"
            uses = step.get("uses", "")
            if uses and not uses.startswith("./"):
                ref = uses.rpartition("@")[2] if "@" in uses else ""
                if not ref or ref in ("main", "master", "latest"):
                    problems.append(f"{where}: action `{uses}` is not pinned to a version")
            for key in ("context", "file", "manifest_file", "working-directory"):
                value = (step.get("with") or {}).get(key) or (step.get(key) if key == "working-directory" else None)
                if isinstance(value, str) and "${{" not in value and not (root / value).exists():
                    problems.append(f"{where}: {key} {value} does not exist")
            if "run" in step:
                check_run(root, where, step["run"], problems)
        if "workflow_run" in on:
            runs = [s.get("run", "") for s in steps]
            if not any("make smoke" in r for r in runs):
                problems.append(f"{name}: deploy job {job_id} does not run `make smoke`")
            last = steps[-1] if steps else {}
            if "failure()" not in str(last.get("if", "")) or "roll back" not in last.get("run", ""):
                problems.append(f"{name}: deploy job {job_id} does not end with an `if: failure()` rollback step")


def check(root):
    """Every problem found in root/.github/workflows, as lines."""
    root = Path(root)
    problems = []
    paths = sorted((root / ".github/workflows").glob("*.y*ml"))
    if not paths:
        return ["no workflows in .github/workflows"]
    workflows = {}
    for path in paths:
        try:
            workflows[path] = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            problems.append(f"{path.name}: not YAML: {error}")
    names = {w.get("name") for w in workflows.values()}
    deploy_doc = (root / "DEPLOY.md").read_text(encoding="utf-8") if (root / "DEPLOY.md").exists() else ""
    for path, workflow in workflows.items():
        check_workflow(root, path, workflow, names, deploy_doc, problems)
    return list(dict.fromkeys(problems))


def main():
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2])
    problems = check(root)
    for problem in problems:
        print(f"FAIL {problem}")
    count = len(list((root / ".github/workflows").glob("*.y*ml")))
    print(f"check_workflows: {count} workflows, {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
