"""``python -m infra`` (``make infra``): synthesize the stacks into infra/cdk.out/ offline,
then fail on any cdk-nag finding that is not acknowledged with its reason in the code, and
on anything cfn-lint finds in the templates. Run by the CDK CLI (``cdk synth``, which sets
CDK_OUTDIR), it only synthesizes: the CLI reports the findings itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from infra.app import OUT, problems, synth


def lint(template: Path) -> list[str]:
    """cfn-lint's findings in a template (SAM resources are checked as transformed)."""
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    answer = subprocess.run([str(cfn_lint), "--format", "parseable", "--", str(template)],
                            capture_output=True, text=True, check=False)
    if answer.returncode & 1:  # errors, warnings and notes set other bits
        raise RuntimeError(f"cfn-lint failed on {template}:\n{answer.stderr}")
    return [line for line in answer.stdout.splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra", description=__doc__)
    parser.add_argument("--stage", help="synthesize this stage only (default: every stage)")
    parser.add_argument("--out", type=Path, default=OUT, help="the cloud assembly's folder")
    args = parser.parse_args(argv)
    if "CDK_OUTDIR" in os.environ:  # the CDK CLI: context and output folder are its own
        synth()
        return 0
    if (args.out / "manifest.json").exists():  # an assembly of an earlier run: start over
        shutil.rmtree(args.out)
    assembly = synth({"stage": args.stage} if args.stage else None, args.out)
    found = problems(assembly)
    for artifact in assembly.stacks:
        template = Path(assembly.directory) / artifact.template_file
        resources = json.loads(template.read_text())["Resources"]
        print(f"{artifact.stack_name}: {len(resources)} resources in {template}")
        found += [f"cfn-lint: {line}" for line in lint(template)]
    for line in found:
        print(line, file=sys.stderr)
    if found:
        print(f"{len(found)} finding(s): fix them, or acknowledge a cdk-nag rule with its "
              "reason where the resource is made", file=sys.stderr)
        return 1
    print("cdk-nag (AwsSolutions) and cfn-lint: clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
