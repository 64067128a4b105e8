// Verifies a key-mode Sigstore bundle with sigstore-js (@sigstore/verify), a verifier
// this project did not write. Usage:
//   NODE_PATH=<prefix>/node_modules node sigstore_js_verify.js BUNDLE PUBKEY_PEM PREDICATE_TYPE
// Exit 0 and "OK" on success; exit 1 and the reason on any failure.
'use strict';
const fs = require('fs');
const crypto = require('crypto');
const { bundleFromJSON } = require('@sigstore/bundle');
const { Verifier, toSignedEntity, toTrustMaterial } = require('@sigstore/verify');

function main([bundlePath, keyPath, predicateType]) {
  const bundle = bundleFromJSON(JSON.parse(fs.readFileSync(bundlePath, 'utf8')));
  const publicKey = crypto.createPublicKey(fs.readFileSync(keyPath));
  const der = publicKey.export({ type: 'spki', format: 'der' });
  const hint = crypto.createHash('sha256').update(der).digest('base64');
  const emptyRoot = {
    mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
    tlogs: [], certificateAuthorities: [], ctlogs: [], timestampAuthorities: [],
  };
  // Only our key, under its hint; any other hint is unknown.
  const trust = toTrustMaterial(emptyRoot, {
    [hint]: { rawBytes: der, keyDetails: 'PKIX_ECDSA_P256_SHA_256', validFor: undefined },
  });
  // Air-gapped key mode: no transparency log, no timestamps, no certificate.
  const verifier = new Verifier(trust, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 });
  verifier.verify(toSignedEntity(bundle));
  const envelope = bundle.content.dsseEnvelope;
  if (envelope.payloadType !== 'application/vnd.in-toto+json') {
    throw new Error(`unexpected payloadType ${envelope.payloadType}`);
  }
  const statement = JSON.parse(Buffer.from(envelope.payload).toString('utf8'));
  if (statement.predicateType !== predicateType) {
    throw new Error(`predicateType is ${statement.predicateType}, expected ${predicateType}`);
  }
  console.log('OK');
}

try {
  main(process.argv.slice(2));
} catch (error) {
  console.error(`verification failed: ${error.code || ''} ${error.message}`);
  process.exit(1);
}
