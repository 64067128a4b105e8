"""Test-only Sigstore pieces: a local Fulcio, Rekor and OIDC issuer, and sample run facts.

The keyless tests run the real sigstore-python Signer and Verifier against these, on
loopback; nothing here ships in the operator.
"""

from tests.sigstore_stack.facts import sample_facts
from tests.sigstore_stack.stack import SigstoreStack, start_stack

__all__ = ["SigstoreStack", "sample_facts", "start_stack"]
