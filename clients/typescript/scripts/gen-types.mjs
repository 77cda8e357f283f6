#!/usr/bin/env node
// Generates src/generated.ts, the client's types, from the contract: ../../schema/openrpc.json.
//
//   node scripts/gen-types.mjs           writes src/generated.ts
//   node scripts/gen-types.mjs --check   exits 1 when src/generated.ts is stale
//
// A small JSON-Schema-to-TypeScript converter for the subset the OpenRPC document uses, with no
// dependency. Everything is driven by the document: a method added to it (with `x-paramsSchema`,
// or only `params` entries) gets its entry in `Methods` and `METHODS` on the next run, a
// notification in `x-notifications` gets its entry in `Notifications`, an error in
// `components.errors` its kind in `ErrorKind`.
//
// What is converted: `$ref` to `#/components/schemas/*` (a named type), `type` (one or a list),
// `const`, `enum`, `properties`/`required`, `additionalProperties` (false: closed; true, absent
// or a schema: an index signature), `items`, `oneOf`/`anyOf` (a union), `allOf` (an
// intersection; one member alone is that member), an object's `anyOf` of `{required: [...]}`
// alternatives (a union of the object with each set required; a `not: {required: [a, b]}`
// beside it makes the other key `?: never`), and `description` (JSDoc). What only constrains
// values is left to the sidecar, which checks every param: `pattern`, `minLength`, `maximum`,
// `format`, `if`/`then`/`else`, other `not`s, `default`.

import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const SCHEMA_PATH = path.resolve(here, '..', '..', '..', 'schema', 'openrpc.json');
export const OUTPUT_PATH = path.resolve(here, '..', 'src', 'generated.ts');

const SCHEMA_REF = '#/components/schemas/';
const ERROR_REF = '#/components/errors/';

/** `auth_sign_in_with_password` -> `AuthSignInWithPassword`, `rpc.discover` -> `RpcDiscover`. */
export function pascal(name) {
  const out = String(name)
    .split(/[^A-Za-z0-9]+/)
    .filter(Boolean)
    .map((part) => part[0].toUpperCase() + part.slice(1))
    .join('');
  return /^[A-Za-z_$]/.test(out) ? out : `T${out}`;
}

/** Globals a declaration must not shadow for the code that imports it (`Error`, ...). */
const GLOBALS = new Set(
  'Array ArrayBuffer BigInt Boolean DataView Date Error EvalError Function Iterator JSON Map Math Number Object Partial Pick Promise Proxy RangeError Readonly Record ReferenceError Reflect RegExp Required Set String Symbol SyntaxError TypeError URIError URL WeakMap WeakRef WeakSet'.split(' '),
);

/** A component schema's type name: `Error` becomes `ErrorObject` (as JSON-RPC calls it). */
export function typeName(name) {
  const out = pascal(name);
  return GLOBALS.has(out) ? `${out}Object` : out;
}

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;
const key = (name) => (IDENTIFIER.test(name) ? name : JSON.stringify(name));
const literal = (value) => JSON.stringify(value);

