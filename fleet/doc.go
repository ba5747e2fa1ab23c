// Package fleet is the desired state of many gateways, kept on the cloud MQTT broker they
// already use (SPEC §10, issue 16): deployment documents, their ed25519 signatures, the
// topics they are retained on, how a gateway layers the documents that target it, and the
// reported document each gateway publishes back. It knows nothing of the gateway: the
// gateway applies what Merge returns.
//
// A document targets a group ("group:lab") or one gateway ("gateway:pi-17") and carries a
// revision, a priority and the whole set of functions of that layer. It is signed as it
// is written: the signature covers the document's exact bytes (a Signed envelope), so
// nothing is canonicalised and a verifier reads only bytes that verified.
//
// Merge rule: a gateway's layers are its groups' documents, lowest priority first (equal
// priorities: in the order of fleet.groups, the later one higher), and its own
// document on top of them all. A function named in a higher layer replaces the whole
// function of a lower layer: no field is merged. A function in no layer is not run
// from the fleet.
//
// Revisions are per target and only go up: a gateway applies a document whose revision
// is higher than the last one it applied for that target, ignores (and reports) an older
// one or another document with the same revision, and ignores silently the very
// document it already applied (a retained message delivered again on reconnection).
package fleet
