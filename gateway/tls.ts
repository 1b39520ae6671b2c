// TLS termination on the data-plane listener: the certificates of gateway.tls, chosen
// by SNI, swappable at run time.
//
// Each certificate's names come from its subjectAltName DNS entries (its subject CN
// when it has none). A client's server name picks the first certificate with the exact
// name, else the first whose wildcard (*.example.com, one label) covers it, else the
// first certificate: the default, also used by clients that send no server name.
//
// Reloading builds a whole new set first and swaps it in only when every file was read
// and every key matched its certificate; a bad new file is refused and logged, and the
// running set keeps serving. Open connections keep the context they were made with, so
// nothing is dropped: only new handshakes see the new certificates.

import { watch, readFileSync, type FSWatcher } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { basename, dirname } from 'node:path';
import { createSecureContext, type SecureContext, type SecureContextOptions } from 'node:tls';
import type { Logger } from 'pino';

export interface CertificateFiles {
  cert: string;
  key: string;
}

/** TLS 1.2 is the floor on every listener the gateway terminates. */
export const MIN_TLS_VERSION = 'TLSv1.2' as const;

interface Loaded {
  files: CertificateFiles;
  certPem: string;
  keyPem: string;
  names: string[];
  notAfter: string;
  context: SecureContext;
}

/** The names a certificate answers for: its DNS subjectAltNames, else its CN. */
export function certificateNames(x: X509Certificate): string[] {
  const names: string[] = [];
  for (const part of (x.subjectAltName ?? '').split(',')) {
    const p = part.trim();
    if (p.startsWith('DNS:')) names.push(p.slice(4).toLowerCase());
  }
  if (names.length === 0) {
    const cn = /(?:^|\n)CN=([^\n]+)/.exec(x.subject);
    if (cn !== null) names.push(cn[1].trim().toLowerCase());
  }
  return names;
}

