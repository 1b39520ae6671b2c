// Write batching on real loopback sockets: writes held until the end of the turn, one
// flush for all sockets, afterWrites callbacks only once the bytes are handed over.

import net, { type AddressInfo, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../../test/helpers.js';
import { afterWrites, hold, release } from './batch.js';

const closers: (() => void)[] = [];
afterEach(() => {
  for (const c of closers.splice(0)) c();
});

/** A connected pair: the client socket, and the bytes the server side has read. */
async function pair(): Promise<{ client: Socket; got: () => string }> {
  let got = '';
  const server = net.createServer((s) => s.on('data', (d) => (got += d.toString('latin1'))));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const client = net.connect((server.address() as AddressInfo).port, '127.0.0.1');
  await new Promise<void>((r) => client.once('connect', () => r()));
  closers.push(() => {
    client.destroy();
    server.close();
  });
  return { client, got: () => got };
}

describe('write batching', () => {
  it('holds the writes of a turn and hands them over together before afterWrites callbacks run', async () => {
    const a = await pair();
    const b = await pair();
    const seen: string[] = [];
    hold(a.client);
    a.client.write('one');
    hold(b.client);
    b.client.write('two');
    hold(a.client);
    a.client.write('three');
    expect(a.client.writableLength).toBe(8); // still held
    const done = new Promise<void>((resolve) =>
      afterWrites(() => {
        seen.push(`a ${a.client.writableLength} b ${b.client.writableLength} corked ${a.client.writableCorked + b.client.writableCorked}`);
        resolve();
      }),
    );
    expect(seen).toEqual([]); // not at once: writes are held
    await done;
    expect(seen).toEqual(['a 0 b 0 corked 0']);
    await waitFor(() => a.got() === 'onethree' && b.got() === 'two', { message: 'both servers got their bytes' });
  });

  it('runs an afterWrites callback at once when nothing is held', () => {
    let ran = false;
    afterWrites(() => (ran = true));
    expect(ran).toBe(true);
  });

  it('release() hands held bytes over at once (before a destroy that must not lose them)', async () => {
    const a = await pair();
    hold(a.client);
    a.client.write('last words');
    release(a.client);
    expect(a.client.writableLength).toBe(0);
    a.client.destroy();
    await waitFor(() => a.got() === 'last words', { message: 'the released bytes arrived' });
  });
});