/** A JSDoc block (or nothing) at `indent`. */
function jsdoc(text, indent) {
  if (typeof text !== 'string' || text.trim() === '') return '';
  const lines = text.replace(/\*\//g, '*\\/').trim().split('\n');
  if (lines.length === 1) return `${indent}/** ${lines[0]} */\n`;
  return `${indent}/**\n${lines.map((l) => `${indent} *${l ? ` ${l}` : ''}`).join('\n')}\n${indent} */\n`;
}

/** Keywords that say what type a value has (the rest only constrain it). */
const TYPE_KEYWORDS = ['$ref', 'const', 'enum', 'type', 'properties', 'items', 'additionalProperties'];

function bearsType(schema) {
  if (schema === false) return true;
  if (schema === null || typeof schema !== 'object') return false;
  if (TYPE_KEYWORDS.some((k) => k in schema)) return true;
  for (const k of ['oneOf', 'anyOf', 'allOf']) {
    if (Array.isArray(schema[k]) && schema[k].some(bearsType)) return true;
  }
  return false;
}

/** `anyOf: [{required: [...]}, ...]`: alternatives of which keys are required. */
function requiredAlternatives(schema) {
  const alternatives = schema.anyOf ?? schema.oneOf;
  if (!Array.isArray(alternatives) || alternatives.length === 0) return null;
  const only = alternatives.every(
    (a) =>
      a && typeof a === 'object' && Array.isArray(a.required) && Object.keys(a).every((k) => k === 'required'),
  );
  return only ? alternatives.map((a) => a.required) : null;
}

/** `t` in parentheses when it has a top-level `|` or `&` (outside braces, brackets, quotes). */
function wrap(t) {
  let depth = 0;
  let quote = null;
  for (let i = 0; i < t.length; i++) {
    const ch = t[i];
    if (quote) {
      if (ch === '\\') i++;
      else if (ch === quote) quote = null;
    } else if (ch === '"' || ch === "'") quote = ch;
    else if ('{[(<'.includes(ch)) depth++;
    else if ('}])>'.includes(ch)) depth--;
    else if (depth === 0 && (ch === '|' || ch === '&')) return `(${t})`;
  }
  return t;
}

class Converter {
  constructor(doc) {
    this.doc = doc;
    this.schemas = doc.components?.schemas ?? {};
    this.names = new Map(Object.keys(this.schemas).map((name) => [name, typeName(name)]));
    this.input = false;
  }

  ref(ref) {
    if (!ref.startsWith(SCHEMA_REF)) throw new Error(`unsupported $ref ${ref}`);
    const name = ref.slice(SCHEMA_REF.length);
    if (!this.names.has(name)) throw new Error(`$ref to a missing schema: ${ref}`);
    return this.names.get(name);
  }

  /** The TypeScript type of `schema`, laid out for `indent`. */
  type(schema, indent = '') {
    if (schema === true || schema === undefined || schema === null) return 'unknown';
    if (schema === false) return 'never';
    if (typeof schema !== 'object') throw new Error(`not a schema: ${JSON.stringify(schema)}`);
    if (schema.$ref) return this.ref(schema.$ref);
    if ('const' in schema) return literal(schema.const);
    if (Array.isArray(schema.enum)) return schema.enum.map(literal).join(' | ') || 'never';

    // The type is the intersection of what `type`/`properties`, `allOf` and `oneOf`/`anyOf` say.
    const parts = [];
    const own = this.ownType(schema, indent);
    if (own !== null) parts.push(own);
    if (Array.isArray(schema.allOf)) {
      for (const member of schema.allOf.filter(bearsType)) parts.push(this.type(member, indent));
    }
    for (const k of ['oneOf', 'anyOf']) {
      const members = schema[k];
      if (!Array.isArray(members) || requiredAlternatives(schema)) continue;
      // A union only when every alternative says a type (else it only constrains values).
      if (members.length > 0 && members.every(bearsType)) {
        parts.push(members.map((m) => wrap(this.type(m, indent))).join(' | '));
      }
    }
    if (parts.length === 0) return 'unknown';
    return parts.length === 1 ? parts[0] : parts.map(wrap).join(' & ');
  }

  /** The type from `type`/`properties`/`items`, or null when the schema names none. */
  ownType(schema, indent) {
    let types = schema.type === undefined ? [] : [].concat(schema.type);
    if (types.length === 0) {
      if ('properties' in schema || 'additionalProperties' in schema || requiredAlternatives(schema)) {
        types = ['object'];
      } else if ('items' in schema) types = ['array'];
      else return null;
    }
    const out = types.map((t) => {
      switch (t) {
        case 'string':
          return 'string';
        case 'integer':
        case 'number':
          return 'number';
        case 'boolean':
          return 'boolean';
        case 'null':
          return 'null';
        case 'array': {
          const item = Array.isArray(schema.items) ? 'unknown' : this.type(schema.items, indent);
          return /^[A-Za-z0-9_$]+$/.test(item) ? `${item}[]` : `Array<${item}>`;
        }
        case 'object':
          return this.object(schema, indent);
        default:
          throw new Error(`unsupported type ${t}`);
      }
    });
    return out.length === 1 ? out[0] : out.map(wrap).join(' | ');
  }

  object(schema, indent) {
    const properties = schema.properties ?? {};
    const required = new Set(schema.required ?? []);
    // A required key the properties do not describe is still there: `unknown`.
    const names = [...new Set([...Object.keys(properties), ...required])];
    // Open objects: `unknown` values to read; in params, `any`, so that a value typed by an
    // interface (a supabase-js `Session`, its `User`) is accepted as is.
    const open = this.input ? 'any' : 'unknown';
    let index = null;
    const extra = schema.additionalProperties;
    if (extra === undefined || extra === true) index = open;
    else if (extra !== false) index = names.length ? open : this.type(extra, `${indent}  `);

    if (names.length === 0 && !requiredAlternatives(schema)) {
      return index === null ? 'Record<string, never>' : `{ [key: string]: ${index} }`;
    }
    const body = (requiredHere, never) => {
      const inner = `${indent}  `;
      let text = '{\n';
      for (const name of names) {
        const property = properties[name];
        text += jsdoc(property?.description, inner);
        if (never.has(name)) text += `${inner}${key(name)}?: never;\n`;
        else {
          const optional = requiredHere.has(name) ? '' : '?';
          text += `${inner}${key(name)}${optional}: ${this.type(property, inner)};\n`;
        }
      }
      if (index !== null) text += `${inner}[key: string]: ${index};\n`;
      return `${text}${indent}}`;
    };
    const alternatives = requiredAlternatives(schema);
    if (!alternatives) return body(required, new Set());
    const exclusive = Array.isArray(schema.not?.required) ? schema.not.required : [];
    return alternatives
      .map((keys) => {
        const here = new Set([...required, ...keys]);
        // `not: {required: [a, b]}`: once all but one of them are required, the last is absent.
        const missing = exclusive.filter((k) => !here.has(k));
        return body(here, new Set(missing.length === 1 ? missing : []));
      })
      .join(' | ');
  }

  /**
   * `export interface` for a plain object, else `export type`. `input`: the type of params
   * (open objects take `any` values). The descriptions of `oneOf` constants are listed.
   */
  declaration(name, schema, description, { input = false } = {}) {
    let about = description ?? schema?.description ?? '';
    const constants = (schema?.oneOf ?? []).filter((m) => m && 'const' in m && m.description);
    if (constants.length) {
      about += `\n\n${constants.map((m) => `- \`${JSON.stringify(m.const)}\`: ${m.description}`).join('\n')}`;
    }
    const text = jsdoc(about, '');
    this.input = input;
    const type = this.type(schema, '');
    this.input = false;
    if (/^\{\n[\s\S]*\n\}$/.test(type) && !type.includes('\n} |') && !type.includes('\n} &')) {
      return `${text}export interface ${name} ${type}\n`;
    }
    return `${text}export type ${name} = ${type};\n`;
  }
}

/** A method's (or notification's) params as one schema: `x-paramsSchema`, else its `params`. */
function paramsSchema(method) {
  if (method['x-paramsSchema']) return method['x-paramsSchema'];
  const params = Array.isArray(method.params) ? method.params : [];
  if (method.paramStructure === 'by-position') {
    throw new Error(`${method.name}: by-position params are not supported (the protocol is by name)`);
  }
  const properties = {};
  for (const p of params) properties[p.name] = { ...(p.schema ?? {}), description: p.description ?? p.schema?.description };
  return {
    type: 'object',
    properties,
    required: params.filter((p) => p.required).map((p) => p.name),
    additionalProperties: false,
  };
}

function resolveError(doc, entry) {
  if (entry?.$ref) {
    if (!entry.$ref.startsWith(ERROR_REF)) throw new Error(`unsupported error $ref ${entry.$ref}`);
    const found = doc.components?.errors?.[entry.$ref.slice(ERROR_REF.length)];
    if (!found) throw new Error(`$ref to a missing error: ${entry.$ref}`);
    return found;
  }
  return entry;
}

/** The text of src/generated.ts for an OpenRPC document. */
export function generate(contract) {
  const c = new Converter(contract);
  const taken = new Set(c.names.values());
  const unique = (name) => {
    let out = name;
    while (taken.has(out)) out = `${out}_`;
    taken.add(out);
    return out;
  };
  // Each block is one declaration (or comment); blocks are separated by a blank line.
  const blocks = [
    `// Generated by scripts/gen-types.mjs from schema/openrpc.json (${contract.info?.title} ${contract.info?.version}, OpenRPC ${contract.openrpc}).\n` +
      '// Do not edit: change the contract, then run `npm run gen` in clients/typescript.',
  ];
  const add = (text) => blocks.push(text.replace(/\n+$/, ''));
  const member = (description, line) => `${jsdoc(description, '  ')}${line}`;

  add('// ---- Schemas (components.schemas) ----');
  for (const [name, schema] of Object.entries(c.schemas)) add(c.declaration(c.names.get(name), schema));

  add('// ---- Methods ----');
  const methods = [];
  for (const method of contract.methods ?? []) {
    const base = pascal(method.name);
    const params = unique(`${base}Params`);
    add(c.declaration(params, paramsSchema(method), `Params of \`${method.name}\`.`, { input: true }));
    let result;
    const resultSchema = method.result?.schema;
    if (resultSchema?.$ref) result = c.ref(resultSchema.$ref);
    else {
      result = unique(`${base}Result`);
      add(c.declaration(result, resultSchema ?? true, `Result of \`${method.name}\`.`));
    }
    const tags = (method.tags ?? []).map((t) => (typeof t === 'string' ? t : t?.name)).filter(Boolean);
    const errors = [];
    for (const e of method.errors ?? []) {
      const kind = resolveError(contract, e)?.data?.kind;
      if (typeof kind === 'string' && !errors.includes(kind)) errors.push(kind);
    }
    methods.push({ method, params, result, tags, errors });
  }
  add(
    [
      '/** Every method of the contract: its params and its result, by name. */',
      'export interface Methods {',
      ...methods.map(({ method, params, result }) =>
        member(
          [method.summary, method.description].filter(Boolean).join('\n\n'),
          `  ${key(method.name)}: { params: ${params}; result: ${result} };`,
        ),
      ),
      '}',
    ].join('\n'),
  );
  add('/** A method name of the contract. */\nexport type MethodName = keyof Methods;');
  const allTags = [...new Set(methods.flatMap((m) => m.tags))];
  add(
    `/** A method's tag: ${allTags.map((t) => `\`${t}\``).join(', ') || 'none'}. */\n` +
      `export type MethodTag = ${allTags.map(literal).join(' | ') || 'never'};`,
  );
  add(
    [
      "/** Each method's tags and the kinds of error it may answer (besides the protocol errors). */",
      'export const METHODS = {',
      ...methods.map(
        ({ method, tags, errors }) =>
          `  ${key(method.name)}: { tags: [${tags.map(literal).join(', ')}], errors: [${errors.map(literal).join(', ')}] },`,
      ),
      '} as const satisfies {',
      '  readonly [M in MethodName]: { readonly tags: readonly MethodTag[]; readonly errors: readonly ErrorKind[] };',
      '};',
    ].join('\n'),
  );
  add(
    '/** The kinds of error method `M` may answer. */\n' +
      'export type MethodErrorKind<M extends MethodName> = (typeof METHODS)[M]["errors"][number];',
  );

  add('// ---- Notifications (x-notifications) ----');
  const notifications = [];
  for (const n of contract['x-notifications'] ?? []) {
    const schema = paramsSchema(n);
    let type;
    if (schema.$ref) type = c.ref(schema.$ref);
    else {
      type = unique(`${pascal(n.name)}Params`);
      add(c.declaration(type, schema, `Params of the \`${n.name}\` notification.`));
    }
    notifications.push({ n, type });
  }
  add(
    [
      '/** Every notification the sidecar sends: its params, by name. */',
      'export interface Notifications {',
      ...notifications.map(({ n, type }) => member(n.summary, `  ${key(n.name)}: ${type};`)),
      '}',
    ].join('\n'),
  );
  add('/** A notification name of the contract. */\nexport type NotificationName = keyof Notifications;');

  add('// ---- Errors (components.errors) ----');
  const catalog = Object.entries(contract.components?.errors ?? {}).filter(
    ([, e]) => typeof e?.data?.kind === 'string' && Number.isInteger(e.code),
  );
  add(
    '/** `data.kind` of an error a method answers: one kind per code. */\n' +
      `export type ErrorKind = ${catalog.map(([, e]) => literal(e.data.kind)).join(' | ') || 'never'};`,
  );
  add(
    [
      '/** The code of each error kind. */',
      'export const ERROR_CODES = {',
      ...catalog.map(([, e]) => member(e.message, `  ${key(e.data.kind)}: ${e.code},`)),
      '} as const satisfies { readonly [K in ErrorKind]: number };',
    ].join('\n'),
  );
  return `${blocks.join('\n\n')}\n`;
}

export function readContract(file = SCHEMA_PATH) {
  return JSON.parse(readFileSync(file, 'utf8'));
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const text = generate(readContract());
  if (process.argv.includes('--check')) {
    let current = '';
    try {
      current = readFileSync(OUTPUT_PATH, 'utf8');
    } catch {}
    if (current !== text) {
      console.error(`${path.relative(process.cwd(), OUTPUT_PATH)} is stale: run \`npm run gen\` in clients/typescript`);
      process.exit(1);
    }
  } else {
    writeFileSync(OUTPUT_PATH, text);
    console.error(`wrote ${path.relative(process.cwd(), OUTPUT_PATH)}`);
  }
}
