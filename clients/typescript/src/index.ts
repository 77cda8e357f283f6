// core-sidecar-client: spawns core-sidecar and speaks its JSON-RPC 2.0 over stdio, typed by the
// contract (src/generated.ts, generated from schema/openrpc.json).
//
// The wire (docs/protocol.md, "Wire rules"): one JSON value per line on stdin and stdout,
// params by name, answers in completion order (each request has its own id and promise).
// Lines without an id are notifications, emitted as events named after their method.

import { type ChildProcess, spawn } from "node:child_process";
import { EventEmitter } from "node:events";
import { existsSync } from "node:fs";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

import type { ErrorData, ErrorKind, MethodName, Methods, Notifications } from "./generated.js";

export * from "./generated.js";

/** The params type of method `M`. */
export type Params<M extends MethodName> = Methods[M]["params"];
/** The result type of method `M`. */
export type Result<M extends MethodName> = Methods[M]["result"];

/** Per-request options. */
export interface RequestOptions {
  /**
   * Aborting it sends `$/cancelRequest` for this request: the sidecar drops the call's work
   * (a gated call's backend request) and answers it `-32800`, so the promise rejects with a
   * {@link SidecarError} of kind `cancelled`. Already aborted: nothing is sent and the promise
   * rejects with the signal's reason.
   */
  signal?: AbortSignal;
}

/** `request(method)` may leave params out when the method needs none; options come last. */
export type ParamsArgs<M extends MethodName> = {} extends Params<M>
  ? [params?: Params<M>, options?: RequestOptions]
  : [params: Params<M>, options?: RequestOptions];

/** The JSON-RPC error codes of the transport itself: they carry no `data`, hence no `kind`. */
export const PROTOCOL_ERROR_CODES = {
  parse_error: -32700,
  invalid_request: -32600,
  method_not_found: -32601,
} as const;

/** The `error` member of a JSON-RPC response, as read from the wire. */
export interface WireError {
  code: number;
  message: string;
  data?: ErrorData;
}

/**
 * An error the sidecar answered. `kind` is `data.kind` (`auth_expired`, `auth_failed`,
 * `invalid_params`, ...), undefined for the transport's own errors (-32700, -32600, -32601).
 */
export class SidecarError extends Error {
  /** The JSON-RPC error code, e.g. -32001. */
  readonly code: number;
  /** `data.kind`: what went wrong, one kind per code. */
  readonly kind: ErrorKind | undefined;
  /** `data`: `{kind, retryable, status?, retryAfterMs?, reason?, field?}`. */
  readonly data: ErrorData | undefined;
  /** The method called, when the error answers a request of this client. */
  readonly method: string | undefined;

  constructor(error: WireError, method?: string) {
    super(`${method ? `${method}: ` : ""}${error.message} (${error.code})`);
    this.name = "SidecarError";
    this.code = error.code;
    this.data = error.data;
    this.kind = error.data?.kind;
    this.method = method;
  }

  /** Whether the same call may succeed if tried again later (`data.retryable`). */
  get retryable(): boolean {
    return this.data?.retryable === true;
  }
}

/**
 * The sidecar is not running: it could not be started, it exited (or was killed) before
 * answering, or it was closed before the request was sent.
 */
export class SidecarExitedError extends Error {
  /** The exit code, null when it never ran or was killed by a signal. */
  readonly exitCode: number | null;
  /** The signal that ended it, if any. */
  readonly signal: NodeJS.Signals | null;

  constructor(message: string, exitCode: number | null, signal: NodeJS.Signals | null, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "SidecarExitedError";
    this.exitCode = exitCode;
    this.signal = signal;
  }
}

/**
 * A line the client could not match to a request: not JSON, or a response with `"id": null`
 * (the sidecar's answer to a line it could not parse or a request it could not read) or with
 * an id this client never sent. Nothing pending is settled by it.
 */
export interface ProtocolErrorEvent {
  /** The line as read from stdout. */
  line: string;
  /** The parsed message, when the line was JSON. */
  message?: unknown;
  /** The error it carries, when it is an error response. */
  error?: SidecarError;
}

