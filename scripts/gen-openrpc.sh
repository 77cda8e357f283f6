#!/usr/bin/env bash
# Regenerates schema/openrpc.json from schema/index.json and the schema files beside it
# (the generator is the test tests/it/schema.rs::openrpc_json_is_generated_from_the_schema_files,
# which fails on a stale openrpc.json unless UPDATE_SCHEMA is set).
set -euo pipefail
cd "$(dirname "$0")/.."
UPDATE_SCHEMA=1 cargo test --quiet --test it -- --exact schema::openrpc_json_is_generated_from_the_schema_files
