"""Tests of check_workflows.py (on a small made-up repository) and koyeb-args.py (on the real
koyeb.yaml). Run: python -m unittest discover -s .github/scripts -p 'test_*.py'."""

import importlib.util
import tempfile
import textwrap
import unittest
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def load(name, filename):
    spec = importlib.util.spec_from_file_location(name, HERE / filename)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_workflows = load("check_workflows", "check_workflows.py")
koyeb_args = load("koyeb_args", "koyeb-args.py")

GOOD_DEPLOY = """
    name: Deploy
    on:
      workflow_run:
        workflows: [CI]
        types: [completed]
    jobs:
      deploy:
        runs-on: ubuntu-latest
        steps:
          - uses: actions/checkout@v7
          - run: make smoke URL="${{ vars.SITE_URL }}"
          - if: failure()
            run: echo "how to roll back"
"""

GOOD_CI = """
    name: CI
    on: [push]
    jobs:
      lint:
        runs-on: ubuntu-latest
        steps:
          - uses: actions/checkout@v7
          - run: make lint && bash scripts/build.sh
          - run: cargo clippy --target wasm32-unknown-unknown --features cloudflare --manifest-path Cargo.toml
      test:
        needs: lint
        runs-on: ubuntu-latest
        steps:
          - run: make -C sub check V=1
"""


class MadeUpRepository(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.root = Path(self.dir.name)
        (self.root / ".github/workflows").mkdir(parents=True)
        (self.root / "scripts").mkdir()
        (self.root / "scripts/build.sh").write_text("true\n")
        (self.root / "sub").mkdir()
        (self.root / "sub/Makefile").write_text("check: ## x\n\ttrue\n")
        (self.root / "Makefile").write_text("X := 1\n.PHONY: lint smoke\nlint: ## l\n\ttrue\nsmoke: ## s\n\ttrue\n")
        (self.root / "Cargo.toml").write_text('[package]\nname = "x"\n\n[features]\ncloudflare = []\n')
        (self.root / "rust-toolchain.toml").write_text('[toolchain]\ntargets = ["wasm32-unknown-unknown"]\n')
        (self.root / "DEPLOY.md").write_text("Set SITE_URL as a repository variable.\n")
        self.write("ci.yml", GOOD_CI)
        self.write("deploy.yml", GOOD_DEPLOY)

    def tearDown(self):
        self.dir.cleanup()

    def write(self, name, text):
        (self.root / ".github/workflows" / name).write_text(textwrap.dedent(text))

    def problems(self):
        return check_workflows.check(self.root)

    def assert_problem(self, fragment):
        problems = self.problems()
        self.assertTrue(any(fragment in p for p in problems), f"{fragment!r} not in {problems}")

    def test_a_consistent_repository_has_no_problems(self):
        self.assertEqual(self.problems(), [])

    def test_an_unknown_make_target_is_reported(self):
        self.write("ci.yml", GOOD_CI.replace("make lint", "make lint-all"))
        self.assert_problem("make target `lint-all` is not in Makefile")

    def test_an_unknown_target_of_a_sub_makefile_is_reported(self):
        self.write("ci.yml", GOOD_CI.replace("make -C sub check", "make -C sub bench"))
        self.assert_problem("make target `bench` is not in sub/Makefile")

    def test_a_missing_script_is_reported(self):
        self.write("ci.yml", GOOD_CI.replace("scripts/build.sh", "scripts/deploy.sh"))
        self.assert_problem("scripts/deploy.sh does not exist")

    def test_a_missing_job_in_needs_is_reported(self):
        self.write("ci.yml", GOOD_CI.replace("needs: lint", "needs: build"))
        self.assert_problem("needs `build`, which is not a job here")

    def test_an_unknown_cargo_feature_or_target_is_reported(self):
        self.write("ci.yml", GOOD_CI.replace("--features cloudflare", "--features spin"))
        self.assert_problem("cargo feature `spin` is not in Cargo.toml")
        self.write("ci.yml", GOOD_CI.replace("wasm32-unknown-unknown", "wasm32-wasip2"))
        self.assert_problem("target wasm32-wasip2 is not in rust-toolchain.toml")

    def test_an_unpinned_action_is_reported(self):
        self.write("ci.yml", GOOD_CI.replace("actions/checkout@v7", "actions/checkout@main"))
        self.assert_problem("is not pinned to a version")

    def test_a_deploy_after_an_unknown_workflow_is_reported(self):
        self.write("deploy.yml", GOOD_DEPLOY.replace("[CI]", "[Build]"))
        self.assert_problem("workflow_run names `Build`")

    def test_an_undocumented_secret_is_reported(self):
        self.write("deploy.yml", GOOD_DEPLOY.replace("vars.SITE_URL", "secrets.SITE_TOKEN"))
        self.assert_problem("secrets.SITE_TOKEN is not documented in DEPLOY.md")

    def test_a_deploy_without_smoke_tests_or_rollback_is_reported(self):
        self.write("deploy.yml", GOOD_DEPLOY.replace("make smoke", "make lint"))
        self.assert_problem("does not run `make smoke`")
        self.write("deploy.yml", GOOD_DEPLOY.replace("if: failure()", "if: always()"))
        self.assert_problem("does not end with an `if: failure()` rollback step")


class KoyebArgs(unittest.TestCase):
    def test_the_real_koyeb_yaml_becomes_cli_flags(self):
        document = yaml.safe_load((ROOT / "ollama-proxy/koyeb.yaml").read_text())
        service, args = koyeb_args.koyeb_args(document)
        self.assertEqual(service, "ouija/ollama-proxy")
        pairs = list(zip(args[::2], args[1::2]))
        self.assertIn(("--instance-type", "nano"), pairs)
        self.assertIn(("--ports", "8000:http"), pairs)
        self.assertIn(("--routes", "/:8000"), pairs)
        self.assertIn(("--checks", "8000:http:/health"), pairs)
        self.assertIn(("--env", "PROXY_API_KEYS={{secret.ollama-proxy-api-keys}}"), pairs)
        self.assertIn(("--env", "OLLAMA_MODEL=qwen2.5:0.5b"), pairs)
        self.assertFalse(any("--docker" == a for a in args), "the workflow passes the commit's image")


class ThisRepository(unittest.TestCase):
    def test_the_workflows_here_reference_only_what_exists(self):
        self.assertEqual(check_workflows.check(ROOT), [])


if __name__ == "__main__":
    unittest.main()