/** The events of a client: each notification by name, and the client's own. */
export type SidecarEvents = {
  [N in keyof Notifications]: [params: Notifications[N]];
} & {
  /** Every notification, by method name (including ones newer than this client's types). */
  notification: [method: string, params: unknown];
  /** A line no request was waiting for: see {@link ProtocolErrorEvent}. */
  protocol_error: [event: ProtocolErrorEvent];
  /**
   * The process ended (its stdout is closed and every pending request rejected), or could not
   * be started (code and signal null).
   */
  exit: [code: number | null, signal: NodeJS.Signals | null];
};

export type SidecarEventName = keyof SidecarEvents;

/** Where the binary comes from (see {@link resolveSidecarPath}). */
export type SidecarPathSource = "path" | "CORE_SIDECAR_BIN" | "target/release" | "target/debug" | "PATH";

export interface SpawnOptions {
  /** The binary. Default: see {@link resolveSidecarPath}. */
  path?: string;
  /**
   * Environment variables, merged over `process.env` (e.g. `CORE_SIDECAR_BACKEND_URL`); a
   * variable set to `undefined` is removed.
   */
  env?: Record<string, string | undefined>;
  /** Command-line arguments (each flag is also an environment variable). */
  args?: string[];
  /** Where the sidecar's logs (stderr) go. Default `inherit`. */
  stderr?: "inherit" | "ignore" | "pipe";
  /** Working directory of the process. Default: this process's. */
  cwd?: string;
}

const EXE = process.platform === "win32" ? ".exe" : "";

