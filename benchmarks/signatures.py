"""Plan signatures: what signing costs the cloud and verifying costs a gateway, per plan, and
the bytes the envelope adds.

    python benchmarks/signatures.py [--repeat 15]

The plan is the example fleet's 5-step blueprint rendered for one site of 4 machines
(``benchmarks/definitions.py``), as dispatch sends it (the rollout's expiry, ``detail``).
Each operation is timed with ``timeit`` in CPU time of this process (enough calls for
0.2 s, best of ``--repeat``), so that other work on the machine does not count:

- cloud: ``plan.encode()`` (what dispatch sent before plans were signed) against
  ``PlanSigner.sign`` (the canonical form, Ed25519, the wire encoding), and Ed25519 alone;
- gateway: ``decode(payload, topic)`` (what it did before) against what it does now
  (``parse_json``, ``PlanVerifier.verify``, ``decode_object``), and Ed25519 alone.

The last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.definitions import bench_plan  # noqa: E402
from chalicelib import signing  # noqa: E402
from edge_gateway.trust import PlanVerifier  # noqa: E402
from edgeplane import protocol  # noqa: E402


def per_call_us(function: Callable[[], object], repeat: int) -> float:
    """CPU microseconds per call: the best of ``repeat`` runs of enough calls for 0.2 s."""
    timer = timeit.Timer(function, timer=time.process_time)
    calls, _ = timer.autorange()
    return min(timer.repeat(repeat, calls)) / calls * 1e6


def measure(repeat: int) -> dict:
    rendered = protocol.decode_object(bench_plan()["plan"])
    assert isinstance(rendered, protocol.Plan)
    now = time.time()
    plan = dataclasses.replace(rendered, expires_at=round(now + 7 * 86400, 3),
                               detail=protocol.Detail.OUTCOMES)
    key = Ed25519PrivateKey.generate()
    signer = signing.PlanSigner(key)
    verifier = PlanVerifier([signer.public_key_b64])
    topic = protocol.plan_topic(plan.site)
    expires = signing.expiry(plan, now)
    plain, signed = plan.encode(), signer.sign(plan, expires)
    what = protocol.signed_bytes(plan.to_dict(), signer.key_id, expires)
    value = key.sign(what)
    public = key.public_key()

    def receive() -> protocol.Message:
        return protocol.decode_object(verifier.verify(protocol.parse_json(signed)), topic)

    assert receive() == protocol.decode(plain, topic)
    cloud = {"encode_us": per_call_us(plan.encode, repeat),
             "sign_us": per_call_us(lambda: signer.sign(plan, expires), repeat),
             "ed25519_sign_us": per_call_us(lambda: key.sign(what), repeat)}
    gateway = {"decode_us": per_call_us(lambda: protocol.decode(plain, topic), repeat),
               "verify_and_decode_us": per_call_us(receive, repeat),
               "ed25519_verify_us": per_call_us(lambda: public.verify(value, what), repeat)}
    return {
        "plan": {"steps": len(plan.steps), "machines": len(plan.machines),
                 "bytes": len(plain), "signed_bytes": len(signed),
                 "envelope_bytes": len(signed) - len(plain)},
        "cloud": {k: round(v, 1) for k, v in cloud.items()},
        "gateway": {k: round(v, 1) for k, v in gateway.items()},
        "sign_cost_us": round(cloud["sign_us"] - cloud["encode_us"], 1),
        "verify_cost_us": round(gateway["verify_and_decode_us"] - gateway["decode_us"], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    summary = measure(args.repeat)
    plan, cloud, gateway = summary["plan"], summary["cloud"], summary["gateway"]
    print(f"plan: {plan['steps']} steps on {plan['machines']} machines, {plan['bytes']} bytes; "
          f"signed {plan['signed_bytes']} (+{plan['envelope_bytes']})")
    print(f"cloud:   encode {cloud['encode_us']} us, sign {cloud['sign_us']} us "
          f"(Ed25519 alone {cloud['ed25519_sign_us']} us): +{summary['sign_cost_us']} us")
    print(f"gateway: decode {gateway['decode_us']} us, verify and decode "
          f"{gateway['verify_and_decode_us']} us (Ed25519 alone "
          f"{gateway['ed25519_verify_us']} us): +{summary['verify_cost_us']} us")
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
