// Throwaway certificates for the TLS suites, made with the openssl CLI (installed by
// scripts/ensure-test-deps.sh): one test CA and leaf certificates it signs.

import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

export interface TestCa {
  dir: string;
  /** PEM of the CA certificate (what clients trust). */
  ca: string;
  /**
   * Issues a leaf certificate into dir/<file>.crt and dir/<file>.key.
   * @param cn subject CN
   * @param dnsNames subjectAltName DNS entries (none: a CN-only certificate)
   */
  issue(file: string, cn: string, dnsNames: string[]): { cert: string; key: string; fingerprint: string };
}

let serial = 1000;

export function makeCa(): TestCa {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-tls-'));
  openssl(['req', '-x509', ...EC, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=Switchyard Test CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  return {
    dir,
    ca: readFileSync(join(dir, 'ca.crt'), 'utf8'),
    issue(file, cn, dnsNames) {
      const ext = ['basicConstraints=CA:FALSE', 'keyUsage=digitalSignature', 'extendedKeyUsage=serverAuth'];
      if (dnsNames.length) ext.push(`subjectAltName=${dnsNames.map((n) => `DNS:${n}`).join(',')}`);
      writeFileSync(join(dir, `${file}.ext`), ext.join('\n') + '\n');
      openssl(['req', ...EC, '-keyout', `${file}.key`, '-out', `${file}.csr`, '-subj', `/CN=${cn}`], dir);
      openssl(['x509', '-req', '-in', `${file}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-set_serial', String(serial++), '-out', `${file}.crt`, '-days', '2', '-extfile', `${file}.ext`], dir);
      const cert = join(dir, `${file}.crt`);
      return { cert, key: join(dir, `${file}.key`), fingerprint: new X509Certificate(readFileSync(cert)).fingerprint256 };
    },
  };
}