/** Reads one certificate and its key; throws an Error naming the file on any problem. */
export function loadCertificate(files: CertificateFiles): Loaded {
  let certPem: string;
  let keyPem: string;
  try {
    certPem = readFileSync(files.cert, 'utf8');
  } catch (err) {
    throw new Error(`cannot read certificate ${files.cert}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  try {
    keyPem = readFileSync(files.key, 'utf8');
  } catch (err) {
    throw new Error(`cannot read key ${files.key}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  let x: X509Certificate;
  try {
    x = new X509Certificate(certPem);
  } catch {
    throw new Error(`${files.cert} holds no PEM certificate`);
  }
  let context: SecureContext;
  try {
    context = createSecureContext(contextOptions(certPem, keyPem));
  } catch (err) {
    // "key values mismatch", "bad decrypt", "no start line"…
    throw new Error(`${files.key} does not fit ${files.cert}: ${(err as Error).message.split('\n')[0]}`);
  }
  return { files, certPem, keyPem, names: certificateNames(x), notAfter: x.validTo, context };
}

function contextOptions(cert: string, key: string): SecureContextOptions {
  return { cert, key, minVersion: MIN_TLS_VERSION };
}

/** An immutable set of certificates with its SNI lookup tables. */
export class CertificateSet {
  private readonly exact = new Map<string, SecureContext>();
  private readonly wildcard = new Map<string, SecureContext>();

  constructor(readonly certs: readonly Loaded[]) {
    for (const c of certs) {
      for (const n of c.names) {
        if (n.startsWith('*.')) {
          if (!this.wildcard.has(n.slice(2))) this.wildcard.set(n.slice(2), c.context);
        } else if (!this.exact.has(n)) this.exact.set(n, c.context);
      }
    }
  }

  static load(files: readonly CertificateFiles[]): CertificateSet {
    return new CertificateSet(files.map(loadCertificate));
  }

  get default(): Loaded {
    return this.certs[0];
  }

  /** The context for a client's server name: exact, then wildcard, then the default. */
  contextFor(servername: string): SecureContext {
    const name = servername.toLowerCase();
    const hit = this.exact.get(name);
    if (hit !== undefined) return hit;
    const dot = name.indexOf('.');
    if (dot > 0) {
      const w = this.wildcard.get(name.slice(dot + 1));
      if (w !== undefined) return w;
    }
    return this.certs[0].context;
  }

  /** Same files with the same contents. */
  sameAs(other: CertificateSet): boolean {
    return (
      this.certs.length === other.certs.length &&
      this.certs.every((c, i) => {
        const o = other.certs[i];
        return c.files.cert === o.files.cert && c.files.key === o.files.key && c.certPem === o.certPem && c.keyPem === o.keyPem;
      })
    );
  }

  describe(): { cert: string; names: string[]; notAfter: string }[] {
    return this.certs.map((c) => ({ cert: c.files.cert, names: c.names, notAfter: c.notAfter }));
  }
}

/** What a listener needs to apply a new default certificate (tls.Server). */
interface ContextTarget {
  setSecureContext(options: SecureContextOptions): void;
}

/**
 * The certificates of one listener: the SNI callback, reload (on demand and when the
 * files change) and the file watchers.
 */
export class TlsCertificates {
  private set: CertificateSet;
  private files: CertificateFiles[];
  private target: ContextTarget | undefined;
  private watchers: FSWatcher[] = [];
  private debounce: NodeJS.Timeout | undefined;
  private closed = false;
  /** Reloads done and refused (for tests and logs). */
  reloads = 0;
  failures = 0;

  constructor(
    files: readonly CertificateFiles[],
    private readonly log: Logger,
    private readonly what = 'gateway.tls',
  ) {
    this.files = files.map((f) => ({ ...f }));
    this.set = CertificateSet.load(this.files);
  }

  /** Options for tls.createServer / http2.createSecureServer. */
  serverOptions(): SecureContextOptions & { SNICallback: (name: string, cb: (err: Error | null, ctx?: SecureContext) => void) => void } {
    const d = this.set.default;
    return { ...contextOptions(d.certPem, d.keyPem), SNICallback: this.sniCallback };
  }

  /** Called by Node for each handshake that carries a server name. */
  readonly sniCallback = (servername: string, cb: (err: Error | null, ctx?: SecureContext) => void): void => {
    cb(null, this.set.contextFor(servername));
  };

  /** The listener whose default context follows reloads. */
  attach(target: ContextTarget): void {
    this.target = target;
  }

  get current(): CertificateSet {
    return this.set;
  }

  /**
   * Loads the files again (or new ones) and swaps them in. Returns the problem when the
   * new set is refused (the running one stays), undefined otherwise.
   */
  reload(files: readonly CertificateFiles[] = this.files, reason = 'reload'): string | undefined {
    let next: CertificateSet;
    try {
      next = CertificateSet.load(files);
    } catch (err) {
      this.failures++;
      const problem = (err as Error).message;
      this.log.error({ reason, problem }, `${this.what}: new certificates refused; the running ones keep serving`);
      return problem;
    }
    const changedFiles = files.length !== this.files.length || files.some((f, i) => f.cert !== this.files[i].cert || f.key !== this.files[i].key);
    this.files = files.map((f) => ({ ...f }));
    if (changedFiles) this.rewatch();
    if (next.sameAs(this.set)) return undefined;
    this.set = next;
    const d = next.default;
    this.target?.setSecureContext(contextOptions(d.certPem, d.keyPem));
    this.reloads++;
    this.log.info({ reason, certificates: next.describe() }, `${this.what}: certificates reloaded`);
    return undefined;
  }

  /**
   * Watches the directories of the files (a renewal tool usually replaces a file by
   * renaming a new one over it, which a watch on the file itself would miss), and
   * reloads 250 ms after the last change.
   */
  watch(): void {
    if (this.closed) return;
    this.watching = true;
    this.rewatch();
  }

  private rewatch(): void {
    for (const w of this.watchers) w.close();
    this.watchers = [];
    if (this.closed || !this.watching) return;
    const dirs = new Map<string, Set<string>>();
    for (const f of this.files) {
      for (const p of [f.cert, f.key]) {
        const d = dirname(p);
        if (!dirs.has(d)) dirs.set(d, new Set());
        dirs.get(d)!.add(basename(p));
      }
    }
    for (const [dir, names] of dirs) {
      try {
        const w = watch(dir, { persistent: false }, (_event, name) => {
          // A null name (some platforms), one of our files, or a Kubernetes secret's
          // ..data symlink swap.
          if (name !== null && !names.has(String(name)) && !String(name).startsWith('..')) return;
          this.schedule();
        });
        w.on('error', (err) => this.log.warn({ dir, err: err.message }, `${this.what}: cannot watch the certificate directory`));
        this.watchers.push(w);
      } catch (err) {
        this.log.warn({ dir, err: (err as Error).message }, `${this.what}: cannot watch the certificate directory; reload with SIGHUP`);
      }
    }
  }

  private watching = false;

  private schedule(): void {
    if (this.debounce !== undefined) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      if (!this.closed) this.reload(this.files, 'file change');
    }, 250);
    this.debounce.unref();
  }

  close(): void {
    this.closed = true;
    if (this.debounce !== undefined) clearTimeout(this.debounce);
    for (const w of this.watchers) w.close();
    this.watchers = [];
  }
}