/** The repository this package sits in (clients/typescript), when it is there. */
function repoRoot(): string | undefined {
  try {
    if (!import.meta.url.startsWith("file:")) return undefined;
    // dist/index.js (or src/index.ts) -> clients/typescript -> the repository.
    const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
    return existsSync(path.join(root, "Cargo.toml")) && existsSync(path.join(root, "schema", "openrpc.json"))
      ? root
      : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The binary `spawnSidecar` runs: `explicit` when given, else `$CORE_SIDECAR_BIN`, else
 * `target/release/core-sidecar` then `target/debug/core-sidecar` of the repository this
 * package is in (when it is used from a checkout of it and that file exists), else
 * `core-sidecar` looked up on `PATH`.
 */
export function resolveSidecarPath(
  explicit?: string,
  env: Record<string, string | undefined> = process.env,
): { path: string; source: SidecarPathSource } {
  if (explicit) return { path: explicit, source: "path" };
  const fromEnv = env.CORE_SIDECAR_BIN;
  if (fromEnv) return { path: fromEnv, source: "CORE_SIDECAR_BIN" };
  const root = repoRoot();
  if (root) {
    for (const profile of ["release", "debug"] as const) {
      const candidate = path.join(root, "target", profile, `core-sidecar${EXE}`);
      if (existsSync(candidate)) return { path: candidate, source: `target/${profile}` };
    }
  }
  return { path: `core-sidecar${EXE}`, source: "PATH" };
}

interface Pending {
  method: string;
  resolve: (result: unknown) => void;
  reject: (error: Error) => void;
}

/** A running sidecar. Create it with {@link spawnSidecar}. */
export class SidecarClient {
  /** The child process (its stdin and stdout belong to the client). */
  readonly child: ChildProcess;
  /** The binary that was run, and why that one. */
  readonly binary: { path: string; source: SidecarPathSource };

  readonly #events = new EventEmitter();
  readonly #pending = new Map<number, Pending>();
  readonly #exited: Promise<number | null>;
  #nextId = 1;
  #closing = false;
  #dead: SidecarExitedError | undefined;

  constructor(child: ChildProcess, binary: { path: string; source: SidecarPathSource }) {
    if (!child.stdin || !child.stdout) throw new TypeError("the child needs piped stdin and stdout");
    this.child = child;
    this.binary = binary;
    this.#events.setMaxListeners(0);

    let settle!: (code: number | null) => void;
    let fail!: (error: Error) => void;
    this.#exited = new Promise<number | null>((resolve, reject) => {
      settle = resolve;
      fail = reject;
    });
    // Nobody may ever call close(): a failed start must not be an unhandled rejection.
    this.#exited.catch(() => {});

    child.on("error", (error: Error) => {
      // Spawning failed (no such binary, not executable): nothing will ever be answered.
      if (child.pid !== undefined || this.#dead) return; // a running child's: its exit follows
      const hint = binary.source === "PATH" ? "; set CORE_SIDECAR_BIN or pass { path }" : "";
      this.#die(
        new SidecarExitedError(
          `cannot start core-sidecar (${binary.path}, from ${binary.source}): ${error.message}${hint}`,
          null,
          null,
          error,
        ),
      );
      this.#events.emit("exit", null, null);
      fail(this.#dead!);
    });
    // 'close' comes after stdout has ended: every answer written before the exit was read.
    child.once("close", (code: number | null, signal: NodeJS.Signals | null) => {
      if (this.#dead) return;
      const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
      this.#die(new SidecarExitedError(`core-sidecar ${how}`, code, signal));
      this.#events.emit("exit", code, signal);
      settle(code);
    });
    // Writing to a sidecar that has exited fails (EPIPE) asynchronously: the exit handler
    // rejects what was pending.
    child.stdin.on("error", () => {});
    createInterface({ input: child.stdout, crlfDelay: Infinity }).on("line", (line) => this.#onLine(line));
  }

  /** The process id, undefined when it could not be started. */
  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Requests sent and not answered yet. */
  get pendingCount(): number {
    return this.#pending.size;
  }

  /**
   * Calls `method` with its named params; resolves with its result, rejects with a
   * {@link SidecarError} (the sidecar's answer) or a {@link SidecarExitedError} (no answer will
   * come: the process is gone).
   */
  request<M extends MethodName>(method: M, ...args: ParamsArgs<M>): Promise<Result<M>> {
    return this.requestUntyped(method, args[0], args[1]) as Promise<Result<M>>;
  }

  /**
   * Calls any method by name, untyped: a method newer than this client's types, or one the
   * contract does not list (the sidecar's test hooks).
   */
  requestUntyped(method: string, params?: unknown, options: RequestOptions = {}): Promise<unknown> {
    const id = this.#nextId++;
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(signal.reason);
    const answered = new Promise((resolve, reject) => {
      const message: Record<string, unknown> = { jsonrpc: "2.0", id, method };
      if (params !== undefined) message.params = params;
      let line: string;
      try {
        line = JSON.stringify(message);
      } catch (error) {
        reject(error as Error);
        return;
      }
      const refused = this.#refusal(method);
      if (refused) {
        reject(refused);
        return;
      }
      this.#pending.set(id, { method, resolve, reject });
      this.child.stdin!.write(`${line}\n`);
    });
    if (!signal) return answered;
    // While it is pending, an abort asks the sidecar to end it; its -32800 settles it.
    const cancel = () => {
      if (this.#pending.has(id) && !this.#dead) this.notify("$/cancelRequest", { id });
    };
    signal.addEventListener("abort", cancel, { once: true });
    const forget = () => signal.removeEventListener("abort", cancel);
    answered.then(forget, forget);
    return answered;
  }

  /** Sends a notification (no id: never answered, even on error). */
  notify(method: string, params?: unknown): void {
    const message: Record<string, unknown> = { jsonrpc: "2.0", method };
    if (params !== undefined) message.params = params;
    this.writeLine(JSON.stringify(message));
  }

  /**
   * Writes one raw line to the sidecar's stdin, as is (a newline is added). For diagnostics and
   * tests: its answer, if any, is a `protocol_error` event unless it carries an id this client
   * is waiting for.
   */
  writeLine(line: string): void {
    const refused = this.#refusal("a line");
    if (refused) throw refused;
    this.child.stdin!.write(`${line}\n`);
  }

  /** Listens to a notification (`auth_state_changed`, typed by the contract) or a client event. */
  on<E extends SidecarEventName>(event: E, listener: (...args: SidecarEvents[E]) => void): this {
    this.#events.on(event, listener as (...args: unknown[]) => void);
    return this;
  }

  /** As {@link on}, once. */
  once<E extends SidecarEventName>(event: E, listener: (...args: SidecarEvents[E]) => void): this {
    this.#events.once(event, listener as (...args: unknown[]) => void);
    return this;
  }

  /** Removes a listener added with {@link on} or {@link once}. */
  off<E extends SidecarEventName>(event: E, listener: (...args: SidecarEvents[E]) => void): this {
    this.#events.off(event, listener as (...args: unknown[]) => void);
    return this;
  }

  /**
   * Resolves with the params of the next notification `name` for which `accept` is true;
   * rejects after `timeoutMs` or when the process ends first.
   */
  next<N extends keyof Notifications>(
    name: N,
    { accept = () => true, timeoutMs = 10_000 }: { accept?: (params: Notifications[N]) => boolean; timeoutMs?: number } = {},
  ): Promise<Notifications[N]> {
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.off(name, onEvent as never);
        this.off("exit", onExit);
      };
      const onEvent = (params: Notifications[N]) => {
        if (!accept(params)) return;
        done();
        resolve(params);
      };
      const onExit = () => {
        done();
        reject(this.#dead ?? new SidecarExitedError("core-sidecar exited", null, null));
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no ${String(name)} notification within ${timeoutMs} ms`));
      }, timeoutMs);
      this.on(name, onEvent as never);
      this.on("exit", onExit);
    });
  }

  /**
   * Closes stdin: the sidecar answers everything already sent, then exits. Resolves with its
   * exit code (0 on a clean shutdown; null if it was killed by a signal); rejects when it
   * could not be started.
   */
  close(): Promise<number | null> {
    if (!this.#closing) {
      this.#closing = true;
      this.child.stdin!.end();
    }
    return this.#exited;
  }

  /** Sends a signal (default SIGTERM: the sidecar finishes what is in flight and exits 0). */
  kill(signal: NodeJS.Signals = "SIGTERM"): boolean {
    return this.child.kill(signal);
  }

  /** Resolves with the exit code once the process has ended (see {@link close}). */
  get exited(): Promise<number | null> {
    return this.#exited;
  }

  #refusal(what: string): Error | undefined {
    if (this.#dead) {
      return new SidecarExitedError(`${this.#dead.message}; ${what} was not sent`, this.#dead.exitCode, this.#dead.signal, this.#dead);
    }
    if (this.#closing) return new SidecarExitedError(`core-sidecar is closing; ${what} was not sent`, null, null);
    return undefined;
  }

  #die(error: SidecarExitedError): void {
    this.#dead = error;
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const { method, reject } of pending) {
      reject(new SidecarExitedError(`${error.message} before answering ${method}`, error.exitCode, error.signal, error.cause));
    }
  }

  #onLine(line: string): void {
    if (line.trim() === "") return;
    let message: unknown;
    try {
      message = JSON.parse(line);
    } catch {
      this.#events.emit("protocol_error", { line } satisfies ProtocolErrorEvent);
      return;
    }
    for (const item of Array.isArray(message) ? message : [message]) this.#onMessage(item, line);
  }

  #onMessage(message: unknown, line: string): void {
    const m = (message ?? {}) as Record<string, unknown>;
    if (typeof m.method === "string" && !("id" in m)) {
      this.#events.emit(m.method, m.params);
      this.#events.emit("notification", m.method, m.params);
      return;
    }
    const waiter = typeof m.id === "number" ? this.#pending.get(m.id) : undefined;
    const error = isWireError(m.error) ? m.error : undefined;
    if (!waiter) {
      // `"id": null` (a line the sidecar could not read) or an id never sent.
      const event: ProtocolErrorEvent = { line, message };
      if (error) event.error = new SidecarError(error);
      this.#events.emit("protocol_error", event);
      return;
    }
    this.#pending.delete(m.id as number);
    if (error) waiter.reject(new SidecarError(error, waiter.method));
    else if ("result" in m) waiter.resolve(m.result);
    else waiter.reject(new SidecarError({ code: -32603, message: "a response with neither result nor error" }, waiter.method));
  }
}

function isWireError(value: unknown): value is WireError {
  return (
    typeof value === "object" &&
    value !== null &&
    typeof (value as WireError).code === "number" &&
    typeof (value as WireError).message === "string"
  );
}

/**
 * Starts core-sidecar (the binary from {@link resolveSidecarPath}) and returns its client.
 * Listen to `auth_state_changed` right away: `INITIAL_SESSION` comes first, once.
 */
export function spawnSidecar(options: SpawnOptions = {}): SidecarClient {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries({ ...process.env, ...options.env })) {
    if (value !== undefined) env[name] = value;
  }
  const binary = resolveSidecarPath(options.path, env);
  const child = spawn(binary.path, options.args ?? [], {
    env,
    cwd: options.cwd,
    stdio: ["pipe", "pipe", options.stderr ?? "inherit"],
    windowsHide: true,
  });
  return new SidecarClient(child, binary);
}
