#!/usr/bin/env bash
# Regenerates schema/openrpc.json from the code: the method table in src/router.rs and the
# Rust types of each method's params and result (src/schema.rs generates the document). The
# writer is the test tests/it/schema.rs::openrpc_json_is_generated_from_the_code, which fails
# on a stale openrpc.json unless UPDATE_SCHEMA is set.
#
# Then the clients' types, generated from that document: clients/rust/src/generated.rs (the
# test clients/rust/tests/codegen.rs, with UPDATE_CLIENT set) and
# clients/typescript/src/generated.ts (its scripts/gen-types.mjs; needs node).
set -euo pipefail
cd "$(dirname "$0")/.."
UPDATE_SCHEMA=1 cargo test --quiet --test it -- --exact schema::openrpc_json_is_generated_from_the_code
UPDATE_CLIENT=1 cargo test --quiet -p core-sidecar-client --test codegen
node clients/typescript/scripts/gen-types.mjs
