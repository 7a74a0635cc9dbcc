"""The CDK app: one Edgeplane stack per stage, checked by cdk-nag's AwsSolutions pack as it
is synthesized.

Context: ``stage`` (dev or prod; unset: both, as ``make infra`` checks them),
``bootstrap_token`` (``off`` once named admins exist). Account and region come from the
credentials the CDK CLI deploys with (none are needed to synthesize).
"""

from __future__ import annotations

import os
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import cx_api
from cdk_nag import AwsSolutionsChecks

from infra.stack import EdgeplaneStack
from infra.stages import STAGES, stage

INFRA = Path(__file__).resolve().parent
OUT = INFRA / "cdk.out"


def stack_name(stage_name: str) -> str:
    return f"Edgeplane-{stage_name}"


def build(context: dict[str, str] | None = None, outdir: Path | None = None) -> cdk.App:
    """The app, with its stacks; ``outdir`` defaults to infra/cdk.out (the CDK CLI gives
    its own)."""
    if outdir is None and "CDK_OUTDIR" not in os.environ:
        outdir = OUT
    # chalice package asks botocore for a region only to name API Gateway's service
    # principal, the same in every region of a partition; the stack itself stays
    # region-agnostic unless the CDK CLI gives one.
    os.environ.setdefault("AWS_DEFAULT_REGION",
                          os.environ.get("CDK_DEFAULT_REGION") or "us-east-1")
    app = cdk.App(outdir=str(outdir) if outdir else None, context=context)
    chosen = app.node.try_get_context("stage")
    names = [stage(chosen).name] if chosen else sorted(STAGES)
    bootstrap = str(app.node.try_get_context("bootstrap_token") or "on").lower() != "off"
    env = cdk.Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
                          region=os.environ.get("CDK_DEFAULT_REGION"))
    for name in names:
        EdgeplaneStack(app, stack_name(name), stage(name), bootstrap_token=bootstrap, env=env)
    cdk.Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    return app


def problems(assembly: cx_api.CloudAssembly) -> list[str]:
    """The errors and warnings cdk-nag (or CDK itself) attached to the stacks."""
    found = []
    for artifact in assembly.stacks:
        for message in artifact.messages:
            if message.level in (cx_api.SynthesisMessageLevel.ERROR,
                                 cx_api.SynthesisMessageLevel.WARNING):
                found.append(f"{artifact.stack_name} {message.id}: {message.entry.data}")
    return found


def synth(context: dict[str, str] | None = None,
          outdir: Path | None = None) -> cx_api.CloudAssembly:
    """Synthesize; the chalice packaging writes its chalice.out/ in the working folder, so
    it runs from infra/build/."""
    from infra.bundle import BUILD

    BUILD.mkdir(parents=True, exist_ok=True)
    if "CDK_OUTDIR" in os.environ:  # the CLI's folder, as seen from where it started us
        os.environ["CDK_OUTDIR"] = str(Path(os.environ["CDK_OUTDIR"]).resolve())
    here = os.getcwd()
    os.chdir(BUILD)
    try:
        return build(context, outdir).synth()
    finally:
        os.chdir(here)
